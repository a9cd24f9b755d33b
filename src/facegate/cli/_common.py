"""What every command module shares: expected errors as one line and exit status 2, resolved settings."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from facegate.config import Settings, load_settings
from facegate.errors import FacegateError

F = TypeVar("F", bound=Callable[..., Any])


EXIT_ERROR = 2


def _errors(fn: F) -> F:
    """Turn expected errors into one clear line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FacegateError as exc:
            typer.echo(f"error: {exc.message} [{exc.code}]", err=True)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    obj = ctx.ensure_object(dict)
    settings = load_settings(obj.get("config"), overrides)
    # `models:/` URIs resolve against <home>/mlflow.db (unless MLFLOW_TRACKING_URI is set) wherever they are loaded,
    # including in processes this command starts: one home for the whole command.
    os.environ["FACEGATE_HOME"] = str(settings.home)
    return settings


def _progress(ctx: typer.Context) -> bool:
    return not ctx.ensure_object(dict).get("quiet", False)


GalleryUrl = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL (default sqlite:///<home>/gallery.db).")]
