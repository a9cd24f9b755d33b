"""The train and tune steps, and the tuned config handed to training."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facegate.errors import DataError, FacegateError
from facegate.pipeline.failures import records_failure
from facegate.pipeline.steps._common import MetricsSink, _all_pairs_csv, _log, _plain, _say, _settings


def _train_config(config: str, overrides: Sequence[str]) -> Any:
    from facegate.train.config import load_train_config

    if "\n" in config or not config.strip().endswith((".yaml", ".yml")):
        # Inline YAML (what the KFP UI's text box holds) rather than a path inside the image.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            fh.write(config)
        try:
            return load_train_config(fh.name, list(overrides))
        finally:
            os.unlink(fh.name)
    path = Path(config)
    root = os.environ.get("FACEGATE_CONFIG_ROOT")
    if not path.is_absolute() and not path.exists() and root:
        # In the pipeline image the repo's configs/ live under FACEGATE_CONFIG_ROOT, not the working directory.
        path = Path(root) / path
    return load_train_config(path, list(overrides))


@records_failure
def train_step(
    config: str,
    overrides: Sequence[str],
    data_dir: str,
    model_dir: str,
    *,
    backend: str = "local",
    metrics: MetricsSink | None = None,
    model_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on the aligned training faces and write the model bundle.

    Args:
        config: A training config: a YAML path (``configs/tiny_cpu.yaml``) or inline YAML.
        overrides: ``key.sub=value`` overrides; ``data.*`` and ``output`` are set by this step.
        data_dir: Aligned training faces (the ingest step's output).
        model_dir: Output: the trained bundle.
        backend: ``local`` trains in this process; ``trainjob`` submits a Kubeflow Trainer ``TrainJob`` (multi-node
            DDP on the GPU workers) and waits for it (:func:`facegate.pipeline.cluster.run_train_job`).
        metrics: Validation metrics and throughput.
        model_metadata: Gets the config, dataset hash and training figures.

    Returns:
        ``{"steps", "seconds", "samples_per_second", "validation", "mlflow_run_id", "dataset_hash"}``.
    """
    from facegate.data.storage import build_manifest

    dataset_hash = str(build_manifest(data_dir)["version"])
    with tempfile.TemporaryDirectory(prefix="facegate-train-") as tmp:
        cfg = _train_config(
            config, [*overrides, "data.kind=folder", f"data.path={data_dir}", f"output={Path(tmp) / 'run'}"]
        )
        if backend == "trainjob":
            from facegate.pipeline.cluster import run_train_job

            summary: dict[str, Any] = run_train_job(cfg, model_dir)
        elif backend == "local":
            from facegate.train.run import run_training

            _say(f"train: {cfg.model.backbone} on {data_dir}, {cfg.epochs} epochs (in this process)")
            result, run_id = run_training(cfg, home=_settings().home, resume=False, progress=True)
            if result.bundle is None:
                raise FacegateError("training produced no bundle", code="train_failed")
            shutil.copytree(result.bundle, model_dir, dirs_exist_ok=True)
            summary = {
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "samples_per_second": round(result.samples_per_second, 2),
                "validation": result.final_val or {},
                "mlflow_run_id": run_id,
            }
        else:
            raise FacegateError(f"unknown train backend {backend!r} (local | trainjob)", code="config_error")
    summary["dataset_hash"] = dataset_hash
    summary["config"] = cfg.to_dict()
    val = summary.get("validation") or {}
    _log(metrics, {k: summary[k] for k in ("steps", "seconds", "samples_per_second")})
    _log(metrics, {k: val.get(k) for k in ("accuracy", "auc", "eer")}, prefix="val_")
    if model_metadata is not None:
        model_metadata.update({"config": cfg.to_dict(), "dataset_hash": dataset_hash, "backbone": cfg.model.backbone})
    acc = val.get("accuracy")
    _say(f"train: done in {summary['seconds']} s" + (f"; validation accuracy {acc:.4f}" if acc is not None else ""))
    return dict(_plain(summary))


@records_failure
def tune_step(
    config: str,
    overrides: Sequence[str],
    data_dir: str,
    best_config_path: str,
    *,
    holdout_dir: str | None = None,
    samples: int = 4,
    backend: str = "local",
    metrics: MetricsSink | None = None,
) -> dict[str, Any]:
    """Search hyperparameters with Ray Tune (ASHA) and write the best training config as YAML.

    Args:
        config: Base training config (path or inline YAML).
        overrides: Overrides of the base config.
        data_dir: Aligned training faces.
        best_config_path: Output: the best config, ready for the training pipeline's ``config`` parameter.
        holdout_dir: Held-out faces; when given, every trial validates on all their pairs (trials are ranked by
            that accuracy; the config's own validation is used otherwise).
        samples: Trials.
        backend: ``local`` runs Ray in this process; ``rayjob`` submits a KubeRay ``RayJob`` and waits for it.
        metrics: The best accuracy and trial count.
    """
    import yaml

    with tempfile.TemporaryDirectory(prefix="facegate-tune-") as tmp:
        val: list[str] = []
        if holdout_dir:
            _all_pairs_csv(Path(holdout_dir), Path(tmp) / "holdout.csv")
            val = ["val.kind=pairs", f"val.pairs={Path(tmp) / 'holdout.csv'}", f"val.images={holdout_dir}"]
        base = _train_config(config, [*overrides, *val, "data.kind=folder", f"data.path={data_dir}"])
        if backend == "rayjob":
            from facegate.pipeline.cluster import run_ray_job

            best, best_acc, n = run_ray_job(base, samples)
        elif backend == "local":
            from facegate.tune.search import run_tune

            _say(f"tune: {samples} trials with Ray Tune + ASHA (Ray in this process)")
            res = run_tune(base, output=Path(tmp) / "tune", num_samples=samples, home=_settings().home)
            best, best_acc, n = res.best_config, res.best_accuracy, len(res.trials)
        else:
            raise FacegateError(f"unknown tune backend {backend!r} (local | rayjob)", code="config_error")
    # The trials' data and validation paths lived in this step's pod: the tuned config keeps the caller's.
    caller = _train_config(config, overrides).to_dict()
    best = {k: v for k, v in best.items() if k != "output"} | {"data": caller["data"], "val": caller["val"]}
    Path(best_config_path).parent.mkdir(parents=True, exist_ok=True)
    Path(best_config_path).write_text(yaml.safe_dump(best, sort_keys=False))
    _log(metrics, {"best_accuracy": best_acc, "trials": n})
    _say(f"tune: best validation accuracy {best_acc:.4f} over {n} trials")
    return dict(_plain({"best_accuracy": best_acc, "trials": n, "best_config": best}))


@records_failure
def config_text_step(path: str) -> str:
    """A training config file's text (a tuned config becomes the next step's inline ``config`` parameter).

    Raises:
        DataError: If the file is not a readable training config.
    """
    from facegate.train.config import load_train_config

    try:
        load_train_config(path)  # refuse junk here, not three steps later
        return Path(path).read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the tuned config ({exc})") from None
