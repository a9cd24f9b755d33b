"""``facegate gallery``: enrollment, deletion, reindex, keys, retention and backups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from facegate.cli._common import EXIT_ERROR, GalleryUrl, _errors, _settings

gallery_app = typer.Typer(
    help="Gallery: enroll, delete, list, reindex, rotate-keys, purge, backup, restore (FACEGATE_GALLERY_KEYS)",
    no_args_is_help=True,
)


def _gallery(ctx: typer.Context, url: str | None) -> Any:
    from facegate.serve.gallery import Gallery

    return Gallery(url or _settings(ctx).gallery_url())


@gallery_app.command("enroll")
@_errors
def gallery_enroll(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(help="The student's id (1-64 printable characters).")],
    photos: Annotated[list[Path], typer.Argument(help="1..N photos of the student.")],
    model: Annotated[str | None, typer.Option(help="Model whose template is built.")] = None,
    db: GalleryUrl = None,
) -> None:
    """Enroll or re-enroll a student; photos without exactly one clear face are rejected with the reason."""
    from facegate.bundles import load_embedder
    from facegate.errors import ImageError
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings

    settings = _settings(ctx, model=model)
    limits = limits_from_settings(settings)
    blobs = []
    for p in photos:
        size = p.stat().st_size if p.is_file() else -1
        if size < 0:
            raise ImageError(f"{p}: file not found", code="missing_image")
        if size > limits.max_bytes:
            raise ImageError(f"{p}: {size} bytes exceeds the {limits.max_bytes}-byte limit", code="too_large")
        blobs.append(p.read_bytes())
    res = _gallery(ctx, db).enroll(
        student_id,
        blobs,
        load_embedder(settings.model),
        aligner_from_settings(settings, multiple="reject"),
        limits=limits,
        admin="cli",
    )
    typer.echo(
        json.dumps(
            {
                "student_id": res.student_id,
                "accepted": res.accepted,
                "rejected": res.rejected,
                "model_version": res.model_version,
            },
            indent=2,
        )
    )


@gallery_app.command("delete")
@_errors
def gallery_delete(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(help="The student's id.")],
    db: GalleryUrl = None,
) -> None:
    """Delete a student and all their biometric data (crops and templates)."""
    if not _gallery(ctx, db).delete(student_id, admin="cli"):
        typer.echo(f"error: no student {student_id!r} [unknown_student]", err=True)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"deleted {student_id}")


@gallery_app.command("list")
@_errors
def gallery_list(ctx: typer.Context, db: GalleryUrl = None) -> None:
    """List enrolled students (ids, photo counts, model versions; no biometric data)."""
    typer.echo(json.dumps(_gallery(ctx, db).students(), indent=2))


@gallery_app.command("reindex")
@_errors
def gallery_reindex(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model (bundle) whose templates to build from the stored crops.")],
    db: GalleryUrl = None,
    workers: Annotated[int, typer.Option(help="Processes, one shard each (one already uses two cores).")] = 1,
    resume: Annotated[bool, typer.Option("--resume/--rebuild", help="Keep templates a killed run wrote.")] = True,
) -> None:
    """Build templates for a new model version before it takes traffic (parallel, resumable)."""
    from facegate.serve.reindex import reindex

    rep = reindex(db or _settings(ctx).gallery_url(), model, workers=workers, resume=resume)
    typer.echo(
        f"indexed {rep.built + rep.skipped} students for model version {rep.model_version} ({rep.built} built, "
        f"{rep.skipped} already done; {rep.photos} photos, {rep.photos_per_second:.1f} photos/s)"
    )


@gallery_app.command("rotate-keys")
@_errors
def gallery_rotate(ctx: typer.Context, db: GalleryUrl = None) -> None:
    """Re-encrypt every stored crop with the active (first) key of FACEGATE_GALLERY_KEYS."""
    typer.echo(f"re-encrypted {_gallery(ctx, db).rotate_keys()} crops")


@gallery_app.command("purge")
@_errors
def gallery_purge(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be erased; change nothing.")] = False,
    now: Annotated[str | None, typer.Option(help="Judge ages at this ISO time instead of now.")] = None,
    db: GalleryUrl = None,
) -> None:
    """Erase students past the retention policy (retention.*) and age out the audit; counts go in the audit."""
    from facegate.serve.retention import plan_purge, purge

    at = _iso_time(now, "--now")
    settings = _settings(ctx)
    gallery = _gallery(ctx, db)
    plan = (plan_purge if dry_run else purge)(gallery, settings.retention, now=at)
    typer.echo(json.dumps(plan.to_dict() if dry_run else plan.summary(), indent=2))


@gallery_app.command("enrollment-end")
@_errors
def gallery_enrollment_end(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(help="The student's id.")],
    ends_on: Annotated[str, typer.Argument(help="Last day of enrollment (YYYY-MM-DD), or 'none' to clear it.")],
    db: GalleryUrl = None,
) -> None:
    """Record the last day of a student's enrollment: `gallery purge` erases them the day after."""
    from facegate.serve.retention import set_enrollment_end

    day = None if ends_on.lower() == "none" else _iso_time(ends_on, "ENDS_ON").date()
    set_enrollment_end(_gallery(ctx, db), student_id, day)
    typer.echo(f"{student_id}: enrollment ends {day.isoformat() if day else 'never (cleared)'}")


def _iso_time(value: str | None, flag: str) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date/time", param_hint=flag) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _backup_store(ctx: typer.Context, url: str | None) -> tuple[Any, Any]:
    from facegate.data.storage import open_storage

    settings = _settings(ctx)
    target = url or settings.backup.url or settings.storage_url()
    return open_storage(target, endpoint_url=settings.storage.s3_endpoint), settings.backup


BackupUrl = Annotated[str | None, typer.Option(help="Storage URL for backups (default backup.url, else storage.url).")]


@gallery_app.command("backup")
@_errors
def gallery_backup(
    ctx: typer.Context,
    to: BackupUrl = None,
    keep: Annotated[int | None, typer.Option(help="Backups to keep (default backup.keep).")] = None,
    dump_file: Annotated[Path | None, typer.Option(help="Seal this pg_dump file instead of dumping.")] = None,
    db: GalleryUrl = None,
) -> None:
    """Back up the gallery database, encrypted with a key derived from the gallery keys; keep the last K."""
    from dataclasses import asdict

    from facegate.serve.backup import backup_gallery
    from facegate.serve.gallery import KeyRing

    store, cfg = _backup_store(ctx, to)
    url = db or _settings(ctx).gallery_url()
    res = backup_gallery(url, store, KeyRing.from_env(), prefix=cfg.prefix, keep=keep or cfg.keep, dump_file=dump_file)
    typer.echo(json.dumps(asdict(res), indent=2))


@gallery_app.command("restore")
@_errors
def gallery_restore(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="'latest', a backup's file name or its object key.")] = "latest",
    source: Annotated[str | None, typer.Option("--from", help="Storage URL of the backups.")] = None,
    db: GalleryUrl = None,
) -> None:
    """Restore a backup into an EMPTY database (a non-empty one is refused); needs FACEGATE_GALLERY_KEYS."""
    from facegate.serve.backup import restore_gallery
    from facegate.serve.gallery import KeyRing

    store, cfg = _backup_store(ctx, source)
    url = db or _settings(ctx).gallery_url()
    typer.echo(json.dumps(restore_gallery(url, store, KeyRing.from_env(), prefix=cfg.prefix, name=name), indent=2))


@gallery_app.command("new-key")
def gallery_new_key(key_id: Annotated[str, typer.Argument(help="Id of the new key.")] = "k1") -> None:
    """Print a new id:base64key entry for FACEGATE_GALLERY_KEYS (store it in a secret, never in git)."""
    from facegate.serve.gallery import KeyRing

    typer.echo(KeyRing.generate(key_id))
