"""Training verbs: ``train`` and ``tune``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors, _progress, _settings

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


@commands.command(context_settings={"allow_extra_args": False})
@_errors
def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Training config YAML (see configs/).", exists=True, dir_okay=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides, e.g. optim.lr=0.05")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from <output>/checkpoints/last.pt if present.")] = True,
    track: Annotated[bool, typer.Option(help="Log to MLflow (MLFLOW_TRACKING_URI, else <home>/mlflow.db).")] = True,
) -> None:
    """Train a backbone with a margin softmax (run under torchrun for DDP: gloo on CPU, NCCL on GPU)."""
    from facegate.train.config import load_train_config
    from facegate.train.run import run_training

    cfg = load_train_config(config, overrides or [])
    settings = _settings(ctx)
    result, run_id = run_training(cfg, track=track, home=settings.home, resume=resume, progress=_progress(ctx))
    if result.bundle is None:  # not rank 0
        return
    val = result.final_val
    typer.echo(
        f"trained {result.steps} steps ({result.epochs:.2f} epochs) in {result.seconds:.1f} s, "
        f"{result.samples_per_second:.1f} samples/s"
        + (" (stopped early: target reached)" if result.stopped_early else "")
    )
    if val:
        typer.echo(f"validation accuracy {val['accuracy']:.4f} ± {val['accuracy_std']:.4f}, AUC {val['auc']:.4f}")
    typer.echo(f"model bundle: {result.bundle} (use --model {result.bundle})")
    if run_id:
        typer.echo(f"mlflow run: {run_id}")


@commands.command()
@_errors
def tune(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Base training config YAML.", exists=True, dir_okay=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides of the base config")] = None,
    samples: Annotated[int, typer.Option(help="Number of trials.")] = 4,
    target: Annotated[float | None, typer.Option(help="Stop the search once a trial reaches this accuracy.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (trials, Ray results, best_config.yaml).")] = Path(
        ".facegate/tune"
    ),
    cpus: Annotated[int, typer.Option(help="CPUs Ray may use.")] = 2,
    cpus_per_trial: Annotated[int, typer.Option(help="CPUs per trial.")] = 1,
) -> None:
    """Tune lr, weight decay, margin, embedding size and batch with Ray Tune + ASHA; nested MLflow runs."""
    from facegate.train.config import load_train_config
    from facegate.tune.search import run_tune

    base = load_train_config(config, overrides or [])
    settings = _settings(ctx)
    res = run_tune(
        base,
        output=out,
        num_samples=samples,
        target_accuracy=target,
        home=settings.home,
        cpus=cpus,
        cpus_per_trial=cpus_per_trial,
    )
    for i, t in enumerate(res.trials):
        acc = "failed: " + (t["error"] or "")[:120] if t["accuracy"] is None else f"{t['accuracy']:.4f}"
        typer.echo(f"trial {i}: accuracy {acc}  {json.dumps(t['config'], sort_keys=True)}")
    typer.echo(f"best accuracy {res.best_accuracy:.4f}" + (" (target reached)" if res.reached_target else ""))
    typer.echo(f"best config: {res.best_config_path}; mlflow parent run: {res.parent_run_id}")
