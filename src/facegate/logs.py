"""JSON log lines for services (one object per line, ready for Loki/Elasticsearch/Cloud Logging).

Fields passed as ``extra={"fields": {...}}`` are merged into the object. Callers pass identifiers and numbers only:
facegate never logs an image, an embedding, an API key or an encryption key (student ids appear as short digests).
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
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


class _HandOff(logging.handlers.QueueHandler):
    """A queue handler that leaves the formatting to the listener's thread (records stay in this process)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record as it is: the JSON formatting and the write happen on the listener's thread."""
        return record


def configure_json_logging(level: str = "INFO", stream: Any = None, *, queued: bool = False) -> None:
    """Route every logger (facegate, KServe, uvicorn) and Python warnings through one JSON handler on stderr.

    Args:
        level: Root log level.
        stream: Where lines go (stderr by default).
        queued: Format and write on a background thread (the server: a request's log lines then cost it a queue
            put, not JSON encoding and a write to a pipe that may be slow to drain). Lines still queued are written
            at exit; a killed process may lose its last lines (never an audit row: those are in the database).
    """
    handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    if queued:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
        listener.start()
        atexit.register(listener.stop)
        handler = _HandOff(records)
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
