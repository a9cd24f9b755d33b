"""Reindex the gallery for a new model: sharded, parallel and resumable.

A rollout needs a template per student for the challenger before the canary takes traffic (about 150,000 photos for
a university of 50,000 students). :func:`reindex_shard` is the one library function that does it, for one shard of
the students; every way of running it is that function over shards:

- ``facegate gallery reindex --workers N`` runs the N shards in N local processes (both cores of a small machine);
- the training pipeline fans the same shards out as a ``dsl.ParallelFor`` of ``reindex`` steps (one pod each), all
  writing to the cluster's PostgreSQL gallery;
- the serve app's admin endpoint and :meth:`Gallery.reindex` run the single shard in process.

**Resumable**: a student's template is written, once, in the same short transaction as the rest of its chunk. A run
that is killed loses at most the chunk in flight; the next run lists only the students of its shard that still lack
a template for this model version, so it continues where the last one stopped and writes no template twice (a
template for this version can only have come from the student's current crops: re-enrollment deletes every
template). ``resume=False`` rebuilds them all.

**Old templates stay**: only this version's rows are ever written; the champion's templates keep serving until the
rollout finishes or rolls back, and :func:`drop_templates` removes a version's rows when it is retired.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from facegate.models.base import Embedder, l2_normalize
from facegate.serve.gallery import AuditEntry, Crop, Gallery, KeyRing, Student, Template

__all__ = [
    "ReindexReport",
    "drop_templates",
    "reindex",
    "reindex_shard",
    "shard_of",
]


@dataclass
class ReindexReport:
    """What a reindex did.

    Attributes:
        model_version: The version templates were built for.
        shards: Shards covered (``"0/1"``, or ``"0-1/2"`` for a combined report).
        built: Templates written by this run.
        skipped: Students of the shard that already had one (a resumed run).
        photos: Photos embedded.
        seconds: Wall time.
    """

    model_version: str
    shards: str
    built: int = 0
    skipped: int = 0
    photos: int = 0
    seconds: float = 0.0

    @property
    def photos_per_second(self) -> float:
        """Embedding throughput of this run."""
        return self.photos / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "photos_per_second": round(self.photos_per_second, 2)}


def shard_of(student_id: str, shards: int) -> int:
    """The shard of a student: a stable hash of the id, so every process and pod agrees without coordination."""
    return int.from_bytes(hashlib.sha256(student_id.encode()).digest()[:8], "big") % shards


def _pending(gallery: Gallery, version: str, shard: int, shards: int, resume: bool) -> tuple[list[str], int]:
    """Ids of the shard's students to index, in id order, and how many of the shard already have a template."""
    query = select(Student.id).order_by(Student.id)
    done_q = exists().where(Template.student_id == Student.id, Template.model_version == version)
    with Session(gallery.engine) as session:
        todo = [s for s in session.scalars(query.where(~done_q) if resume else query) if shard_of(s, shards) == shard]
        skipped = 0
        if resume:
            skipped = sum(1 for s in session.scalars(query.where(done_q)) if shard_of(s, shards) == shard)
    return todo, skipped


def _load_faces(gallery: Gallery, ids: Sequence[str]) -> list[tuple[str, list[np.ndarray]]]:
    """Decrypt and decode the crops of ``ids`` (runs on a thread while the previous chunk is embedded)."""
    faces: dict[str, list[np.ndarray]] = {sid: [] for sid in ids}
    with Session(gallery.engine) as session:
        for crop in session.scalars(select(Crop).where(Crop.student_id.in_(ids)).order_by(Crop.id)):
            faces[crop.student_id].append(gallery._decrypt_face(crop.student_id, crop))
    return [(sid, f) for sid, f in faces.items() if f]


def _write(gallery: Gallery, version: str, built: Sequence[tuple[str, np.ndarray, int]]) -> list[str]:
    """Insert the chunk's templates in one transaction; a row another worker wrote meanwhile is left as it is."""
    written: list[str] = []
    with Session(gallery.engine) as session, session.begin():
        for sid, emb, count in built:
            if session.get(Template, (sid, version)) is None:
                session.add(Template(student_id=sid, model_version=version, embedding=emb.tobytes(), n_photos=count))
                written.append(sid)
    return written


def _replace(gallery: Gallery, version: str, built: Sequence[tuple[str, np.ndarray, int]]) -> list[str]:
    """Insert or overwrite the chunk's templates in one transaction (a rebuild: ``resume=False``)."""
    with Session(gallery.engine) as session, session.begin():
        for sid, emb, count in built:
            row = session.get(Template, (sid, version))
            if row is None:
                session.add(Template(student_id=sid, model_version=version, embedding=emb.tobytes(), n_photos=count))
            else:
                row.embedding, row.n_photos, row.created_at = emb.tobytes(), count, datetime.now(UTC)
    return [sid for sid, _, _ in built]


def reindex_shard(
    gallery: Gallery,
    embedder: Embedder,
    *,
    shard: int = 0,
    shards: int = 1,
    chunk: int = 32,
    resume: bool = True,
    on_written: Callable[[list[str]], None] | None = None,
) -> ReindexReport:
    """Build ``embedder.version`` templates for one shard of the gallery's students.

    Students are taken ``chunk`` at a time: their crops are decrypted and decoded on a thread while the previous
    chunk's photos go through the network in one batch, and each chunk's templates are written in one short
    transaction (a long write lock would make a live verifier's audit writes time out on SQLite).

    Args:
        gallery: The gallery (its key ring must decrypt the crops).
        embedder: The new model.
        shard: This shard, ``0 <= shard < shards``.
        shards: How many shards the students are split into (:func:`shard_of`).
        chunk: Students per transaction.
        resume: Skip students that already have a template for this version (see the module docstring).
        on_written: Called with the ids of each committed chunk (progress, tests).

    Returns:
        The report (one audit entry records it too).
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    t0 = time.perf_counter()
    version = embedder.version
    report = ReindexReport(version, f"{shard}/{shards}")
    todo, report.skipped = _pending(gallery, version, shard, shards, resume)
    store = _write if resume else _replace
    chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt: Future[list[tuple[str, list[np.ndarray]]]] | None = (
            pool.submit(_load_faces, gallery, chunks[0]) if chunks else None
        )
        for i in range(len(chunks)):
            assert nxt is not None
            loaded = nxt.result()
            # Prefetch the next chunk's crops: decryption and JPEG decoding overlap this chunk's forward pass.
            nxt = pool.submit(_load_faces, gallery, chunks[i + 1]) if i + 1 < len(chunks) else None
            if not loaded:
                continue
            counts = [len(f) for _, f in loaded]
            embs = embedder.embed(np.stack([face for _, f in loaded for face in f]))
            bounds = np.cumsum([0, *counts])
            built = [
                (sid, l2_normalize(embs[a:b].mean(axis=0, keepdims=True))[0], b - a)
                for (sid, _), a, b in zip(loaded, bounds[:-1], bounds[1:], strict=True)
            ]
            written = store(gallery, version, built)
            report.built += len(written)
            report.photos += int(sum(counts))
            if on_written is not None:
                on_written(written)
    report.seconds = time.perf_counter() - t0
    with Session(gallery.engine) as session, session.begin():
        session.add(AuditEntry(action="reindex", student_id="*", model_version=version, detail=report.to_dict()))
    return report


def _worker(
    url: str, model: str, keys: list[tuple[str, bytes]], shard: int, shards: int, chunk: int, resume: bool, threads: int
) -> dict[str, Any]:
    """One local worker process: its own gallery connection, model and share of the cores."""
    import cv2

    from facegate.bundles import load_embedder

    cv2.setNumThreads(threads)  # decoding too: N workers share the cores instead of each spawning a thread per core
    embedder = load_embedder(model)
    embedder.limit_threads(threads)
    gallery = Gallery(url, KeyRing(keys))
    rep = reindex_shard(gallery, embedder, shard=shard, shards=shards, chunk=chunk, resume=resume)
    return asdict(rep)


def reindex(
    url: str,
    model: str,
    *,
    keys: KeyRing | None = None,
    workers: int = 1,
    chunk: int = 32,
    resume: bool = True,
) -> ReindexReport:
    """Reindex the gallery at ``url`` for ``model`` (a name, bundle or ``models:/`` URI) on ``workers`` processes.

    ``workers`` processes each run :func:`reindex_shard` on their shard (``workers`` shards), so they share no
    state but the database. One worker runs in this process and already keeps two cores busy (OpenCV's threads for
    the forward pass, a thread decrypting and decoding the next chunk); on the loaded 2-core development machine two
    processes were slower than one (docs/performance-eval.md), so more workers are for machines with more cores.

    Returns:
        The combined report (``seconds`` is the wall time of the whole run, start-up included).
    """
    ring = keys or KeyRing.from_env()
    t0 = time.perf_counter()
    if workers <= 1:
        from facegate.bundles import load_embedder

        rep = reindex_shard(Gallery(url, ring), load_embedder(model), chunk=chunk, resume=resume)
        rep.seconds = time.perf_counter() - t0
        return rep
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    key_list = list(ring.keys.items())
    key_list.sort(key=lambda kv: kv[0] != ring.active)  # the active key first, as KeyRing expects
    # spawn, not fork: the parent may hold database connections and OpenCV threads that a fork would copy.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_worker, url, model, key_list, shard, workers, chunk, resume, threads)
            for shard in range(workers)
        ]
        parts = [ReindexReport(**f.result()) for f in futures]
    return ReindexReport(
        model_version=parts[0].model_version,
        shards=f"0-{workers - 1}/{workers}",
        built=sum(p.built for p in parts),
        skipped=sum(p.skipped for p in parts),
        photos=sum(p.photos for p in parts),
        seconds=time.perf_counter() - t0,
    )


def drop_templates(gallery: Gallery, model_version: str) -> int:
    """Delete every template of ``model_version`` (a retired or rolled-back model); returns how many."""
    with Session(gallery.engine) as session, session.begin():
        result = session.execute(delete(Template).where(Template.model_version == model_version))
        session.add(AuditEntry(action="drop_templates", student_id="*", model_version=model_version))
        return int(getattr(result, "rowcount", 0) or 0)
