"""The verifier in a background thread on 127.0.0.1, for the demo and notebooks (production runs `facegate serve`)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

from facegate.config import Settings
from facegate.errors import FacegateError

__all__ = ["LocalServer"]


class LocalServer:
    """Run an ASGI app with uvicorn on ``127.0.0.1`` and a free port until the ``with`` block ends.

    Args:
        app: The application (``facegate.serve.app.create_app(...)``).
        start_timeout_s: How long to wait for the server to accept connections.
        settings: When given, uvicorn runs with the service's own configuration (read timeouts, connection cap).
    """

    def __init__(self, app: Any, start_timeout_s: float = 30.0, settings: Settings | None = None) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        if settings is not None:  # exactly what `facegate serve` runs (timeouts, limits), on loopback
            from facegate.serve.app import uvicorn_config

            serve = settings.serve.model_copy(update={"host": "127.0.0.1", "port": self.port})
            config = uvicorn_config(settings.model_copy(update={"serve": serve}), app)
        else:
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="facegate-local-server", daemon=True)
        self._timeout = start_timeout_s

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                self._thread.join(timeout=15)
                raise FacegateError(f"the local verifier did not start on {self.url}", code="serve_failed")
            time.sleep(0.05)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
