"""``facegate models``: the embedder registry and insightface imports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors, _settings
from facegate.errors import FacegateError

models_app = typer.Typer(help="Registered face-embedding models.", no_args_is_help=True)


@models_app.command("list")
@_errors
def models_list() -> None:
    """List registered models with their embedding size and default threshold."""
    from facegate.models import create_embedder, list_models

    for name in list_models():
        try:
            info = create_embedder(name).describe()
            typer.echo(
                f"{name:12s} dim={info['embedding_size']:<5d} threshold={info['default_threshold']:.3f} "
                f"version={info['version']}"
            )
        except FacegateError as exc:
            typer.echo(f"{name:12s} unavailable: {exc.message}")


@models_app.command("import-insightface")
@_errors
def models_import_insightface(
    ctx: typer.Context,
    pth: Annotated[Path, typer.Argument(help="insightface arcface_torch backbone.pth (a state dict).")],
    arch: Annotated[str, typer.Option(help="Architecture the checkpoint was trained as.")] = "iresnet50",
    name: Annotated[str | None, typer.Option(help="Bundle name (default: the file's folder name).")] = None,
    embedding_size: Annotated[int, typer.Option(help="Embedding size of the checkpoint.")] = 512,
    out: Annotated[Path | None, typer.Option(help="Bundle directory (default <home>/models/NAME).")] = None,
) -> None:
    """Register an insightface checkpoint as a facegate model bundle (usable as --model DIR everywhere)."""
    from facegate.models.torch_embedder import import_insightface

    settings = _settings(ctx)
    bundle_name = name or pth.resolve().parent.name or pth.stem
    target = out or settings.home / "models" / bundle_name
    bundle = import_insightface(pth, target, arch=arch, embedding_size=embedding_size, name=bundle_name)
    typer.echo(f"registered {arch} bundle at {bundle}; use --model {bundle}")
