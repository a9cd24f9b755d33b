"""Data verbs: ``ingest`` and ``facegate data`` (manifests, checks, synthetic sets, object storage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors, _progress, _settings

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


data_app = typer.Typer(
    help="Datasets: manifests, integrity checks, synthetic data, object storage.", no_args_is_help=True
)


@commands.command()
@_errors
def ingest(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="Raw dataset: SRC/<identity>/<image>.")],
    dst: Annotated[Path, typer.Argument(help="Output: aligned 112x112 faces, report, manifest.")],
    workers: Annotated[int | None, typer.Option(help="Worker processes (0 = in this process).")] = None,
    resume: Annotated[bool, typer.Option(help="Skip images a previous run finished.")] = True,
    retry_failed: Annotated[bool, typer.Option(help="On resume, retry images that failed before.")] = False,
) -> None:
    """Detect and align every face of a raw image-folder dataset (parallel, resumable).

    Images that cannot be used (corrupt, not an image, too large, no face, ...) are listed with a reason in
    DST/ingest_report.json; the run goes on.
    """
    from facegate.faces.ingest import ingest as run_ingest

    settings = _settings(ctx, **{"ingest.workers": workers})
    report = run_ingest(src, dst, settings, resume=resume, retry_failed=retry_failed, progress=_progress(ctx))
    d = report.to_dict()
    typer.echo(
        f"aligned {d['aligned']}/{d['total']} images ({d['resumed']} already done), {d['failed']} failed"
        + (f": {json.dumps(d['failure_reasons'])}" if d["failed"] else "")
    )
    typer.echo(f"report: {Path(dst) / 'ingest_report.json'}")
    if report.interrupted:
        typer.echo("interrupted: run the same command again to resume", err=True)
        raise typer.Exit(130)


@data_app.command("manifest")
@_errors
def data_manifest(root: Annotated[Path, typer.Argument(help="Dataset root (<identity>/<image>).")]) -> None:
    """Write ROOT/manifest.json (path, identity, sha256, bytes per file) and print the dataset version."""
    from facegate.data.storage import write_manifest

    m = write_manifest(root)
    typer.echo(f"{m['n_files']} files, {m['n_identities']} identities, version {m['version']}")


@data_app.command("check")
@_errors
def data_check(root: Annotated[Path, typer.Argument(help="Dataset root with manifest.json.")]) -> None:
    """Compare a dataset with its manifest; exit 1 and list the files that changed, vanished or appeared."""
    from facegate.data.storage import check_manifest

    diff = check_manifest(root)
    if diff.ok:
        typer.echo("dataset matches its manifest")
        return
    for label, items in (("changed", diff.changed), ("missing", diff.missing), ("added", diff.added)):
        for item in items:
            typer.echo(f"{label}: {item}")
    raise typer.Exit(1)


@data_app.command("synth")
@_errors
def data_synth(
    out: Annotated[Path, typer.Argument(help="Output folder (<identity>/<image>.jpg, already aligned).")],
    identities: Annotated[int, typer.Option(help="Number of identities.")] = 20,
    per_identity: Annotated[int, typer.Option(help="Images per identity.")] = 10,
    pairs: Annotated[int, typer.Option(help="Also write OUT/pairs.csv with this many pairs (0 = none).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the deterministic synthetic identity dataset (aligned cartoon faces for tests and demos)."""
    from facegate.data.storage import write_manifest
    from facegate.data.synthetic import write_synthetic_folder, write_synthetic_pairs

    files = write_synthetic_folder(out, identities, per_identity, seed)
    if pairs:
        write_synthetic_pairs(out / "pairs.csv", identities, per_identity, pairs, seed)
    m = write_manifest(out)
    typer.echo(f"wrote {len(files)} images of {identities} identities to {out} (version {m['version'][:12]})")


@data_app.command("push")
@_errors
def data_push(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="Local dataset or bundle directory.")],
    key: Annotated[str, typer.Argument(help="Destination prefix inside the store.")],
) -> None:
    """Upload a directory to the object store (settings storage.url: a path, or s3://bucket/prefix)."""
    from facegate.data.storage import open_storage

    settings = _settings(ctx)
    store = open_storage(settings.storage_url(), endpoint_url=settings.storage.s3_endpoint)
    n = store.upload_dir(src, key)
    typer.echo(f"uploaded {n} files to {store.url}/{key}")


@data_app.command("pull")
@_errors
def data_pull(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Prefix inside the store.")],
    dst: Annotated[Path, typer.Argument(help="Local directory.")],
) -> None:
    """Download a prefix of the object store into a directory, then check its manifest if it has one."""
    from facegate.data.storage import MANIFEST_NAME, check_manifest, open_storage

    settings = _settings(ctx)
    store = open_storage(settings.storage_url(), endpoint_url=settings.storage.s3_endpoint)
    n = store.download_dir(key, dst)
    typer.echo(f"downloaded {n} files from {store.url}/{key}")
    if (dst / MANIFEST_NAME).is_file():
        diff = check_manifest(dst)
        if not diff.ok:
            typer.echo(f"error: downloaded data does not match its manifest: {diff}", err=True)
            raise typer.Exit(1)
        typer.echo("manifest verified")
