"""Read timeouts for uvicorn's HTTP/1.1 protocol: a client cannot hold a connection by sending slowly.

uvicorn closes *idle* keep-alive connections, but a connection whose request headers never finish, or whose body
trickles in, stays open for as long as the client likes: a few hundred such sockets (a slowloris) tie up the
server's connection slots. :func:`guarded_h11` returns uvicorn's h11 protocol with two deadlines per request:

- **headers**: from the connection's start (or the end of the previous response) until the request's headers
  are complete;
- **body**: from the end of the headers until the whole body has arrived.

When a deadline passes, the client gets ``408 Request Timeout`` (if no response was started) and the connection
is closed. The connection is also closed after any answer given before the body was read (the gatekeeper marks
those ``Connection: close``), after a bounded drain (:mod:`facegate.serve.http_edges`) so that the client reads
the answer, and a client streaming a refused upload cannot keep it open either.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from facegate.serve.http_edges import LingeringH11Protocol

__all__ = ["guarded_h11"]

_TIMEOUT_BODY = b'{"error": "request not received in time", "code": "timeout"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class _GuardedH11Protocol(LingeringH11Protocol):
    """uvicorn's h11 protocol with header and body read deadlines (set by :func:`guarded_h11`)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection with the header deadline running."""
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        super().connection_made(transport)
        self._arm("headers", self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        """Feed h11, then move the deadline to the request's new phase."""
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        """After a response, the next request's headers are due within the header timeout."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm("headers", self.header_timeout_s)
            self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body", self.body_timeout_s)
        elif state is not h11.IDLE:
            self._disarm()  # the whole request is in: from here on, the application's time is not the client's

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle
        started = cycle is not None and not cycle.response_complete and cycle.response_started
        if not started and (self._phase == "body" or self.conn.their_state is h11.IDLE):
            self.transport.write(_TIMEOUT_RESPONSE)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() now answers http.disconnect
            cycle.keep_alive = False
        self.close_now()  # no lingering drain for a client that was too slow


def guarded_h11(header_timeout_s: float, body_timeout_s: float) -> type[H11Protocol]:
    """The uvicorn h11 protocol class with these read deadlines (pass it as ``uvicorn.Config(http=...)``)."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"header_timeout_s": float(header_timeout_s), "body_timeout_s": float(body_timeout_s)},
    )
