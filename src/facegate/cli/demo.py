"""``demo`` (the main job end to end) and ``config`` (the resolved settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors, _progress, _settings

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


@commands.command()
@_errors
def demo(
    ctx: typer.Context,
    workdir: Annotated[Path | None, typer.Option(help="Working directory (default <home>/demo; emptied).")] = None,
) -> None:
    """Run the main job end to end on data that ships with the installed packages (no download, no cluster)."""
    from facegate.demo import format_summary, run_demo

    summary = run_demo(_settings(ctx), workdir, progress=_progress(ctx))
    typer.echo(format_summary(summary))
    if not summary["verify_same_person"]["match"] or summary["verify_different_people"]["match"]:
        typer.echo("error: the demo's verification went the wrong way", err=True)
        raise typer.Exit(1)


@commands.command("config")
@_errors
def show_config(ctx: typer.Context) -> None:
    """Print the resolved settings (defaults < --config < FACEGATE_* env)."""
    import yaml

    typer.echo(yaml.safe_dump(_settings(ctx).to_dict(), sort_keys=True), nl=False)
