"""Serving verbs: ``serve`` and ``facegate keys``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from facegate.cli._common import EXIT_ERROR, GalleryUrl, _errors, _settings

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


keys_app = typer.Typer(help="API keys of kiosks and administrators for the verifier service.", no_args_is_help=True)


def _keys(ctx: typer.Context, url: str | None) -> Any:
    from facegate.serve.auth import ApiKeyStore

    return ApiKeyStore.from_url(url or _settings(ctx).gallery_url())


@keys_app.command("create")
@_errors
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Kiosk id or administrator name.")],
    role: Annotated[str, typer.Option(help="kiosk (verify, embed) or admin (also enroll, delete, audit).")] = "kiosk",
    db: GalleryUrl = None,
) -> None:
    """Create (or replace) an API key; it is printed once and stored only as its SHA-256."""
    typer.echo(_keys(ctx, db).create(name, role))  # type: ignore[arg-type]


@keys_app.command("list")
@_errors
def keys_list(ctx: typer.Context, db: GalleryUrl = None) -> None:
    """List key names, roles and dates (never the keys)."""
    typer.echo(json.dumps(_keys(ctx, db).list(), indent=2))


@keys_app.command("revoke")
@_errors
def keys_revoke(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Key name.")], db: GalleryUrl = None
) -> None:
    """Revoke a key (running servers stop accepting it within 5 seconds)."""
    if not _keys(ctx, db).revoke(name):
        typer.echo(f"error: no active key named {name!r} [key_not_found]", err=True)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"revoked {name}")


@commands.command()
@_errors
def serve(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option(help="Registered model or bundle (an OpenVINO export in production).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1; 0.0.0.0 in a pod).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8080).")] = None,
    db: GalleryUrl = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /metrics (default 8082, on serve.metrics_host; 0 = a free port).")
    ] = None,
) -> None:
    """Serve the KServe verifier (v2 /v2/models/verifier/infer, v1 :predict), the embed model and the admin API.

    Needs FACEGATE_GALLERY_KEYS (crop encryption) and API keys (`facegate keys create`, or FACEGATE_ADMIN_KEY for
    a bootstrap admin). Logs are JSON lines on stderr; Prometheus metrics on their own port (the "starting" log
    line gives their URL).
    """
    from facegate.logs import configure_json_logging
    from facegate.serve.lean_import import import_kserve_for_serving

    import_kserve_for_serving()  # before the server's modules import KServe: start-up is check-in latency too
    from facegate.serve.app import serve as run_server

    settings = _settings(
        ctx,
        model=model,
        **{"serve.host": host, "serve.port": port, "serve.gallery_url": db, "serve.metrics_port": metrics_port},
    )
    configure_json_logging(settings.log_level, queued=True)  # log lines off the request path
    run_server(settings)
