"""The ``facegate`` command: one verb per stage.

Settings resolve as defaults < ``--config`` YAML < ``FACEGATE_*`` environment < flags, and every command that
writes output dumps the resolved settings beside it as ``config.yaml``. Errors facegate expects (bad images, no
face, malformed pairs, unknown models) print one ``error:`` line naming the file or value and exit with status 2;
nothing is printed as a traceback unless it is a bug.

One module per stage (``facegate.cli.data``, ``.evaluate``, ``.train``, ``.export``, ``.serve``, ``.gallery``,
``.registry``, ``.rollout``, ``.pipeline``, ...); each verb is a thin call into the library. This module only
assembles them into the one ``facegate`` app.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from facegate import __version__
from facegate.cli import data as data_verbs
from facegate.cli import demo as demo_verbs
from facegate.cli import drift as drift_verbs
from facegate.cli import evaluate as evaluate_verbs
from facegate.cli import export as export_verbs
from facegate.cli import liveness as liveness_verbs
from facegate.cli import serve as serve_verbs
from facegate.cli import train as train_verbs
from facegate.cli.data import data_app
from facegate.cli.gallery import gallery_app
from facegate.cli.liveness import liveness_app
from facegate.cli.models import models_app
from facegate.cli.pipeline import pipeline_app
from facegate.cli.registry import registry_app
from facegate.cli.rollout import rollout_app
from facegate.cli.serve import keys_app

__all__ = ["app", "run"]

app = typer.Typer(
    name="facegate",
    help="Face verification for exam check-in: ingest, evaluate, verify, and manage data and models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Verbs first, in the order `facegate --help` has always listed them, then the groups.
app.add_typer(data_verbs.commands)
app.add_typer(evaluate_verbs.commands)
app.add_typer(train_verbs.commands)
app.add_typer(export_verbs.commands)
app.add_typer(demo_verbs.commands)
app.add_typer(serve_verbs.commands)
app.add_typer(drift_verbs.commands)
app.add_typer(liveness_verbs.commands)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(gallery_app, name="gallery")
app.add_typer(keys_app, name="keys")
app.add_typer(registry_app, name="registry")
app.add_typer(rollout_app, name="rollout")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(liveness_app, name="liveness")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facegate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file.", exists=True, dir_okay=False)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Face verification for exam check-in."""
    ctx.ensure_object(dict).update({"config": config, "quiet": quiet})


# Third-party telemetry stays off in everything the `facegate` command starts (set by the console entry point,
# never on import: importing facegate changes no environment).
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "OPENVINO_TELEMETRY_OPT_OUT": "1",
    "NNCF_TELEMETRY_OPT_OUT": "1",
}


def run() -> None:
    """Console entry point: telemetry off, then the Typer app."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    app(prog_name="facegate")
