"""Gallery backups: a consistent dump, sealed with a key derived from the gallery keys, in object storage.

- **Dump**: ``pg_dump --format=custom`` for PostgreSQL; SQLite's online backup API for the embedded default (a
  consistent copy while the verifier keeps writing). The chart's CronJob may run ``pg_dump`` in the PostgreSQL image
  itself (the same major version as the server) and hand the file over with ``dump_file``.
- **Sealed**: the whole dump is encrypted (AES-256-GCM in 1 MiB chunks, the STREAM construction: a chunk counter and a
  last-chunk flag in each nonce, so reordering, truncation or tampering fails). The key is derived from the active
  gallery key and a random per-backup salt, so a backup holds ciphertext only and restoring needs the gallery keys
  (``FACEGATE_GALLERY_KEYS``), which are backed up separately (docs/operations-retention.md).
- **Kept**: objects ``<prefix>/gallery-<UTC time>.fgbk``; after each backup only the newest ``keep`` remain.
- **Restore** goes into an *empty* database only (no table, or tables without a row), so it can never merge into
  or overwrite a live gallery.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from facegate.data.storage import Storage
from facegate.errors import FacegateError
from facegate.serve.gallery import KeyRing, prepare_sqlite_path

__all__ = ["BackupError", "BackupResult", "backup_gallery", "list_backups", "restore_gallery", "seal", "unseal"]

MAGIC = b"FGBK\x01"
CHUNK = 1 << 20
SUFFIX = ".fgbk"
_TAG = 16
# libpq reads these from the environment, so neither the password nor the URL ever reaches a command line.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}


class BackupError(FacegateError):
    """A backup or restore was refused or failed (non-empty target, wrong keys, damaged backup, tool missing)."""

    code = "backup_error"


@dataclass
class BackupResult:
    """One backup: its object key, sealed size, and the older copies removed to keep the last K."""

    key: str
    bytes: int
    dialect: str
    removed: list[str]


# -- sealing -------------------------------------------------------------------------------------------------------
def _aead(keys: KeyRing, key_id: str, salt: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(keys.derive("backup:" + salt.hex(), key_id))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _chunks(f: IO[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """``(chunk, is_last)`` pairs, reading one ahead; an empty input is one empty last chunk."""
    current = f.read(size)
    while True:
        following = f.read(size)
        yield current, not following
        if not following:
            return
        current = following


def seal(src: Path, dst: Path, keys: KeyRing, meta: dict[str, Any]) -> dict[str, Any]:
    """Encrypt ``src`` into ``dst`` with a fresh key derived from the active gallery key; returns the header."""
    salt = secrets.token_bytes(16)
    header = {"format": 1, "key_id": keys.active, "salt": base64.b64encode(salt).decode(), **meta}
    raw = json.dumps(header, sort_keys=True).encode()
    aead = _aead(keys, keys.active, salt)
    with src.open("rb") as fin, dst.open("wb") as fout:
        fout.write(MAGIC + len(raw).to_bytes(4, "big") + raw)
        for i, (chunk, last) in enumerate(_chunks(fin, CHUNK)):
            fout.write(aead.encrypt(_nonce(i, last), chunk, MAGIC + raw))
    return header


def _read_header(f: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    if f.read(len(MAGIC)) != MAGIC:
        raise BackupError("not a facegate backup (bad magic)", code="bad_backup")
    size = int.from_bytes(f.read(4), "big")
    raw = f.read(size)
    try:
        header = json.loads(raw)
    except ValueError:
        raise BackupError("backup header is damaged", code="bad_backup") from None
    if not isinstance(header, dict) or header.get("format") != 1:
        raise BackupError("unsupported backup format", code="bad_backup")
    return header, raw


def unseal(src: Path, dst: Path, keys: KeyRing) -> dict[str, Any]:
    """Decrypt a sealed backup into ``dst``; returns its header.

    Raises:
        BackupError: ``no_key`` without the gallery key it was sealed with, ``bad_backup`` if damaged or truncated.
    """
    from cryptography.exceptions import InvalidTag

    from facegate.serve.gallery import GalleryError

    with src.open("rb") as fin, dst.open("wb") as fout:
        header, raw = _read_header(fin)
        try:
            aead = _aead(keys, str(header["key_id"]), base64.b64decode(header["salt"]))
        except GalleryError as exc:
            raise BackupError(
                f"{exc.message}: a restore needs the gallery keys the backup was made with", code="no_key"
            ) from None
        for i, (chunk, last) in enumerate(_chunks(fin, CHUNK + _TAG)):
            try:
                fout.write(aead.decrypt(_nonce(i, last), chunk, MAGIC + raw))
            except InvalidTag:
                raise BackupError(
                    f"backup chunk {i} failed authentication (damaged, truncated or a different key with the same id)",
                    code="bad_backup",
                ) from None
    return header


# -- dumping and loading -------------------------------------------------------------------------------------------
def _pg_tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise BackupError(f"{name} not found (install the PostgreSQL client tools)", code="missing_tool")
    return found


def _libpq_env(url: URL) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    parts = {"host": url.host, "port": url.port, "user": url.username, "password": url.password}
    for key, value in [*parts.items(), *url.query.items()]:
        if key in _LIBPQ_ENV and value not in (None, ""):
            env[_LIBPQ_ENV[key]] = str(value if not isinstance(value, tuple) else value[0])
    return env


def _run(cmd: list[str], url: URL, what: str) -> None:
    # The tool is found by name (PATH or Debian's versioned folder) and every argument is ours or a path we made.
    proc = subprocess.run(  # noqa: S603
        cmd, env=_libpq_env(url), capture_output=True, text=True, timeout=6 * 3600, check=False
    )
    if proc.returncode != 0:
        # libpq's messages name hosts and databases, never the password (it travels in PGPASSWORD).
        raise BackupError(f"{what} failed: {proc.stderr.strip()[-2000:]}", code=f"{what.replace('_', '')}_failed")


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite gallery cannot be backed up or restored", code="bad_url")
    return Path(url.database)


def _sqlite_copy(src: Path, dst: Path) -> None:
    """SQLite's online backup API: a consistent copy even while another process writes."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        with target:
            source.backup(target)
        if target.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupError(f"{dst}: integrity check failed after the copy", code="bad_backup")
    finally:
        source.close()
        target.close()


def _dump(url: URL, plain: Path) -> None:
    if url.get_backend_name() == "sqlite":
        db = _sqlite_path(url)
        if not db.is_file():
            raise BackupError(f"{db}: no gallery database to back up", code="not_found")
        _sqlite_copy(db, plain)
    elif url.get_backend_name() == "postgresql":
        cmd = [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "--file", str(plain)]
        _run([*cmd, "--dbname", str(url.database)], url, "pg_dump")
    else:
        raise BackupError(f"cannot back up a {url.get_backend_name()} gallery", code="bad_url")


def _row_counts(url: URL) -> dict[str, int]:
    """Rows per table in the target database (no table at all: an empty dict)."""
    if url.get_backend_name() == "sqlite":
        db = _sqlite_path(url)
        if not db.exists() or db.stat().st_size == 0:
            return {}
    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            # Table names come from the database's own catalogue, quoted as identifiers.
            quote = conn.dialect.identifier_preparer.quote
            return {n: int(conn.execute(text(f"SELECT count(*) FROM {quote(n)}")).scalar() or 0) for n in names}  # noqa: S608
    except OperationalError as exc:
        where = url.render_as_string(hide_password=True)
        raise BackupError(f"cannot reach {where}: {str(exc.orig).strip()[:300]}", code="db_unreachable") from None
    finally:
        engine.dispose()


# -- the verbs -----------------------------------------------------------------------------------------------------
def list_backups(store: Storage, prefix: str) -> list[str]:
    """Backup object keys under ``prefix``, oldest first (their names sort by time)."""
    return [k for k in store.list(prefix.rstrip("/") + "/") if k.endswith(SUFFIX)]


def backup_gallery(
    url: str,
    store: Storage,
    keys: KeyRing,
    *,
    prefix: str,
    keep: int,
    dump_file: Path | None = None,
    now: datetime | None = None,
) -> BackupResult:
    """Dump the gallery, seal it, store it under ``prefix`` and keep only the newest ``keep`` backups.

    Args:
        url: The gallery's SQLAlchemy URL.
        store: Where backups go (object storage or a folder).
        keys: The gallery key ring (the active key seals the backup).
        prefix: Key prefix of the backups.
        keep: How many backups to keep (older ones are deleted after this one is stored).
        dump_file: A dump already made (the chart's ``pg_dump`` init container); removed once sealed.
        now: The backup's time stamp (its name).
    """
    if keep < 1:
        raise BackupError("keep must be at least 1", code="bad_keep")
    parsed = make_url(url)
    at = now or datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="facegate-backup-") as tmp:  # 0700: the plain dump is nobody else's
        plain = dump_file or Path(tmp) / "gallery.dump"
        if dump_file is None:
            _dump(parsed, plain)
        sealed = Path(tmp) / f"gallery{SUFFIX}"
        meta = {"dialect": parsed.get_backend_name(), "created": at.isoformat()}
        try:
            seal(plain, sealed, keys, meta)
        finally:
            plain.unlink(missing_ok=True)
        key = f"{prefix.rstrip('/')}/gallery-{at:%Y%m%dT%H%M%S%fZ}{SUFFIX}"
        store.put_file(key, sealed)
        size = sealed.stat().st_size
    existing = list_backups(store, prefix)
    removed = existing[:-keep] if key in existing else []  # never prune if this backup is not listed yet
    for old in removed:
        store.delete(old)
    return BackupResult(key=key, bytes=size, dialect=parsed.get_backend_name(), removed=removed)


def restore_gallery(url: str, store: Storage, keys: KeyRing, *, prefix: str, name: str = "latest") -> dict[str, Any]:
    """Bring a backup back into an empty database.

    Args:
        url: The (empty) target database.
        store: Where the backups are.
        keys: The gallery keys the backup was sealed with (and that decrypt its crops).
        prefix: Key prefix of the backups.
        name: ``latest``, a backup's file name, or its full object key.

    Returns:
        The backup's key and header, and the restored row counts.

    Raises:
        BackupError: ``not_empty`` for a target holding any row, ``not_found``, ``no_key``, ``bad_backup``.
    """
    parsed = make_url(url)
    available = list_backups(store, prefix)
    if name == "latest":
        if not available:
            raise BackupError(f"no backup under {store.url}/{prefix}", code="not_found")
        key = available[-1]
    else:
        key = name if "/" in name else f"{prefix.rstrip('/')}/{name}"
        if key not in available:
            hint = ", ".join(k.rsplit("/", 1)[-1] for k in available[-5:]) or "none"
            raise BackupError(f"no backup {name!r} under {store.url}/{prefix} (latest: {hint})", code="not_found")
    with tempfile.TemporaryDirectory(prefix="facegate-restore-") as tmp:
        sealed, plain = Path(tmp) / f"gallery{SUFFIX}", Path(tmp) / "gallery.dump"
        store.get_file(key, sealed)
        with sealed.open("rb") as f:
            dialect = _read_header(f)[0].get("dialect")
        if dialect != parsed.get_backend_name():
            raise BackupError(
                f"backup is of a {dialect} gallery; the target is {parsed.get_backend_name()}", code="wrong_dialect"
            )
        _refuse_non_empty(parsed)
        header = unseal(sealed, plain, keys)
        _refuse_non_empty(parsed)  # again, right before writing: nothing may have arrived meanwhile
        if parsed.get_backend_name() == "sqlite":
            prepare_sqlite_path(url)
            _sqlite_copy(plain, _sqlite_path(parsed))
        else:
            tables = bool(_row_counts(parsed))  # empty tables (a gallery opened once): replaced, not merged
            cmd = [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
            cmd += ["--clean", "--if-exists"] if tables else []
            _run([*cmd, "--dbname", str(parsed.database), str(plain)], parsed, "pg_restore")
    return {"key": key, "header": header, "rows": _row_counts(parsed), "missing_keys": _missing_keys(parsed, keys)}


def _missing_keys(url: URL, keys: KeyRing) -> list[str]:
    """Key ids the restored crops are sealed with that the ring lacks (crops sealed before a rotation need them)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            used = {str(r[0]) for r in conn.execute(text("SELECT DISTINCT key_id FROM crops"))}
    finally:
        engine.dispose()
    return sorted(used - set(keys.keys))


def _refuse_non_empty(url: URL) -> None:
    counts = {t: n for t, n in _row_counts(url).items() if n}
    if counts:
        where = url.render_as_string(hide_password=True)
        held = ", ".join(f"{t}: {n}" for t, n in sorted(counts.items()))
        raise BackupError(
            f"refusing to restore into {where}: it is not empty ({held}); restore into a new, empty database",
            code="not_empty",
        )
