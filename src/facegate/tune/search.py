"""Ray Tune over lr, weight decay, margin, embedding size and batch size, with ASHA early stopping.

Each trial is a normal tracked training run (:func:`facegate.train.run.run_training`) logged as a *nested* MLflow
run under one parent run per search, reporting its validation accuracy to Tune after every validation. ASHA stops
unpromising trials early; the whole search stops as soon as any trial reaches the target validation accuracy (the
loop the original project drove by hand with Jenkins). The best configuration is written to
``<output>/best_config.yaml``, ready for ``facegate train``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facegate.train.config import TrainConfig, load_train_config
from facegate.utils import flatten_dict

__all__ = ["TuneResult", "default_space", "run_tune"]

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@dataclass
class TuneResult:
    """Outcome of a search."""

    best_config: dict[str, Any]
    best_accuracy: float
    best_config_path: Path
    trials: list[dict[str, Any]]
    parent_run_id: str | None
    reached_target: bool


def default_space() -> dict[str, Any]:
    """The search space (dotted training-config keys)."""
    from ray import tune

    return {
        "optim.lr": tune.loguniform(0.01, 0.3),
        "optim.weight_decay": tune.loguniform(1e-5, 1e-3),
        "margin.m2": tune.uniform(0.2, 0.5),
        "model.embedding_size": tune.choice([32, 64, 128]),
        "batch_size": tune.choice([16, 32]),
    }


def _trial(config: dict[str, Any]) -> None:
    """One Tune trial: a tracked training run that reports every validation."""
    import torch
    from ray import tune

    from facegate.train.run import run_training

    torch.set_num_threads(int(config.pop("_threads")))
    base = dict(config.pop("_base"))
    home = config.pop("_home")
    parent = config.pop("_parent")
    trial_dir = Path(config.pop("_output")) / tune.get_context().get_trial_id()
    cfg = load_train_config(None, {**flatten_dict(base), **config, "output": str(trial_dir), "val.every_steps": 0})

    class Report:
        def on_log(self, step: int, metrics: dict[str, float]) -> None:
            pass

        def on_validation(self, step: int, metrics: dict[str, Any]) -> None:
            tune.report({"accuracy": float(metrics["accuracy"]), "auc": float(metrics["auc"]), "step": step})

    run_training(cfg, home=home, progress=False, callbacks=[Report()], parent_run_id=parent, resume=False)


def run_tune(
    base: TrainConfig,
    *,
    output: str | Path,
    num_samples: int = 4,
    target_accuracy: float | None = None,
    home: str | Path = ".facegate",
    cpus: int = 2,
    cpus_per_trial: int = 1,
    space: dict[str, Any] | None = None,
    seed: int = 0,
) -> TuneResult:
    """Search hyperparameters around a base training config.

    Args:
        base: The configuration every trial starts from.
        output: Directory for trial outputs, Ray's results and ``best_config.yaml``.
        num_samples: Number of trials.
        target_accuracy: Stop the whole search once a trial's validation accuracy reaches this.
        home: facegate home (MLflow store).
        cpus: CPUs Ray may use.
        cpus_per_trial: CPUs (and torch threads) per trial.
        space: Search space (dotted config keys to Tune domains); :func:`default_space` by default.
        seed: Search seed.

    Returns:
        The best configuration and every trial's last result.
    """
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from facegate.registry.tracking import tracked_run

    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    home_abs = str(Path(home).resolve())

    class TargetStopper(tune.Stopper):
        def __init__(self) -> None:
            self.reached = False

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            if target_accuracy is not None and result.get("accuracy", 0.0) >= target_accuracy:
                self.reached = True
            return False

        def stop_all(self) -> bool:
            return self.reached

    stopper = TargetStopper()
    parent_cfg = base.model_copy(update={"name": f"{base.name}-tune"})
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
        ignore_reinit_error=True,
    )
    try:
        with tracked_run(parent_cfg, home=home) as parent:
            import mlflow

            mlflow.set_tag("kind", "tune")
            param_space = {
                **(space or default_space()),
                "_base": base.to_dict(),
                "_home": home_abs,
                "_parent": parent.info.run_id,
                "_output": str(out / "trials"),
                "_threads": cpus_per_trial,
            }
            tuner = tune.Tuner(
                tune.with_resources(_trial, {"cpu": cpus_per_trial}),
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric="accuracy",
                    mode="max",
                    num_samples=num_samples,
                    scheduler=ASHAScheduler(
                        time_attr="training_iteration", max_t=base.epochs, grace_period=1, reduction_factor=2
                    ),
                    # Concurrency follows from resources: cpus // cpus_per_trial trials at a time.
                    search_alg=BasicVariantGenerator(random_state=seed),
                ),
                run_config=tune.RunConfig(name="tune", storage_path=str(out / "ray"), stop=stopper, verbose=0),
            )
            grid = tuner.fit()
            trials: list[dict[str, Any]] = []
            for i in range(len(grid)):
                r = grid[i]
                cfg_used = {k: v for k, v in (r.config or {}).items() if not k.startswith("_")}
                trials.append(
                    {
                        "config": cfg_used,
                        "accuracy": (r.metrics or {}).get("accuracy"),
                        "error": str(r.error) if r.error else None,
                    }
                )
            ok = [t for t in trials if t["accuracy"] is not None]
            if not ok:
                errors = "; ".join(t["error"] or "no result" for t in trials)[:2000]
                raise RuntimeError(f"no tuning trial produced a result: {errors}")
            best = max(ok, key=lambda t: t["accuracy"])
            best_cfg = load_train_config(None, {**flatten_dict(base.to_dict()), **best["config"]})
            path = out / "best_config.yaml"
            path.write_text(yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
            # What a RayJob's caller reads back from object storage along with the config.
            summary = {"best_accuracy": float(best["accuracy"]), "trials": len(trials), "ok": len(ok)}
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            mlflow.log_metric("best_accuracy", float(best["accuracy"]))
            mlflow.log_artifact(str(path))
            return TuneResult(
                best_config=best_cfg.to_dict(),
                best_accuracy=float(best["accuracy"]),
                best_config_path=path,
                trials=trials,
                parent_run_id=parent.info.run_id,
                reached_target=stopper.reached,
            )
    finally:
        ray.shutdown()
