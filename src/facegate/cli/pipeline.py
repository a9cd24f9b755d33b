"""``facegate pipeline``: compile and run the Kubeflow pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facegate.cli._common import _errors, _settings

pipeline_app = typer.Typer(
    help="Kubeflow pipelines of pipelines/: compile them, run them locally or on a cluster.", no_args_is_help=True
)


PipelineName = Annotated[str, typer.Argument(help="Pipeline: a file name in pipelines/ (training, tuning).")]


@pipeline_app.command("compile")
@_errors
def pipeline_compile(
    name: PipelineName,
    out: Annotated[Path | None, typer.Option(help="Output YAML (default: pipelines/NAME.yaml).")] = None,
) -> None:
    """Compile a pipeline to the KFP v2 IR YAML (what `python pipelines/NAME.py` writes)."""
    from facegate.pipeline.runner import compile_pipeline

    typer.echo(f"wrote {compile_pipeline(name, out)}")


@pipeline_app.command("run")
@_errors
def pipeline_run(
    ctx: typer.Context,
    name: PipelineName,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A pipeline parameter, key=value (value parsed as YAML).")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp's SubprocessRunner (offline).")] = False,
    root: Annotated[Path | None, typer.Option(help="--local: where runs go (default <home>/pipelines).")] = None,
    host: Annotated[str | None, typer.Option(help="KFP API address (default KFP_HOST or in-cluster).")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace.")] = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "facegate",
    verbose: Annotated[bool, typer.Option(help="--local: stream every step's full log (kfp's own output).")] = False,
) -> None:
    """Run a pipeline: --local on this machine (MLflow on SQLite, local object store), else on Kubeflow."""
    import yaml

    from facegate.pipeline.runner import run_local, run_remote

    settings = _settings(ctx)
    params: dict[str, Any] = {}
    for item in param or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected key=value", param_hint="--param")
        params[key.strip()] = yaml.safe_load(raw)
    if local:
        where = root or settings.home / "pipelines"
        where.mkdir(parents=True, exist_ok=True)
        log = where / f"{name}-last.log"
        run = run_local(name, params, pipeline_root=where, log_path=None if verbose else log, echo=typer.echo)
        if not verbose:
            typer.echo(f"every step's full log: {log}")
        typer.echo(f"pipeline {name}: {run.state} in {run.seconds:.0f} s; artifacts under {run.where}")
        for task, out in run.outputs.items():
            text = ", ".join(f"{k} {v}" for k, v in out.items())
            typer.echo(f"  {task}: " + (text if len(text) <= 160 else text[:157] + "..."))
    else:
        run = run_remote(name, params, host=host, namespace=namespace, experiment=experiment)
        typer.echo(f"started {name}: {run.where}")
