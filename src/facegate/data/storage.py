"""Storage for datasets and model bundles, plus content-addressed dataset manifests.

Two backends: a local directory (the embedded default) and S3-compatible object storage (MinIO in the cluster).

A manifest lists every file of a dataset (relative path, identity, sha256, bytes); its ``version`` is the sha256
of the canonical file list, so the same content always has the same version and any changed, added or removed
file changes it. :func:`check_manifest` names exactly which files differ.

S3 settings come from the environment: ``FACEGATE_S3_ENDPOINT`` (or ``AWS_ENDPOINT_URL``) for MinIO, and the
standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION``, which boto3 reads itself:
facegate never copies credentials into its own objects, configs or logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from facegate.errors import DataError, StorageError
from facegate.utils import atomic_write_bytes, atomic_write_text, canonical_json, sha256_file

__all__ = [
    "MANIFEST_NAME",
    "LocalStorage",
    "ManifestDiff",
    "S3Storage",
    "Storage",
    "build_manifest",
    "check_manifest",
    "open_storage",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"


def _clean_key(key: str) -> str:
    """Normalise an object key and refuse anything that could escape its root."""
    parts = PurePosixPath(key.replace("\\", "/")).parts
    if not parts or any(p in ("..", "") for p in parts) or key.startswith("/"):
        raise StorageError(f"invalid object key {key!r}", code="bad_key")
    return "/".join(parts)


class Storage(ABC):
    """A flat key -> bytes store with directory helpers."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (atomically: readers never see a partial object)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read an object; raises :class:`StorageError` (code ``not_found``) when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under a prefix, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object (no error if absent)."""

    def put_file(self, key: str, path: Path) -> None:
        """Store a local file (backends override this to stream instead of reading it whole)."""
        self.put_bytes(key, path.read_bytes())

    def get_file(self, key: str, path: Path) -> None:
        """Fetch an object into a local file, atomically."""
        atomic_write_bytes(path, self.get_bytes(key))

    def upload_dir(self, local: str | Path, prefix: str) -> int:
        """Copy a local directory tree under ``prefix``; returns the number of files.

        Hidden files (journals, temporary files of an interrupted write) are local state, not data: they stay.
        """
        root = Path(local)
        if not root.is_dir():
            raise StorageError(f"{root}: not a directory")
        n = 0
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts):
                self.put_file(f"{prefix.rstrip('/')}/{rel}" if prefix else rel, f)
                n += 1
        return n

    def download_dir(self, prefix: str, local: str | Path) -> int:
        """Copy every object under ``prefix`` into a local directory; returns the number of files."""
        root = Path(local)
        base = prefix.rstrip("/") + "/" if prefix else ""
        n = 0
        for key in self.list(base):
            if key.endswith("/"):
                continue  # an S3 console "folder" marker, not data
            rel = _clean_key(key[len(base) :])
            self.get_file(key, root / rel)
            n += 1
        return n


class LocalStorage(Storage):
    """Objects as files under a root directory (created on first write, not on construction)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""
        atomic_write_bytes(self._path(key), data)

    def get_bytes(self, key: str) -> bytes:
        """Read an object."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.url}: no object {key!r}", code="not_found") from None

    def exists(self, key: str) -> bool:
        """Whether an object exists."""
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under a prefix, sorted."""
        if not self.root.is_dir():
            return iter(())
        keys = (f.relative_to(self.root).as_posix() for f in self.root.rglob("*") if f.is_file())
        return iter(sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith(".")))

    def delete(self, key: str) -> None:
        """Delete an object."""
        self._path(key).unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        """Copy a file in without reading it into memory (temp file + rename)."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def get_file(self, key: str, path: Path) -> None:
        """Copy an object out without reading it into memory."""
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"{self.url}: no object {key!r}", code="not_found")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, path)


class S3Storage(Storage):
    """S3-compatible storage (AWS S3, MinIO) through boto3.

    Args:
        bucket: Bucket name.
        prefix: Key prefix inside the bucket.
        endpoint_url: Endpoint for MinIO and other S3-compatible stores; ``FACEGATE_S3_ENDPOINT`` or
            ``AWS_ENDPOINT_URL`` when omitted.
        client: A ready boto3 client (tests, custom sessions).
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, client: Any = None) -> None:
        if not bucket:
            raise StorageError("S3 storage needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            import boto3

            endpoint = endpoint_url or os.environ.get("FACEGATE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
            client = boto3.client("s3", endpoint_url=endpoint or None)
        self.client = client

    def _key(self, key: str) -> str:
        k = _clean_key(key)
        return f"{self.prefix}/{k}" if self.prefix else k

    def _error(self, exc: Exception, key: str) -> StorageError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(f"{self.url}: no object {key!r}", code="not_found")
        # Only the error code and type: botocore messages can echo request details.
        return StorageError(f"{self.url}: S3 request for {key!r} failed ({type(exc).__name__} {code})".strip())

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (an S3 PUT is atomic)."""
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ChecksumSHA256=_b64_sha256(data),
            )
        except Exception as exc:
            raise self._error(exc, key) from None

    def get_bytes(self, key: str) -> bytes:
        """Read an object."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except Exception as exc:
            raise self._error(exc, key) from None

    def exists(self, key: str) -> bool:
        """Whether an object exists."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            err = self._error(exc, key)
            if err.code == "not_found":
                return False
            raise err from None
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under a prefix, sorted (paginated listing)."""
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except Exception as exc:
            raise self._error(exc, prefix) from None
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        """Delete an object."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error(exc, key) from None

    def put_file(self, key: str, path: Path) -> None:
        """Stream a file up (boto3 switches to multipart above 8 MB: no 5 GB single-PUT limit, bounded memory)."""
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except Exception as exc:
            raise self._error(exc, key) from None

    def get_file(self, key: str, path: Path) -> None:
        """Stream an object down into a temporary file, then rename it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp))
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise self._error(exc, key) from None
        os.replace(tmp, path)


def _b64_sha256(data: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def open_storage(url: str, *, endpoint_url: str | None = None) -> Storage:
    """Open storage by URL: ``s3://bucket[/prefix]``, ``file:///path`` or a plain path."""
    if url.startswith("s3://"):
        rest = url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        return S3Storage(bucket, prefix, endpoint_url=endpoint_url)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" in url:
        raise StorageError(f"unsupported storage URL scheme in {url.split('://')[0]!r}; use s3:// or a path")
    return LocalStorage(url)


# --- manifests ---------------------------------------------------------------------------------------------------
def build_manifest(root: str | Path) -> dict[str, Any]:
    """Describe every file of a dataset directory.

    Files directly in the root and hidden files (journals, temp files) are left out; the identity is the first
    path component.

    Returns:
        ``{"version": sha256, "n_files", "n_identities", "bytes", "files": [{"path", "identity", "sha256",
        "bytes"}, ...]}``.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: dataset directory not found")
    files: list[dict[str, Any]] = []
    for f in sorted(base.rglob("*")):
        rel = f.relative_to(base)
        if not f.is_file() or len(rel.parts) < 2 or any(p.startswith(".") for p in rel.parts):
            continue
        files.append(
            {"path": rel.as_posix(), "identity": rel.parts[0], "sha256": sha256_file(f), "bytes": f.stat().st_size}
        )
    version = hashlib.sha256(canonical_json(files).encode()).hexdigest()
    return {
        "version": version,
        "n_files": len(files),
        "n_identities": len({f["identity"] for f in files}),
        "bytes": sum(int(f["bytes"]) for f in files),
        "files": files,
    }


def write_manifest(root: str | Path) -> dict[str, Any]:
    """Build and write ``manifest.json`` into the dataset root; returns it."""
    manifest = build_manifest(root)
    atomic_write_text(Path(root) / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    return manifest


@dataclass(frozen=True)
class ManifestDiff:
    """Differences between a dataset directory and a manifest."""

    changed: list[str]
    missing: list[str]
    added: list[str]

    @property
    def ok(self) -> bool:
        """True when the directory matches the manifest exactly."""
        return not (self.changed or self.missing or self.added)


def check_manifest(root: str | Path, manifest: dict[str, Any] | None = None) -> ManifestDiff:
    """Compare a dataset directory with its manifest (``manifest.json`` in the root by default)."""
    base = Path(root)
    if manifest is None:
        path = base / MANIFEST_NAME
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read manifest ({exc})") from None
    expected = {f["path"]: f for f in manifest.get("files", [])}
    actual = {f["path"]: f for f in build_manifest(base)["files"]}
    changed = sorted(p for p in expected.keys() & actual.keys() if expected[p]["sha256"] != actual[p]["sha256"])
    return ManifestDiff(
        changed=changed,
        missing=sorted(expected.keys() - actual.keys()),
        added=sorted(actual.keys() - expected.keys()),
    )
