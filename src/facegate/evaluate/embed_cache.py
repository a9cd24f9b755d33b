"""An on-disk embedding cache keyed by (model, preprocessing, image content), so repeated gates do not re-embed.

The pipeline's gate scores the champion on every run, on the same pair sets, and ``evaluate`` is re-run on the same
sets after every change of report or threshold: the champion's embeddings of an unchanged image never change. The
cache holds them in one SQLite file (``<home>/cache/embeddings.sqlite`` by default).

- **Model key**: registry name, version, the SHA-256 of the weights file (a retrained bundle that kept its version
  string still misses), the precision when it is not f32 (a bf16 run never reads or fills f32 entries), flip, the
  alignment mode and the aligner's policy and detector settings. An embedder without a weights file on disk gets no
  key and is never cached.
- **Image key**: the SHA-256 of the encoded bytes (file content, not path: a renamed file hits, a re-saved one
  misses). Images that fail to load are never cached, so their failure is reported on every run.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits
from facegate.data.pairs import ArraySource, BytesSource, FolderSource, ImageSource
from facegate.errors import FacegateError
from facegate.faces.pipeline import FaceAligner
from facegate.models.base import Embedder

__all__ = ["CACHE_FILE", "EmbeddingCache", "file_sha256", "image_digest", "model_key"]

CACHE_FILE = "embeddings.sqlite"
_file_digests: dict[tuple[str, int, int], str] = {}
_file_digests_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for the life of the process (weights are large)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _file_digests_lock:
        known = _file_digests.get(key)
    if known is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        known = h.hexdigest()
        with _file_digests_lock:
            _file_digests[key] = known
    return known


def _settings_of(obj: Any) -> str:
    """A stable description of an object's plain settings (a repr would print its address)."""
    if obj is None:
        return "default"
    plain = {k: v for k, v in sorted(vars(obj).items()) if isinstance(v, int | float | str | bool | tuple)}
    return f"{type(obj).__name__}{plain}"


def model_key(embedder: Embedder, *, flip: bool, mode: str, aligner: FaceAligner) -> str | None:
    """The cache namespace of one model under one preprocessing, or ``None`` when the model cannot be keyed."""
    digest = getattr(embedder, "weights_sha256", None)
    weights = getattr(embedder, "weights", None)
    if digest is None and isinstance(weights, Path) and weights.is_file():
        digest = file_sha256(weights)
    if digest is None:
        return None
    # A detector built lazily is the default one; one given explicitly is described by its settings.
    detector = _settings_of(getattr(aligner, "_detector", None))
    # f32 keeps the key it always had: its entries stay valid whichever runtime computed them (they agree to ~1e-7).
    precision = "" if embedder.precision == "f32" else f"|precision={embedder.precision}"
    return (
        f"{embedder.name}|{embedder.version}|{digest}{precision}|flip={int(flip)}|align={mode}|"
        f"{_settings_of(aligner.policy)}|{detector}"
    )


def image_digest(source: ImageSource, key: str, limits: ImageLimits = DEFAULT_LIMITS) -> str | None:
    """SHA-256 of the encoded image behind ``key``, or ``None`` when it cannot be read (the loader reports why)."""
    try:
        if isinstance(source, FolderSource):
            with source.path(key).open("rb") as fh:
                data = fh.read(limits.max_bytes + 1)
        elif isinstance(source, BytesSource):
            data = bytes(source.blobs[int(key)])
        elif isinstance(source, ArraySource):
            arr = np.ascontiguousarray(source.images[int(key)])
            data = repr(arr.shape).encode() + arr.tobytes()
        else:
            return None
    except (OSError, ValueError, IndexError, TypeError, FacegateError):  # unreadable: the loader will say why
        return None
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """Embeddings by (model key, image digest) in one SQLite file.

    Args:
        path: The database file (created with its folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the evaluation's threads; SQLite serialises, the lock keeps cursors apart.
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            # A cache can be rebuilt: no fsync per batch (WAL keeps the file consistent after a crash anyway).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, image TEXT NOT NULL, "
                "embedding BLOB NOT NULL, PRIMARY KEY (model, image))"
            )

    @classmethod
    def at_home(cls, home: str | Path) -> EmbeddingCache:
        """The cache of a facegate home (``<home>/cache/embeddings.sqlite``)."""
        return cls(Path(home) / "cache" / CACHE_FILE)

    def get_many(self, model: str, digests: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached embeddings among ``digests`` for ``model``."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(digests))
        with self._lock:
            for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT image, embedding FROM embeddings WHERE model = ? AND image IN ({marks})",  # noqa: S608
                    (model, *part),
                )
                for image, blob in rows:
                    found[image] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store embeddings; returns how many rows were written."""
        rows = [(model, d, np.asarray(e, dtype=np.float32).tobytes()) for d, e in items]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
        return len(rows)

    def count(self, model: str | None = None) -> int:
        """Rows held (for one model key, or all)."""
        with self._lock:
            if model is None:
                row = self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
