"""`facegate tune` with 4 trials on the tiny config finishes on 2 cores; MLflow shows the nested runs."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from facegate.cli import app

pytestmark = pytest.mark.integration

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml"


def test_tune_four_trials_nested_in_mlflow(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "home"))
    out = CliRunner().invoke(
        app,
        [
            "-q",
            "tune",
            str(TINY),
            "epochs=2",
            "val.synthetic_pairs=200",
            "--samples",
            "4",
            "--out",
            str(tmp_path / "tune"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert out.stdout.count("trial ") == 4
    best = yaml.safe_load((tmp_path / "tune" / "best_config.yaml").read_text())
    assert best["epochs"] == 2
    assert best["model"]["embedding_size"] in (32, 64, 128)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("facegate").experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "tune"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 4
    assert all("val/accuracy" in c.data.metrics for c in children)
    assert parents[0].data.metrics["best_accuracy"] == pytest.approx(
        max(c.data.metrics["val/accuracy"] for c in children), abs=1e-6
    )
