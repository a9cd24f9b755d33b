"""JSON log lines for services (one object per line, ready for Loki/Elasticsearch/Cloud Logging).

Fields passed as ``extra={"fields": {...}}`` are merged into the object. Callers pass identifiers and numbers only:
facegate never logs an image, an embedding, an API key or an encryption key (student ids appear as short digests).
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "configure_json_logging"]


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, extra fields, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _Background(logging.Handler):
    """Per-request lines go to a writer thread; any other line first waits for those, then is written in order.

    The lines a request writes (the access line, the decision line) cost it a queue put. Start-up, shutdown and
    warnings are rare and written at once, after whatever is queued: uvicorn ends a SIGTERM by re-raising the signal,
    which kills the process without running ``atexit``, and its last line must still flush what came before it.

    The writer thread is not woken by each line: it looks at the queue every ``interval_s``. Woken per line, it ran
    (and took the GIL to format the line) in the middle of the request that wrote it, while the event loop was
    sending that request's answer: one kiosk's p50 was 0.2 ms longer at INFO than at WARNING, requests alternating
    between two servers (docs/performance-serving.md). Lines still come out in order, at most ``interval_s`` late.
    """

    HOT = frozenset({"facegate.access", "facegate.serve"})
    interval_s = 0.02

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target
        self._queue: queue.SimpleQueue[logging.LogRecord | threading.Event] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="facegate-logs", daemon=True).start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue a per-request line; write anything else now, after the queue."""
        if record.name in self.HOT and record.levelno < logging.WARNING:
            self._queue.put(record)
        else:
            self.flush()
            self.target.handle(record)

    def flush(self) -> None:
        """Wait (at most 2 s) until every queued line is written."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(2)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, threading.Event):
                    item.set()
                else:
                    self.target.handle(item)


def configure_json_logging(level: str = "INFO", stream: Any = None, *, queued: bool = False) -> None:
    """Route every logger (facegate, KServe, uvicorn) and Python warnings through one JSON handler on stderr.

    Args:
        level: Root log level.
        stream: Where lines go (stderr by default).
        queued: Format and write the per-request lines on a background thread (the server: they then cost a request
            a queue put, not JSON encoding and a write to a pipe that may be slow to drain). A killed process may
            lose its last queued lines (never an audit row: those are in the database).
    """
    handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    if queued:
        handler = _Background(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the gatekeeper writes one access line per request
    # Third-party warnings (Pillow's, FastAPI's, ...) become JSON lines too, instead of bare text on stderr.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").propagate = True
