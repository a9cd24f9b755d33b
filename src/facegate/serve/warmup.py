"""Warm-up before readiness: the first check-in should cost what the hundredth does.

Much of a cold server's first request is one-time work: each preprocess thread creates its own face detector (OpenCV's
detector keeps per-call state), the detector and the embedding model allocate for their input sizes on their first
forward pass, the JPEG decoder and the database's statement cache are cold. :func:`warm_up` does all of it once, at
the served sizes, on synthetic data, before the model reports ready, so Kubernetes sends no kiosk to a cold pod (and
a canary scaled from zero by Knative answers its first check-in at its usual speed).

Nothing is written: the template lookup only reads, and the audit insert is rolled back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

import numpy as np

from facegate.data.imageio import decode_image, encode_jpeg
from facegate.errors import FacegateError
from facegate.faces.align import align_face
from facegate.serve.workers import FORWARD_SLICE

if TYPE_CHECKING:
    from facegate.serve.models import Runtime

__all__ = ["warm_up"]

log = logging.getLogger("facegate.serve")

#: The size a kiosk camera sends (the bench's and the chart's check-in photo).
CHECK_IN_SIZE = (480, 640)
#: Landmarks of a face in the middle of a 640x480 frame (eyes, nose, mouth corners), for the warp.
_LANDMARKS = np.array([[280, 200], [360, 200], [320, 250], [290, 300], [350, 300]], dtype=np.float32)


def synthetic_check_in(seed: int = 0) -> bytes:
    """A 640x480 JPEG of smooth noise: decodes and runs through the detector like a photo (and shows no face)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (CHECK_IN_SIZE[0] // 16, CHECK_IN_SIZE[1] // 16, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)
    return encode_jpeg(image, quality=90)


def _one_thread(runtime: Runtime, jpeg: bytes) -> None:
    """What a check-in does on a preprocess thread: decode, detect (building this thread's detector), align."""
    image = decode_image(jpeg, limits=runtime.limits, name="warm-up")
    aligner = runtime.aligner()
    with contextlib.suppress(FacegateError):  # no face in noise: the detector ran all the same
        aligner.prepare(image, "always")
    face = align_face(image, _LANDMARKS)
    if runtime.liveness is not None:
        runtime.liveness.score(image, (240.0, 140.0, 160.0, 200.0))
    runtime.embedder.embed(face[None])


def _database(runtime: Runtime) -> None:
    """Open the pool and compile the template lookup and the audit insert (rolled back: nothing is recorded)."""
    from sqlalchemy.orm import Session

    from facegate.serve.gallery import AuditEntry

    runtime.gallery.template("facegate-warm-up", runtime.embedder.version)  # a read: harmless whoever has the id
    if runtime.decisions is not None:
        runtime.decisions.warm()  # the writer's own connection and statement
    with Session(runtime.gallery.engine) as session:
        session.add(AuditEntry(action="verify", kiosk="warm-up", student_id="facegate-warm-up", decision="retry"))
        session.flush()
        session.rollback()


def warm_up(runtime: Runtime) -> float:
    """Warm every preprocess thread, the embedder and the database; returns the seconds it took.

    The preprocess pool's threads are made to start together (a barrier), so each builds its own detector now
    rather than on some kiosk's request later.
    """
    t0 = time.perf_counter()
    jpeg = synthetic_check_in()
    threads = runtime.settings.serve.preprocess_threads
    # The embed requests' own (low-priority) threads too: each keeps a detector and its buffers once it has run
    # one, so warming them now makes that a start-up cost, not memory a burst of embeds leaves behind.
    bulk_threads = max(1, threads // 2)
    futures = _on_every_thread(runtime.executor, threads, lambda: _one_thread(runtime, jpeg))
    futures += _on_every_thread(runtime.bulk, bulk_threads, lambda: _one_thread(runtime, jpeg))
    # The thread that embeds check-ins, at the largest batch a forward pass gets (the runtime keeps its buffers).
    runtime.batcher.warm(np.zeros((FORWARD_SLICE, 112, 112, 3), dtype=np.uint8))
    _database(runtime)
    for f in futures:
        f.result()
    seconds = time.perf_counter() - t0
    log.info(
        "warmed up", extra={"fields": {"seconds": round(seconds, 3), "threads": threads, "bulk_threads": bulk_threads}}
    )
    return seconds


def _on_every_thread(pool: Executor, threads: int, work: Callable[[], None]) -> list[Future[None]]:
    """Run ``work`` once on each of a pool's ``threads`` threads (a barrier holds each so the next starts another)."""
    barrier = threading.Barrier(threads)

    def task() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=10)
        work()

    return [pool.submit(task) for _ in range(threads)]
