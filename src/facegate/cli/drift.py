"""The ``drift`` verb: score drift against a reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors
from facegate.errors import FacegateError

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


@commands.command()
@_errors
def drift(
    scores: Annotated[
        Path,
        typer.Argument(
            help="The champion's scores.csv on the new labelled pairs (evaluate --out).", exists=True, dir_okay=False
        ),
    ],
    reference: Annotated[
        Path, typer.Option(help="Its scores.csv on the reference pairs.", exists=True, dir_okay=False)
    ],
    model: Annotated[
        str | None, typer.Option(help="The model whose threshold is judged (models:/... or bundle).")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="The serving threshold (instead of --model).")] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(help="The new evaluation's metrics.json, added to the report.", exists=True, dir_okay=False),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write drift.json and drift.md here.")] = None,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with status 1 when drift is found.")] = False,
) -> None:
    """Drift report: PSI and KS of genuine and impostor scores against the reference, TAR/FAR at the threshold."""
    from facegate.evaluate.drift import drift_report, read_scores, report_markdown
    from facegate.utils import atomic_write_text

    if threshold is None:
        if model is None:
            raise FacegateError("give --model (its threshold is used) or --threshold", code="bad_usage")
        from facegate.bundles import load_embedder

        threshold = load_embedder(model).default_threshold
    recent_metrics = json.loads(metrics.read_text()) if metrics else None
    report = drift_report(read_scores(scores), read_scores(reference), float(threshold), recent_metrics=recent_metrics)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "drift.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(out / "drift.md", report_markdown(report))
    typer.echo(json.dumps(report, indent=2))
    if fail_on_drift and report["drifted"]:
        raise typer.Exit(1)
