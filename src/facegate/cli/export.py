"""The ``export`` verb: ONNX and OpenVINO behind parity gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors, _progress, _settings

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


@commands.command()
@_errors
def export(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name or bundle directory.")],
    out: Annotated[Path, typer.Option(help="Output root: one bundle per format under OUT/<format>/.")],
    faces: Annotated[Path, typer.Option(help="Folder of real aligned 112x112 faces (parity and INT8 calibration).")],
    formats: Annotated[
        str, typer.Option(help="Comma-separated: onnx, openvino-fp32, openvino-fp16, openvino-int8.")
    ] = ("onnx,openvino-fp32,openvino-fp16,openvino-int8"),
    max_faces: Annotated[int, typer.Option(help="Faces sampled from --faces.")] = 400,
    pairs: Annotated[Path | None, typer.Option(help="Pairs for the accuracy gate and per-format threshold.")] = None,
    images: Annotated[Path | None, typer.Option(help="Image root of --pairs.")] = None,
    target_far: Annotated[float | None, typer.Option(help="FAR for each format's threshold.")] = None,
) -> None:
    """Export to ONNX and OpenVINO FP32/FP16/INT8; each format must pass its parity gate to be written."""
    from facegate.data.pairs import load_pairs
    from facegate.export.convert import export_model, load_faces

    settings = _settings(ctx, **{"evaluate.target_far": target_far})
    pairset = load_pairs(pairs, images) if pairs is not None else None
    report = export_model(
        model,
        out,
        load_faces(faces, max_faces),
        formats=[f.strip() for f in formats.split(",")],
        pairs=pairset,
        target_far=settings.evaluate.target_far,
        progress=_progress(ctx),
    )
    for fmt, entry in report.formats.items():
        acc = entry.get("evaluation", {}) or {}
        typer.echo(
            f"{fmt:15s} cosine mean {entry['parity']['cosine_mean']:.5f} min {entry['parity']['cosine_min']:.5f}"
            + (f", accuracy {acc['accuracy']:.4f} (drop {entry['accuracy_drop'] * 100:+.2f} pts)" if acc else "")
            + f" -> {out / fmt}"
        )
