"""HTTP/1.1 edges of the verifier: refusals a client can read, ambiguous framing, one request id per request.

**Lingering close.** The gatekeeper refuses some requests before their body has arrived (413 over the size limit,
401/403, 429 for a busy or rate-limited key) and marks the answer ``Connection: close``. Closing a socket while the
client's unread body sits in the server's receive buffer makes the kernel send a TCP reset; a client still
uploading (a browser, ``http.client``, anything that reads only once the body is sent) then sees
``ConnectionResetError`` instead of the answer. :class:`LingeringH11Protocol` closes such a connection the way
Apache and nginx do: it sends the answer, half-closes (FIN after the answer), then reads and discards what the
client still sends, for at most :data:`LINGER_S` seconds and :data:`LINGER_BYTES` bytes, and closes when the
client has finished (its FIN), or either bound is reached. Nothing drained is buffered or parsed.

**Framing.** A request with both ``Content-Length`` and ``Transfer-Encoding`` is refused (400, closed): a proxy in
front that framed it by the length while this server frames it by the chunks is how requests are smuggled
(RFC 9112, section 6.3).

**Request id.** The gatekeeper opens a :class:`RequestId` for every request; the model adopts the client's valid
v2 ``id`` into it, so the ``x-request-id`` header, the response body, the access and decision log lines and the
audit row all carry one value.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "LINGER_BYTES",
    "LINGER_S",
    "LingeringH11Protocol",
    "RequestId",
    "adopt_request_id",
    "framing_error",
]

#: Longest time a refused upload is drained before the connection is closed regardless.
LINGER_S = 5.0
#: Most bytes drained from a refused upload (a 12 MiB photo fits; a longer upload is cut with a reset).
LINGER_BYTES = 32 * 1024 * 1024


def framing_error(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request's body framing is ambiguous (``Content-Length`` with ``Transfer-Encoding``), or ``None``."""
    names = {k.lower() for k, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        return "Content-Length together with Transfer-Encoding is refused (ambiguous framing)"
    return None


class RequestId:
    """The one id of a request: the gatekeeper's (the client's ``x-request-id`` or a fresh one) until adopted."""

    def __init__(self, value: str) -> None:
        self.value = value


_CURRENT: contextvars.ContextVar[RequestId | None] = contextvars.ContextVar("facegate_request_id", default=None)


def open_request_id(value: str) -> RequestId:
    """Start this request's id (the gatekeeper, before the app runs; the app runs in the same task)."""
    rid = RequestId(value)
    _CURRENT.set(rid)
    return rid


def adopt_request_id(value: str) -> None:
    """Make ``value`` (a checked client id) this request's id everywhere the gatekeeper writes it."""
    rid = _CURRENT.get()
    if rid is not None:
        rid.value = value


class _LingeringTransport:
    """The protocol's transport, with ``close()`` lingering while the client is still sending a body."""

    def __init__(self, transport: asyncio.Transport, protocol: LingeringH11Protocol) -> None:
        self.raw = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def close(self) -> None:
        self._protocol.close_lingering()

    def is_closing(self) -> bool:
        # While draining, the connection is as good as closed: no keep-alive, no next request, no timeout answer.
        return bool(self.raw.is_closing() or self._protocol.lingering)


class LingeringH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose close drains a refused upload first (see the module docstring)."""

    linger_s: float = LINGER_S
    linger_bytes: int = LINGER_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the transport so that uvicorn's own ``close()`` calls linger."""
        self._drained: int | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._raw = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]

    @property
    def lingering(self) -> bool:
        """Whether the answer is sent and the rest of the request is being drained."""
        return getattr(self, "_drained", None) is not None

    def close_lingering(self) -> None:
        """Close now if the request has been read; else half-close and drain (bounded) before closing."""
        raw = self._raw
        if self.lingering or raw.is_closing():
            return
        cycle = self.cycle
        unread = cycle is not None and cycle.more_body and self.conn.their_state is h11.SEND_BODY
        if not unread or not raw.can_write_eof():
            raw.close()
            return
        self._drained = 0
        raw.write_eof()  # after the buffered answer: the client reads it, then end-of-stream
        raw.resume_reading()  # uvicorn pauses reading when a body is not consumed
        self._linger_timer = self.loop.call_later(self.linger_s, raw.close)

    def close_now(self) -> None:
        """Close without draining (a client that is too slow gets no grace)."""
        self._raw.close()

    def data_received(self, data: bytes) -> None:
        """Discard input while lingering; otherwise uvicorn's handling."""
        if self._drained is not None:
            self._drained += len(data)
            if self._drained > self.linger_bytes:
                self._raw.close()
            return
        super().data_received(data)

    def eof_received(self) -> None:
        """The client has sent everything: a lingering connection closes now."""
        if self._drained is not None:
            self._raw.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the linger timer with the connection."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)
