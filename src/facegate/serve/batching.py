"""Micro-batching: faces from concurrent requests share one forward pass.

A CPU network runs a batch of 8 faces in far less than 8 times the single-face time (OpenVINO INT8 iResNet-50:
10.3 vs 12.4 ms/face on 2 cores, see README), and a kiosk fleet sends many small requests at once. One worker
thread owns the embedder (OpenVINO and OpenCV nets are not safe to call from several threads at once); while it runs
a batch, newly arriving faces queue up and form the next one. ``max_wait_s`` bounds how long a batch may wait for
company, and it waits only while other requests are on their way (callers announce themselves with
:meth:`MicroBatcher.coming` while they decode and detect), so a lone check-in on a quiet server does not wait at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from facegate.models.base import Embedder
from facegate.serve.metrics import BATCH_SIZE, STAGE_SECONDS, child

__all__ = ["MicroBatcher"]


@dataclass
class _Item:
    faces: np.ndarray
    future: asyncio.Future[np.ndarray]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Embed aligned faces from concurrent callers in shared batches.

    Args:
        embedder: The model; only the batcher's worker thread calls it.
        max_batch: Most faces per forward pass.
        max_wait_s: Longest a batch waits for more faces once it has one.
    """

    def __init__(self, embedder: Embedder, *, max_batch: int = 16, max_wait_s: float = 0.002) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facegate-embed")
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._coming = 0
        self._forwarding = 0  # batches handed to the worker thread and not yet back

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Announce a caller that will (probably) submit faces soon: a forming batch waits for it (event loop only)."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1

    def alone(self) -> bool:
        """Whether the one caller on its way (:meth:`coming`) is the only one: nothing queued, forming or running.

        Read from a preprocess thread without a lock: a stale answer only picks the other of two correct paths
        (the embedder itself is serialised by its own lock).
        """
        queue = self._queue
        return self._coming <= 1 and self._forwarding == 0 and (queue is None or queue.empty())

    def embed_here(self, faces: np.ndarray) -> np.ndarray:
        """Embed on the calling thread, for a lone caller (:meth:`alone`): no batch to join, no thread to wake.

        A check-in embedded where it was aligned saves a round trip through the event loop and the worker thread
        (two thread wake-ups, each a scheduling delay on a busy machine).
        """
        start = time.perf_counter()
        emb = self._forward(faces)
        child(BATCH_SIZE, self.embedder.name).observe(len(faces))
        child(STAGE_SECONDS, "queue", self.embedder.name).observe(0.0)
        child(STAGE_SECONDS, "embed", self.embedder.name).observe(time.perf_counter() - start)
        return emb

    async def embed(self, faces: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, D)`` for aligned faces ``(n, 112, 112, 3)``, batched with other callers' faces."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # Started lazily on the loop that serves requests (uvicorn's, or a test client's).
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run(), name="facegate-microbatcher")
        assert self._queue is not None
        if len(faces) > self.max_batch:
            # A large request goes in max_batch-sized turns, so a kiosk's single face queued behind it waits for
            # one chunk, not for the whole request.
            parts = [await self._submit(faces[i : i + self.max_batch]) for i in range(0, len(faces), self.max_batch)]
            return np.concatenate(parts)
        return await self._submit(faces)

    async def _submit(self, faces: np.ndarray) -> np.ndarray:
        assert self._queue is not None
        item = _Item(faces, asyncio.get_running_loop().create_future())
        await self._queue.put(item)
        return await item.future

    def depth(self) -> int:
        """Batches waiting for the worker (0 before the first request)."""
        return 0 if self._queue is None else self._queue.qsize()

    def warm(self, faces: np.ndarray) -> None:
        """Run one forward pass on the batcher's own thread (the warm-up: a runtime may set up per calling thread)."""
        self._executor.submit(self._forward, faces).result()

    def close(self) -> None:
        """Stop the worker task and thread; callers still waiting get an error instead of hanging."""
        if self._task is not None:
            self._task.cancel()
        if self._queue is not None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if not item.future.done():
                    item.future.set_exception(RuntimeError("the embedding service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            n = len(batch[0].faces)
            deadline = loop.time() + self.max_wait_s
            while n < self.max_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or self._coming == 0:
                        break  # nobody else is on the way: waiting would only add latency
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                batch.append(item)
                n += len(item.faces)
            live = [b for b in batch if not b.future.done()]  # a caller that went away needs no answer
            if not live:
                continue
            start = time.perf_counter()
            for b in live:
                child(STAGE_SECONDS, "queue", self.embedder.name).observe(start - b.queued_at)
            try:
                stacked = np.concatenate([b.faces for b in live]) if len(live) > 1 else live[0].faces
                self._forwarding += 1
                try:
                    emb = await loop.run_in_executor(self._executor, self._forward, stacked)
                finally:
                    self._forwarding -= 1
            except asyncio.CancelledError:
                for b in live:  # shutting down mid-batch: fail the batch rather than leave its callers waiting
                    if not b.future.done():
                        b.future.set_exception(RuntimeError("the embedding service is shutting down"))
                raise
            except Exception as exc:  # the error belongs to every caller in the batch, not to this loop
                for b in live:
                    if not b.future.done():
                        b.future.set_exception(exc)
                continue
            child(BATCH_SIZE, self.embedder.name).observe(len(stacked))
            child(STAGE_SECONDS, "embed", self.embedder.name).observe(time.perf_counter() - start)
            offset = 0
            for b in live:
                k = len(b.faces)
                if not b.future.done():
                    b.future.set_result(emb[offset : offset + k])
                offset += k

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        return self.embedder.embed(faces, batch_size=self.max_batch)
