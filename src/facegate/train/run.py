"""A tracked training run: train, write the final validation report, log everything to MLflow (rank 0 only)."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from facegate.train.config import TrainConfig
from facegate.train.trainer import Callback, TrainResult, train

__all__ = ["final_report", "run_training"]


def final_report(bundle: Path, cfg: TrainConfig, out_dir: Path) -> Path | None:
    """Evaluate the trained bundle on the validation pairs and write metrics and plots to ``out_dir``."""
    from facegate.bundles import load_embedder
    from facegate.evaluate.runner import evaluate_pairs, write_report
    from facegate.train.data import build_val_pairs

    pairs = build_val_pairs(cfg)
    if pairs is None:
        return None
    result = evaluate_pairs(load_embedder(bundle), pairs, mode="auto", flip=cfg.val.flip, progress=False)
    write_report(result, pairs, out_dir)
    return out_dir


def run_training(
    cfg: TrainConfig,
    *,
    track: bool = True,
    home: str | Path = ".facegate",
    resume: bool = True,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
    parent_run_id: str | None = None,
) -> tuple[TrainResult, str | None]:
    """Train with MLflow tracking.

    Returns:
        ``(result, mlflow run id or None)``.
    """
    is_main = int(os.environ.get("RANK", "0")) == 0
    cbs: list[Callback] = list(callbacks or [])
    ctx: Any = nullcontext()
    if track and is_main:
        from facegate.registry.tracking import MlflowCallback, tracked_run

        # First: a tuner's report may end the trial (ASHA), and the metric must be recorded before that.
        cbs.insert(0, MlflowCallback())
        ctx = tracked_run(cfg, home=home, nested=parent_run_id is not None, parent_run_id=parent_run_id)
    with ctx as run:
        result = train(cfg, callbacks=cbs, resume=resume, progress=progress)
        if result.bundle is not None:
            report = final_report(result.bundle, cfg, Path(cfg.output) / "val")
            if run is not None:
                from facegate.registry.tracking import log_trained_model

                log_trained_model(result.bundle, cfg, report)
    return result, (run.info.run_id if run is not None else None)
