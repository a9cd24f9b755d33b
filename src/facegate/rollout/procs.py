"""``facegate serve`` as a child process on 127.0.0.1: the laptop stand-in for one KServe revision.

A separate process per model version, not a thread: Prometheus metrics live in a process-wide registry, and the
latency and HTTP counters carry no model-version label, so only one version per process keeps them attributable
(exactly as one version per pod does on the cluster).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from facegate.errors import FacegateError

__all__ = ["ServeProcess", "free_port", "stop_process"]


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM ``proc`` (this one process, by its handle), SIGKILL it after ``grace_s`` seconds; reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """Run ``python -m facegate serve`` for one model on 127.0.0.1 until the ``with`` block ends.

    The process gets a fresh bootstrap admin key (:attr:`admin_key`, valid for inference too) and a rate limit
    high enough for replayed traffic. Metrics are found where the server publishes them: on ``serve.metrics_port``
    when the settings have it (a port chosen here), else on ``/metrics`` of the main port.

    Args:
        model: Bundle directory, built-in name or ``models:/`` URI.
        gallery_url: The gallery's SQLAlchemy URL (``FACEGATE_GALLERY_KEYS`` must be in the environment).
        env: Extra environment variables.
        start_timeout_s: How long to wait for ``/v2/health/ready``.
        log_path: Where the server's stderr goes (a temporary file when omitted).
    """

    def __init__(
        self,
        model: str | Path,
        gallery_url: str,
        *,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        from facegate.config import ServeSettings

        self.model, self.gallery_url = str(model), gallery_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = secrets.token_urlsafe(32)
        # Replayed traffic comes from one key: lift the per-key limits (each only if this server version has it).
        limits = {"rate_per_minute": "1000000", "rate_burst": "100000", "max_inflight_per_key": "64"}
        self.env = {
            **os.environ,
            "FACEGATE_ADMIN_KEY": self.admin_key,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **{f"FACEGATE_SERVE__{k.upper()}": v for k, v in limits.items() if k in ServeSettings.model_fields},
            **(env or {}),
        }
        self.metrics_url = f"{self.url}/metrics"
        if "metrics_port" in ServeSettings.model_fields:  # /metrics on its own port once the server supports it
            mport = free_port()
            self.env["FACEGATE_SERVE__METRICS_HOST"] = "127.0.0.1"
            self.env["FACEGATE_SERVE__METRICS_PORT"] = str(mport)
            self.metrics_url = f"http://127.0.0.1:{mport}/metrics"
        self.timeout = start_timeout_s
        self._own_log = log_path is None  # a temporary log is removed on stop (errors quote its tail first)
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="facegate-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self._deadline = 0.0

    @property
    def pid(self) -> int | None:
        """The server's process id (``None`` before start)."""
        return None if self.proc is None else self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def launch(self) -> ServeProcess:
        """Start the process without waiting (start several, then :meth:`wait_ready` each: they load in parallel)."""
        cmd = [sys.executable, "-m", "facegate", "serve", "--model", self.model, "--port", str(self.port),
               "--host", "127.0.0.1", "--db", self.gallery_url]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=log)  # noqa: S603
        self._deadline = time.monotonic() + self.timeout
        return self

    def wait_ready(self) -> ServeProcess:
        """Wait until the launched server is ready and its metrics answer.

        Raises:
            FacegateError: ``serve_failed`` with the log's tail if it exits or is not ready in time (then stopped).
        """
        import httpx

        if self.proc is None:
            self.launch()
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise FacegateError(f"facegate serve exited ({self.proc.returncode}): {self.log_tail()}",
                                    code="serve_failed")  # fmt: skip
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > self._deadline:
                tail = self.log_tail()  # before stop() removes a temporary log
                self.stop()
                raise FacegateError(f"facegate serve not ready in {self.timeout:.0f} s: {tail}", code="serve_failed")
            time.sleep(0.25)
        self.metrics_url = self._find_metrics()
        return self

    def start(self) -> ServeProcess:
        """:meth:`launch`, then :meth:`wait_ready`."""
        return self.launch().wait_ready()

    def _find_metrics(self) -> str:
        """The first of the configured metrics URL and the main port's ``/metrics`` that serves the exposition."""
        import httpx as hx

        for url in dict.fromkeys((self.metrics_url, f"{self.url}/metrics")):
            for _ in range(40):  # a separate metrics server may come up a moment after the main one
                try:
                    r = hx.get(url, timeout=2)
                    if r.status_code == 200 and "facegate_" in r.text:
                        return url
                    break
                except hx.HTTPError:
                    time.sleep(0.1)
        raise FacegateError(f"no metrics endpoint answers for {self.url}", code="serve_failed")

    def stop(self) -> None:
        """SIGTERM the server (this process only, by its handle), SIGKILL after 15 s; remove a temporary log."""
        if self.proc is not None:
            stop_process(self.proc)
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ServeProcess:
        return self if self.proc is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
