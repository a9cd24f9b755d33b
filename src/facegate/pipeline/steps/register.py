"""The register step: an MLflow model version with alias ``challenger``."""

from __future__ import annotations

from typing import Any

from facegate.pipeline.failures import records_failure
from facegate.pipeline.steps._common import _key, _say, _settings


@records_failure
def register_step(
    model_dir: str,
    *,
    name: str = "facegate",
    training: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    pipeline_run: str = "",
) -> str:
    """Register the exported bundle as a new version with alias ``challenger``.

    Its tags hold the metrics, the threshold (from the bundle), the dataset hash, the git commit and the config.

    Args:
        model_dir: The exported bundle.
        name: Registered model name.
        training: The train step's summary (config, dataset hash, MLflow training run).
        evaluation: The evaluate step's metrics per verification set.
        pipeline_run: The KFP run's name.

    Returns:
        ``models:/NAME/VERSION``.
    """
    from facegate.registry.models import register_bundle

    tr = training or {}
    tags: dict[str, Any] = {
        "dataset_hash": tr.get("dataset_hash", ""),
        "config": tr.get("config", {}),
        "training_run": tr.get("mlflow_run_id"),
        "pipeline_run": pipeline_run,
    }
    for set_name, row in (evaluation or {}).items():
        for k, v in row.items():
            tags[f"metric.{_key(set_name)}.{k}"] = v
    v = register_bundle(model_dir, name=name, alias="challenger", tags=tags, home=_settings().home)
    _say(f"register: {v.uri} ({v.model_version}) is {name}@challenger")
    return v.uri
