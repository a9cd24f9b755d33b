"""Giving freed memory back to the system (glibc), so a burst of large images does not leave the server bloated.

Decoded photos are large, short-lived buffers allocated from several threads. glibc keeps freed memory in
per-thread arenas and returns little of it on its own: after a burst, RSS stays high although nothing is in use.
:func:`limit_arenas` caps the number of arenas (at start-up, before worker threads exist) and :class:`Trimmer`
calls ``malloc_trim`` once the server goes idle, at most every few seconds, off the event loop. Both do nothing
where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from typing import Any

__all__ = ["Trimmer", "limit_arenas", "trim"]

_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


_LIBC = _libc()


def limit_arenas(arenas: int = 2, mmap_threshold: int = 4 << 20) -> None:
    """Cap glibc's malloc arenas and fix its mmap and trim thresholds (call before worker threads start).

    A fixed threshold keeps every buffer of 4 MiB or more (large photos, decoded) in its own mapping, returned to
    the system when freed; glibc's default threshold rises to the largest buffer freed so far, after which such
    buffers come from the heap and stay there. Not lower, and the heap's top is not handed back below twice that
    (the trim threshold, 128 KiB once the mmap threshold is fixed): a check-in's own buffers (the 640x480 image
    decoded, the detector's blobs, up to 3.7 MB) would otherwise be fresh memory the kernel zeroes page by page,
    on every request (about 1,400 page faults and 2-5 ms of CPU per check-in at 1 MiB). They are reused from the
    heap instead, and the idle trim (:class:`Trimmer`, ``malloc_trim``) gives back what a burst left.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, arenas)
        _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, 2 * mmap_threshold)


def trim() -> None:
    """Return free heap memory to the system (``malloc_trim(0)``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class Trimmer:
    """Trim at most every ``min_interval_s``, in a background thread, when asked after the last request ends.

    A request that asks too soon after the previous trim gets a trailing trim once the interval has passed: the last
    request of a burst usually ends within the interval of an earlier one, and a server that then goes idle would
    otherwise keep the burst's freed memory (no later request asks again).

    Args:
        min_interval_s: Least time between two trims.
    """

    def __init__(self, min_interval_s: float = 2.0) -> None:
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._busy = threading.Lock()
        self._pending: threading.Timer | None = None
        self._guard = threading.Lock()

    def maybe(self) -> None:
        """Start a trim now, or schedule one for when the interval has passed (one at a time)."""
        if _LIBC is None:
            return
        with self._guard:
            wait = self._last + self.min_interval_s - time.monotonic()
            if wait > 0:
                if self._pending is None:
                    self._pending = threading.Timer(wait, self._trailing)
                    self._pending.daemon = True
                    self._pending.start()
                return
            if not self._busy.acquire(blocking=False):
                return
            self._last = time.monotonic()
        threading.Thread(target=self._run, name="facegate-trim", daemon=True).start()

    def _trailing(self) -> None:
        with self._guard:
            self._pending = None
        self.maybe()

    def _run(self) -> None:
        try:
            trim()
        finally:
            self._busy.release()
