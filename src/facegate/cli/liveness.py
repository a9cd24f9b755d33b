"""Liveness verbs: ``evaluate-pad`` and ``facegate liveness``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import EXIT_ERROR, _errors, _settings

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


liveness_app = typer.Typer(
    help="Passive liveness (MiniFASNet, optional): convert the published weights into a parity-gated bundle.",
    no_args_is_help=True,
)


@liveness_app.command("convert")
@_errors
def liveness_convert(
    weights: Annotated[Path, typer.Option(help="Folder with the published MiniFASNet .pth files (SHA-256 checked).")],
    out: Annotated[Path, typer.Option(help="Liveness bundle folder to write (ONNX + OpenVINO + liveness.json).")],
    photos: Annotated[Path, typer.Option(help="Real face photos; their crops are the parity gate's inputs.")],
    threshold: Annotated[float, typer.Option(help="Liveness threshold the bundle ships.")] = 0.5,
) -> None:
    """Convert MiniFASNet V2 (scale 2.7) and V1SE (scale 4.0) to ONNX and OpenVINO, gated by parity with PyTorch."""
    from facegate.faces.liveness import convert_from_photos

    bundle = convert_from_photos(weights, out, photos, threshold)
    typer.echo(json.dumps({m["name"]: m["parity"] for m in bundle["models"]}, indent=2))
    typer.echo(f"liveness bundle written to {out} (threshold {bundle['threshold']})")


@commands.command("evaluate-pad")
@_errors
def evaluate_pad_command(
    ctx: typer.Context,
    root: Annotated[
        Path | None, typer.Argument(help="Labelled folder: bona_fide/** and attack/<type>/** (optional).")
    ] = None,
    liveness: Annotated[str | None, typer.Option(help="Liveness bundle (default: serve.liveness_model).")] = None,
    bona_fide: Annotated[
        list[Path] | None, typer.Option(help="A folder of bona fide photos (repeatable), besides ROOT's.")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold (default: the bundle's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write pad.json here as well.")] = None,
) -> None:
    """ISO/IEC 30107-3 figures of the liveness check: APCER per attack type, BPCER, ACER."""
    from facegate.evaluate.pad import run_pad
    from facegate.utils import atomic_write_text

    settings = _settings(ctx)
    bundle = liveness or settings.serve.liveness_model
    if not bundle:
        typer.echo("error: give --liveness (a bundle from `facegate liveness convert`) [model_missing]", err=True)
        raise typer.Exit(EXIT_ERROR)
    report = run_pad(bundle, root, bona_fide or [], threshold)
    text = json.dumps(report, indent=2)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "pad.json", text + "\n")
    typer.echo(text)
