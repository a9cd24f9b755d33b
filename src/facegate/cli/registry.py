"""``facegate registry``: MLflow model versions and aliases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors, _settings

registry_app = typer.Typer(
    help="MLflow Model Registry: versions of the `facegate` model and the champion/challenger aliases.",
    no_args_is_help=True,
)


ModelName = Annotated[str, typer.Option("--name", help="Registered model name.")]


@registry_app.command("list")
@_errors
def registry_list(ctx: typer.Context, name: ModelName = "facegate") -> None:
    """Every version, newest first, with its aliases, bundle version and accuracy tags."""
    from facegate.registry.models import list_versions

    versions = list_versions(name, home=_settings(ctx).home)
    if not versions:
        typer.echo(f"no versions of {name!r} registered yet (facegate registry register BUNDLE)")
    for v in versions:
        aliases = ",".join(v.aliases) or "-"
        typer.echo(f"{v.uri:22s} {aliases:22s} {v.model_version:40s} threshold {v.tags.get('threshold', '?')}")


@registry_app.command("show")
@_errors
def registry_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="models:/NAME@ALIAS or models:/NAME/VERSION.")]
) -> None:
    """One version as JSON: storage URI, bundle version, aliases and every tag."""
    from facegate.registry.models import get_version

    typer.echo(json.dumps(get_version(ref, home=_settings(ctx).home).to_dict(), indent=2))


@registry_app.command("alias")
@_errors
def registry_alias(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="champion, challenger, or any alias.")],
    version: Annotated[str, typer.Argument(help="Version number to point it at.")],
    name: ModelName = "facegate",
) -> None:
    """Point an alias at a version (e.g. a manual promotion or rollback of the registry state)."""
    from facegate.registry.models import set_alias

    v = set_alias(name, alias, version, home=_settings(ctx).home)
    typer.echo(f"{name}@{alias} -> {v.uri} ({v.model_version})")


@registry_app.command("register")
@_errors
def registry_register(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.", exists=True, file_okay=False)],
    alias: Annotated[str | None, typer.Option(help="Alias for the new version ('' for none).")] = "challenger",
    name: ModelName = "facegate",
) -> None:
    """Register a bundle as a new version (its metrics and threshold become tags)."""
    from facegate.registry.models import register_bundle

    v = register_bundle(bundle, name=name, alias=alias or None, home=_settings(ctx).home)
    typer.echo(f"registered {v.uri} ({v.model_version})" + (f" as {name}@{alias}" if alias else ""))
