"""Debian's Prometheus as a child process for tests: scrape given /metrics URLs every second on 127.0.0.1."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from facegate.rollout.procs import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@contextlib.contextmanager
def run_prometheus(tmp: Path, targets: dict[str, dict[str, str]], timeout_s: float = 60.0) -> Iterator[str]:
    """Prometheus scraping ``targets`` (metrics URL -> target labels) until the block ends; yields its URL.

    Returns once every target has been scraped up; stops only the process it started, by its handle.
    """
    jobs = "\n".join(
        f"      - targets: ['{urlsplit(u).netloc}']\n        labels: {labels}" for u, labels in targets.items()
    )
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: facegate\n    metrics_path: /metrics\n    static_configs:\n{jobs}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp / "prometheus.log").open("w") as log:
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    body = httpx.get(f"{url}/api/v1/query", params={"query": "sum(up)"}, timeout=2).json()
                    result = body["data"]["result"]
                    if result and float(result[0]["value"][1]) == len(targets):
                        break
                assert time.monotonic() < deadline, f"Prometheus did not scrape {len(targets)} targets in {timeout_s} s"
                time.sleep(0.25)
            yield url
        finally:
            prom.terminate()
            try:
                prom.wait(15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(10)
