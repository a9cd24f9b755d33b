"""The serving model's threads: the embedder behind a lock, and the low-priority threads of bulk work."""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from facegate.models.base import Embedder

__all__ = ["BULK_NICE", "FORWARD_SLICE", "SerialEmbedder", "bulk_executor"]

#: Most faces per forward pass of the serving model, whatever batch the caller asks for. Inference runtimes keep
#: buffers sized for the largest batch they have run for the life of the process (OpenVINO, SFace: about 3 MB a
#: face), so one burst of 16-face batches left RSS about 50 MB up for good; slices of 4 bound that to about 10 MB,
#: at no cost on CPU (16 faces: 159 ms in slices of 4, 183 ms in one pass, same run, load average 9).
FORWARD_SLICE = 4


class SerialEmbedder(Embedder):
    """The serving embedder behind a lock.

    OpenVINO's compiled model (one shared infer request) and OpenCV's nets must not run from two threads at once;
    the micro-batcher's worker and the admin API's enroll/reindex (on the preprocess threads) share one model.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.version, self.embedding_size = inner.name, inner.version, inner.embedding_size
        self.default_threshold, self.input_mean, self.input_std = (
            inner.default_threshold,
            inner.input_mean,
            inner.input_std,
        )
        self._lock = threading.Lock()

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        with self._lock:
            return self.inner._forward(faces)

    def embed(self, faces: np.ndarray, *, batch_size: int = 64, flip: bool = False) -> np.ndarray:
        """The inner model's ``embed``, one caller at a time, at most :data:`FORWARD_SLICE` faces per forward pass."""
        with self._lock:
            return self.inner.embed(faces, batch_size=min(batch_size, FORWARD_SLICE), flip=flip)

    def describe(self) -> dict[str, Any]:
        """The inner model's description."""
        return self.inner.describe()


BULK_NICE = 10


def _lower_priority() -> None:
    """Thread initializer: raise this thread's nice value (Linux schedules threads individually); best effort."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)


def bulk_executor(threads: int) -> ThreadPoolExecutor:
    """Threads for bulk work (``embed`` images) at a lower OS priority (:data:`BULK_NICE`)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="facegate-bulk", initializer=_lower_priority)
