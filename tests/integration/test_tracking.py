"""A tracked training run leaves a complete MLflow record, and the logged model runs at any batch size."""

from pathlib import Path

import numpy as np
import pytest

from facegate.train.config import load_train_config
from facegate.train.run import run_training

pytestmark = pytest.mark.integration

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml"


def test_mlflow_run_is_complete(tmp_path, monkeypatch):
    import mlflow
    import torch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    cfg = load_train_config(
        TINY,
        [
            "epochs=1",
            "model.width=0.0625",
            "model.embedding_size=16",
            "val.synthetic_pairs=100",
            f"output={tmp_path / 'run'}",
            "log_every_steps=2",
        ],
    )
    result, run_id = run_training(cfg, home=home, progress=False)
    assert run_id
    assert (home / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.params["optim.lr"] == "0.1"
    assert run.data.params["model.backbone"] == "iresnet18"
    assert len(run.data.tags["dataset_hash"]) == 64
    assert run.data.tags["git_commit"]
    losses = client.get_metric_history(run_id, "train/loss")
    assert len(losses) == result.steps // 2
    assert [m.step for m in losses] == list(range(2, result.steps + 1, 2))
    assert client.get_metric_history(run_id, "val/accuracy")
    arts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "bundle", "validation"} <= arts
    val = {a.path for a in client.list_artifacts(run_id, "validation")}
    assert "validation/roc.png" in val
    model_uri = f"runs:/{run_id}/model"
    reqs = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text()
    # An installable release (plain indexes do not serve 2.13.0+cpu); the exact build is in the model's metadata.
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs and "+cpu" not in reqs
    assert mlflow.models.get_model_info(model_uri).metadata["torch_build"] == torch.__version__
    model = mlflow.pytorch.load_model(model_uri)
    model.eval()
    with torch.no_grad():
        for n in (1, 3, 5):
            assert model(torch.zeros(n, 3, 112, 112)).shape == (n, 16)
    assert np.isfinite(client.get_run(run_id).data.metrics["val/accuracy"])
