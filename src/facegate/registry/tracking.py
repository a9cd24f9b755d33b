"""MLflow tracking of training runs.

The embedded default is a SQLite store under ``FACEGATE_HOME`` (``<home>/mlflow.db``, artifacts in
``<home>/mlartifacts``); ``MLFLOW_TRACKING_URI`` points it at a server instead. Every run logs its parameters (the
flattened config), the resolved config file, the dataset's manifest hash, the provenance tags
(:mod:`facegate.registry.provenance`: facegate's version and commit, image digest, caller's commit), metrics per
step and per validation, the ROC and score plots of the final validation, the facegate model bundle and an MLflow
PyTorch model whose pip requirements name an installable torch release (``torch==2.13.0``, never a local build tag
such as ``+cpu`` that plain package indexes do not serve); the exact build that trained it is kept in the model's
metadata.

Every artifact location stays under the configured store: the embedded store is created with ``<home>/mlartifacts``
as its default root, so even MLflow's own ``Default`` experiment does not point at the directory a command ran from
(an existing store whose ``Default`` does is repaired).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facegate.registry.provenance import provenance_tags
from facegate.train.config import TrainConfig
from facegate.utils import flatten_dict

__all__ = [
    "MlflowCallback",
    "dataset_hash",
    "ensure_experiment",
    "git_commit",
    "installable_requirement",
    "log_trained_model",
    "prepare_store",
    "tracked_run",
    "tracking_uri",
]

TELEMETRY_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def tracking_uri(home: str | Path = ".facegate") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store under ``home``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path(home).resolve() / "mlflow.db"
    return f"sqlite:///{db}"


def git_commit() -> str:
    """The commit of facegate itself (see :mod:`facegate.registry.provenance`), never the current directory's."""
    from facegate.registry.provenance import facegate_commit

    return facegate_commit()


def dataset_hash(cfg: TrainConfig) -> str:
    """The training data's content version.

    The manifest hash of a folder, the index of a RecordIO set, or the generator parameters of synthetic data.
    """
    d = cfg.data
    if d.kind == "synthetic":
        key = f"synthetic:{d.synthetic_identities}:{d.synthetic_per_identity}:{cfg.seed}"
        return hashlib.sha256(key.encode()).hexdigest()
    if d.kind == "folder":
        from facegate.data.storage import build_manifest

        return str(build_manifest(str(d.path))["version"])
    h = hashlib.sha256()
    root = Path(str(d.path))
    for name in ("train.idx", "property"):
        p = root / name
        if p.is_file():
            h.update(p.read_bytes())
    h.update(str((root / "train.rec").stat().st_size).encode())
    return h.hexdigest()


class MlflowCallback:
    """Trainer callback logging step and validation metrics to the active MLflow run."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """Log training metrics."""
        import mlflow

        mlflow.log_metrics({f"train/{k}": v for k, v in metrics.items() if k != "step"}, step=step)

    def on_validation(self, step: int, metrics: dict[str, Any]) -> None:
        """Log validation metrics (numbers only; TAR@FAR flattened)."""
        import mlflow

        flat = {
            f"val/{k}": float(v) for k, v in flatten_dict(metrics).items() if isinstance(v, int | float) and k != "step"
        }
        mlflow.log_metrics(flat, step=step)


def installable_requirement(package: str, version: str) -> str:
    """A pip requirement a plain package index can satisfy: ``torch==2.13.0`` for version ``2.13.0+cpu``."""
    return f"{package}=={version.split('+', 1)[0]}"


def prepare_store(home: str | Path = ".facegate") -> None:
    """Create the embedded SQLite store with its artifact root under ``home``, and repair a ``Default`` that is not.

    MLflow creates the ``Default`` experiment with the artifact root it is given, which is the current directory
    unless a store is created explicitly. A server (``MLFLOW_TRACKING_URI``) decides its own root: left alone.
    """
    uri = tracking_uri(home)
    if not uri.startswith("sqlite:"):
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy import text

    for k, v in TELEMETRY_ENV.items():
        os.environ.setdefault(k, v)
    root = (Path(home).resolve() / "mlartifacts").as_uri()
    store = SqlAlchemyStore(uri, root)  # type: ignore[no-untyped-call]
    default = store.get_experiment("0")  # type: ignore[no-untyped-call]
    if not default.artifact_location.startswith(root):
        with store.engine.begin() as conn:
            conn.execute(
                text("UPDATE experiments SET artifact_location = :loc WHERE experiment_id = 0"), {"loc": f"{root}/0"}
            )
    store.engine.dispose()


def ensure_experiment(name: str, home: str | Path = ".facegate") -> str:
    """The id of experiment ``name``, created if missing.

    With the embedded SQLite store its artifacts go under ``<home>/mlartifacts``, never beside wherever the command
    happened to run; a server decides its own artifact root.
    """
    import mlflow

    for k, v in TELEMETRY_ENV.items():
        os.environ.setdefault(k, v)
    uri = tracking_uri(home)
    prepare_store(home)
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    artifacts = (Path(home).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    return str(client.create_experiment(name, artifact_location=artifacts))


@contextmanager
def tracked_run(
    cfg: TrainConfig,
    *,
    home: str | Path = ".facegate",
    experiment: str = "facegate",
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """Start an MLflow run for a training config and log what identifies it.

    Yields:
        The active ``mlflow.ActiveRun``.
    """
    import mlflow
    import yaml

    for k, v in TELEMETRY_ENV.items():
        os.environ.setdefault(k, v)
    mlflow.set_tracking_uri(tracking_uri(home))
    ensure_experiment(experiment, home)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=cfg.name, nested=nested, parent_run_id=parent_run_id, tags=tags) as run:
        params = flatten_dict(cfg.to_dict())
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        # facegate's version and commit, the image digest on a cluster, the caller's repo under its own tag.
        mlflow.set_tags({**provenance_tags(), "dataset_hash": dataset_hash(cfg), "data_kind": cfg.data.kind})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            mlflow.log_artifact(str(path))
        yield run


def log_trained_model(bundle: Path, cfg: TrainConfig, val_report_dir: Path | None = None) -> None:
    """Log the bundle, the validation plots and an MLflow PyTorch model to the active run.

    The PyTorch model is pickled whole (``serialization_format="pickle"``, facegate's package shipped as code) so it
    loads and runs at any batch size; its requirements pin installable releases (``torch==2.13.0``), and the exact
    build that trained it (``2.13.0+cpu``) is in the model's metadata.
    """
    import mlflow
    import numpy as np
    import torch

    from facegate.models.torch_embedder import TorchEmbedder

    mlflow.log_artifacts(str(bundle), artifact_path="bundle")
    if val_report_dir is not None and val_report_dir.is_dir():
        for name in ("roc.png", "scores.png", "metrics.json"):
            if (val_report_dir / name).is_file():
                mlflow.log_artifact(str(val_report_dir / name), artifact_path="validation")
    emb = TorchEmbedder(
        cfg.model.backbone, weights=bundle / "model.pt", embedding_size=cfg.model.embedding_size, width=cfg.model.width
    )
    example = np.zeros((2, 3, 112, 112), dtype=np.float32)
    import facegate

    mlflow.pytorch.log_model(
        emb.model,
        name="model",
        serialization_format="pickle",
        code_paths=[str(Path(facegate.__file__).parent)],
        pip_requirements=[installable_requirement("torch", torch.__version__), f"numpy=={np.__version__}"],
        metadata={"torch_build": str(torch.__version__)},  # TorchVersion is a str subclass YAML cannot dump
        input_example=example,
    )
