"""Issue 18 §4: the serving model runs at most FORWARD_SLICE faces per forward pass, whatever batch it is handed
(an inference runtime keeps buffers sized for the largest batch it has run; see bench/abuse_bench.py --burst)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from facegate.models.base import Embedder
from facegate.serve.batching import MicroBatcher
from facegate.serve.workers import FORWARD_SLICE, SerialEmbedder


class _Recording(Embedder):
    name, embedding_size, version = "recording", 8, "t"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        self.batches.append(len(faces))
        out = np.zeros((len(faces), self.embedding_size), dtype=np.float32)
        out[:, 0] = faces[:, 0, 0, 0]  # the face's first pixel: output rows must follow input rows
        out[:, 1] = 1.0
        return out


def test_large_batches_are_embedded_in_slices_in_order() -> None:
    inner = _Recording()
    model = SerialEmbedder(inner)
    faces = np.zeros((37, 112, 112, 3), dtype=np.uint8)
    faces[:, 0, 0, 0] = np.arange(37)
    emb = model.embed(faces, batch_size=64)
    assert max(inner.batches) <= FORWARD_SLICE < 16 and sum(inner.batches) == 37
    assert np.argsort(emb[:, 0]).tolist() == list(range(37))  # order kept across slices

    async def through_batcher() -> np.ndarray:
        batcher = MicroBatcher(model, max_batch=16, max_wait_s=0.001)
        try:
            return await batcher.embed(faces[:16])
        finally:
            batcher.close()

    inner.batches.clear()
    out = asyncio.run(through_batcher())
    assert out.shape == (16, 8) and max(inner.batches) <= FORWARD_SLICE


def test_the_last_request_of_a_burst_gets_a_trailing_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trim asked for too soon after the previous one still happens, once the interval has passed."""
    from facegate.serve import memory

    if memory._LIBC is None:
        pytest.skip("no glibc: trimming does nothing here")
    calls: list[float] = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(time.monotonic()))
    trimmer = memory.Trimmer(min_interval_s=0.3)
    trimmer.maybe()  # the first request of the burst ends: trim now
    for _ in range(5):  # the burst's last requests end within the interval
        trimmer.maybe()
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(calls) == 2, calls  # one trailing trim, not one per request
    assert calls[1] - calls[0] >= 0.25
