"""End-to-end verifier benchmark: `facegate serve` as a real process on 127.0.0.1, driven over HTTP.

1. **Latency**: one kiosk sends a 640x480 JPEG check-in photo again and again, as JSON (base64) and as the binary
   tensor extension, on one keep-alive connection (a plain socket, the answer framed by its length: the client's
   own CPU is small on a 2-core machine), followed each time by a ``GET /v2/health/live`` on the same connection
   (the round trip with no work behind it, ``trivial_round_trip_p50_ms``); each round also runs the same pipeline
   in-process with the server's settings (decode + detect + align + embed + compare, no server), the peer, so the
   HTTP/in-process p50 ratio is measured in the same run on the same (shared) machine.
   Beside it, the **stage breakdown** from the server's own stage timers (``facegate_stage_seconds`` on its metrics
   port: mean ms per request of read body, parse, auth, decode, detect, align, queue, embed, compare, audit,
   serialise, and the server's total).
2. **Throughput**: 8 concurrent clients (one key and one keep-alive connection each, the JSON body encoded once) for
   ``--duration`` seconds in all, in ``--slices`` turns; requests/s, errors, the server's RSS and the clients' own
   CPU per request (they share the machine with the server).

With ``--baseline-src`` (the ``src`` folder of another checkout, e.g. ``git archive main src | tar -x -C
/tmp/fg-main``), a server running that code is started beside this one and every measurement alternates between
the two (requests in turn; throughput in turns), so "before/after" is a ratio from one run even on a busy machine.
``--unbatched`` adds a ``max_batch`` 1 server to the throughput turns.

3. **Liveness cost** (when the MiniFASNet weights are in ../shared and torch is installed to convert them): the
   liveness check alone in-process (two 80x80 networks on the detected face, OpenVINO), and the server's p50/p99
   with ``serve.liveness`` off and on, so the cost per request is measured end to end as well.

The model is an OpenVINO export of the SFace baseline (``--model`` takes any bundle). Prints one JSON object with
the load average (``/proc/loadavg``) at each step.
Usage: ``python bench/serve_bench.py [--duration 60] [--latency-requests 200] [--model BUNDLE] [--baseline-src DIR]
[--unbatched] [--liveness-only] [--no-liveness]``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _common import SHARED, machine, require
from PIL import Image

from facegate.serve.client import outputs, verify_request, verify_request_binary

ADMIN = secrets.token_urlsafe(24)  # made up per run, held in memory only


def check_in_photo(src: Path) -> bytes:
    """The person's photo letterboxed into a 640x480 JPEG, what a kiosk camera sends."""
    img = Image.open(src).convert("RGB")
    img.thumbnail((640, 480))
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(img, ((640 - img.width) // 2, (480 - img.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def camera_photo(src: Path) -> bytes:
    """The photo centre-cropped to 4:3 and scaled to a 640x480 JPEG, as a camera frame (no letterbox).

    For the liveness runs: a letterboxed photo is a picture inside a frame, which is what a presentation attack
    looks like, and MiniFASNet scores it so (0.37 for this one, against 0.76 without the bars).
    """
    img = Image.open(src).convert("RGB")
    w, h = img.size
    tw = min(w, h * 4 // 3)
    th = tw * 3 // 4
    left, top = (w - tw) // 2, (h - th) // 2
    img = img.crop((left, top, left + tw, top + th)).resize((640, 480))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages (the machine is shared: every absolute figure goes with these)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stage_sums(metrics_port: int) -> dict[str, tuple[float, float]]:
    """``{stage: (sum_seconds, count)}`` of a server's ``facegate_stage_seconds`` histogram, now."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for suffix, i in (("_sum{", 0), ("_count{", 1)):
            if line.startswith("facegate_stage_seconds" + suffix):
                stage = line.split('stage="')[1].split('"')[0]
                out.setdefault(stage, [0.0, 0.0])[i] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ProtocolError(Exception):
    """The server's answer could not be framed (no Content-Length, a closed connection mid-answer)."""


class RawClient:
    """One keep-alive HTTP/1.1 connection on a plain socket: what a lean kiosk client costs, and no more.

    The request (headers and body) goes out in one ``sendall``; the answer is framed by its ``Content-Length``
    (every answer of the server has one) with no header parsing beyond that. ``http.client`` cost ~0.15 ms more per
    round trip here (``email.parser`` on the answer's headers, headers and body in separate writes), which the
    HTTP/in-process ratio would charge to the server.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        return sock

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """``(status, body)`` of one request on the connection (reconnecting after a ``Connection: close``)."""
        sock = self.sock = self.sock or self._connect()
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        sock.sendall(f"{method} {path} HTTP/1.1\r\n{self.fixed}{length}\r\n".encode("latin-1") + (body or b""))
        buf = self.buffer
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv(sock)
        head, buf = buf[:end].split(b"\r\n"), buf[end + 4 :]
        status = int(head[0].split(b" ", 2)[1])
        fields = dict(line.split(b":", 1) for line in head[1:])
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        if b"content-length" not in fields:
            raise ProtocolError(f"an answer without Content-Length: {head[0]!r}")
        n = int(fields[b"content-length"])
        while len(buf) < n:
            buf += self._recv(sock)
        self.buffer = buf[n:]
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, buf[:n]

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        data = sock.recv(1 << 16)
        if not data:
            raise ProtocolError("the server closed the connection mid-answer")
        return data

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Server:
    """A `facegate serve` process this benchmark starts and stops (by its own pid)."""

    def __init__(
        self,
        model: str,
        home: Path,
        max_batch: int,
        extra_env: dict[str, str] | None = None,
        src: str | None = None,
    ) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        from facegate.serve.gallery import KeyRing

        env = {
            **os.environ,
            "FACEGATE_HOME": str(home),
            "FACEGATE_GALLERY_KEYS": KeyRing.generate("k1"),
            "FACEGATE_ADMIN_KEY": ADMIN,
            "FACEGATE_SERVE__MAX_BATCH": str(max_batch),
            "FACEGATE_SERVE__RATE_PER_MINUTE": "1000000",
            "FACEGATE_SERVE__RATE_BURST": "100000",
            "FACEGATE_LOG_LEVEL": "INFO",  # as served: the log lines are part of a request's cost
            "FACEGATE_SERVE__METRICS_PORT": str(self.metrics_port),
            **(extra_env or {}),
        }
        if src:  # another checkout's code (the baseline) ahead of this one's on the path
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "facegate", "serve", "--model", model, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                sys.exit("the server exited during start-up")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("the server did not become ready in 120 s")
            time.sleep(0.3)

    def stages(self) -> dict[str, tuple[float, float]]:
        """``{stage: (sum_seconds, count)}`` of the server's ``facegate_stage_seconds`` histogram, now."""
        return stage_sums(self.metrics_port)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def enroll_and_key(server: Server, photos: list[Path], kiosks: int = 1) -> list[str]:
    """Enroll S1 and create one key per kiosk (a key may have only ``serve.max_inflight_per_key`` requests open)."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"photos": [base64.b64encode(p.read_bytes()).decode() for p in photos]}
    r = httpx.put(server.url + "/admin/v1/students/S1", json=body, headers=admin, timeout=60)
    r.raise_for_status()
    return [
        str(httpx.post(server.url + f"/admin/v1/keys/kiosk-{i}", headers=admin).json()["key"]) for i in range(kiosks)
    ]


ORDER = ("read_body", "parse", "auth", "decode", "detect", "align", "liveness", "queue", "embed", "compare",
         "audit", "serialise")  # fmt: skip


def breakdown(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], n: int) -> dict[str, Any]:
    """Mean ms per request of each stage between two scrapes (``n`` requests), in pipeline order, and the rest."""
    per = {}
    for stage, (total, _count) in after.items():
        delta = total - before.get(stage, (0.0, 0.0))[0]
        if delta > 0:
            per[stage] = round(delta * 1000 / n, 3)
    ordered = {k: per[k] for k in ORDER if k in per}
    ordered.update({k: v for k, v in per.items() if k not in ordered})
    return ordered


def latency_run(
    servers: dict[str, tuple[Server, str]], photo: bytes, n: int, peer: Any, binary: bool = False
) -> dict[str, Any]:
    """p50/p99 over HTTP on each server, requests alternating between them and one in-process run of the peer.

    Alternating makes the load of a shared machine fall on every server and on the peer alike, so the ratios hold
    even when the absolute times swing. Each server's stage means come from its own timers over the same requests.
    """
    if binary:
        content, extra = verify_request_binary(photo, "S1")
    else:
        content, extra = json.dumps(verify_request(photo, "S1")).encode(), {"Content-Type": "application/json"}
    # One raw keep-alive connection per server (a plain socket): the kiosk's side of the exchange costs little CPU, so
    # on a 2-core machine the client takes as little as it can from the server it measures. What a round trip
    # costs with no work behind it is measured on the same connections (``trivial_round_trip``).
    clients = {label: RawClient(server.url, {"Authorization": f"Bearer {key}", **extra})
               for label, (server, key) in servers.items()}  # fmt: skip
    times: dict[str, list[float]] = {label: [] for label in servers}
    trivial: dict[str, list[float]] = {label: [] for label in servers}
    peer_times: list[float] = []
    before: dict[str, dict[str, tuple[float, float]]] = {}
    for i in range(n + 10):
        if i == 10:  # warm-up excluded
            before = {label: server.stages() for label, (server, _) in servers.items()}
        order = list(servers) if i % 2 == 0 else list(reversed(servers))
        for label in order:
            t0 = time.perf_counter()
            status, data = clients[label].request("POST", "/v2/models/verifier/infer", content)
            dt = time.perf_counter() - t0
            if status != 200:
                sys.exit(f"{label} answered {status}: {data[:200]!r}")
            decision = outputs(json.loads(data))["decision"]
            if decision != "accept":
                sys.exit(f"unexpected decision {decision!r} from {label} for the enrolled person")
            t1 = time.perf_counter()
            clients[label].request("GET", "/v2/health/live")
            if i >= 10:
                times[label].append(dt * 1000)
                trivial[label].append((time.perf_counter() - t1) * 1000)
        pt = peer()
        if i >= 10:
            peer_times.append(pt * 1000)
    for c in clients.values():
        c.close()
    peer_p50 = statistics.median(peer_times)
    out: dict[str, Any] = {
        "encoding": "binary tensor extension" if binary else "JSON (base64 image)",
        "body_bytes": len(content),
        "n": n,
        "in_process_peer_p50_ms": round(peer_p50, 2),
        "in_process_peer_p99_ms": round(statistics.quantiles(peer_times, n=100)[98], 2),
        "loadavg": loadavg(),
    }
    for label, (server, _) in servers.items():
        stages = breakdown(before[label], server.stages(), n)
        total = stages.pop("total", None)
        ts = times[label]
        out[label] = {
            "p50_ms": round(statistics.median(ts), 2),
            "p99_ms": round(statistics.quantiles(ts, n=100)[98], 2),
            "http_over_in_process_p50": round(statistics.median(ts) / peer_p50, 3),
            "trivial_round_trip_p50_ms": round(statistics.median(trivial[label]), 3),
            "server_stage_mean_ms": stages,
            "server_total_mean_ms": total,
            "server_stages_sum_ms": round(sum(stages.values()), 3),
        }
    return out


def throughput_interleaved(
    servers: dict[str, tuple[Server, list[str]]], photo: bytes, clients: int, duration: float, slices: int
) -> dict[str, Any]:
    """``clients`` concurrent kiosks on each server in turn, ``slices`` turns of ``duration / slices`` seconds each."""
    parts: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
    for i in range(slices):
        order = list(servers) if i % 2 == 0 else list(reversed(servers))
        for label in order:
            server, keys = servers[label]
            parts[label].append(throughput_run(server, keys, photo, clients, duration / slices))
    out: dict[str, Any] = {"clients": clients, "slices": slices, "loadavg": loadavg()}
    for label, runs in parts.items():
        seconds = sum(r["seconds"] for r in runs)
        samples = [x for r in runs for x in r["server_rss_mib_samples"]]
        out[label] = {
            "seconds": round(seconds, 1),
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "requests_per_s": round(sum(r["requests"] for r in runs) / seconds, 2),
            "client_cpu_ms_per_request": round(statistics.mean(r["client_cpu_ms_per_request"] for r in runs), 3),
            "server_rss_mib_start": runs[0]["server_rss_mib_start"],
            "server_rss_mib_end": runs[-1]["server_rss_mib_end"],
            "server_rss_growth_second_half_mib": round(samples[-1] - samples[len(samples) // 2 - 1], 1),
            "server_rss_mib_samples": samples,
        }
    return out


def throughput_run(server: Server, keys: list[str], photo: bytes, clients: int, duration: float) -> dict[str, Any]:
    """``clients`` kiosks, each on its own keep-alive connection (:class:`RawClient`), the JSON body encoded once.

    The kiosks share the 2 cores with the server here: the client's own CPU per request is reported
    (``client_cpu_ms_per_request``, this process's CPU over the run) so that it is accounted for.
    """
    body = json.dumps(verify_request(photo, "S1")).encode()
    counts, errors, ended = [0] * clients, [0] * clients, [0.0] * clients
    stop_at = time.monotonic() + duration
    rss0 = rss_kib(server.proc.pid)

    def worker(i: int) -> None:
        headers = {"Authorization": f"Bearer {keys[i % len(keys)]}", "Content-Type": "application/json"}
        client = RawClient(server.url, headers)
        while time.monotonic() < stop_at:
            try:
                status, _ = client.request("POST", "/v2/models/verifier/infer", body)
            except (OSError, ProtocolError):
                errors[i] += 1
                client.close()
                client = RawClient(server.url, headers)
                continue
            if status == 200:
                counts[i] += 1
            else:
                errors[i] += 1
        client.close()
        ended[i] = time.monotonic()

    cpu0 = time.process_time()
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    samples = []  # RSS every tenth of the run: a leak keeps climbing, warm-up (thread arenas, detectors) levels off
    for _ in range(10):
        time.sleep(max(0.0, min(duration / 10, stop_at - time.monotonic())))
        samples.append(round(rss_kib(server.proc.pid) / 1024, 1))
    for t in threads:
        t.join()
    elapsed = max(ended) - t0
    client_cpu = time.process_time() - cpu0
    rss1 = rss_kib(server.proc.pid)
    half = samples[len(samples) // 2 - 1] if len(samples) >= 2 else rss0 / 1024
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": sum(counts),
        "errors": sum(errors),
        "requests_per_s": round(sum(counts) / elapsed, 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / max(1, sum(counts)), 3),
        "server_rss_mib_start": round(rss0 / 1024, 1),
        "server_rss_mib_end": round(rss1 / 1024, 1),
        "server_rss_growth_mib": round((rss1 - rss0) / 1024, 1),
        "server_rss_growth_second_half_mib": round(rss1 / 1024 - half, 1),
        "server_rss_mib_samples": samples,
    }


def in_process_peer(model: str, photo: bytes, template_photos: list[Path]) -> Any:
    """The same pipeline without the server (decode, detect + align, embed, compare): one run per call, in seconds.

    With the server's settings: its aligner (detection at ``serve.detect_max_side``) and ``serve.opencv_threads``.
    """
    from facegate.bundles import load_embedder
    from facegate.config import load_settings
    from facegate.data.imageio import decode_image
    from facegate.models.base import l2_normalize
    from facegate.serve.models import serve_aligner, set_opencv_threads

    settings = load_settings(env={})
    set_opencv_threads(settings.serve.opencv_threads)
    emb = load_embedder(model)
    aligner = serve_aligner(settings)
    faces = np.stack([aligner.prepare(decode_image(p.read_bytes())).face for p in template_photos])
    template = l2_normalize(emb.embed(faces).mean(axis=0, keepdims=True))[0]

    def run() -> float:
        t0 = time.perf_counter()
        face = aligner.prepare(decode_image(photo)).face
        float(np.dot(emb.embed(face)[0], template))
        return time.perf_counter() - t0

    return run


def liveness_cost(model: str, tmp: Path, photo: bytes, enrol: list[Path], n: int) -> dict[str, Any] | None:
    """The liveness check's cost per request, alone and end to end (``None`` without weights or torch).

    ``photo`` is a camera frame (:func:`camera_photo`); both server runs send it, so the difference of their p50s
    is what liveness adds to a request.
    """
    weights = SHARED / "models" / "minifasnet"
    try:
        import torch  # noqa: F401  (converting the published weights needs it; serving does not)
    except ImportError:
        return None
    if not weights.is_dir():
        return None
    from facegate.data.imageio import decode_image
    from facegate.faces.liveness import LivenessChecker, convert_from_photos
    from facegate.faces.pipeline import FaceAligner
    from facegate.faces.quality import select_face

    bundle = tmp / "liveness"
    convert_from_photos(weights, bundle, SHARED / "data" / "photos")
    checker = LivenessChecker(bundle, threads=1)  # as the server runs it
    image = decode_image(photo)
    aligner = FaceAligner()
    box = select_face(aligner.detector.detect(image), image.shape, aligner.policy).box
    check_ms = [checker.timed_score(image, box)[1] * 1000 for _ in range(n + 10)][10:]
    out: dict[str, Any] = {
        "check_in_process": {"p50_ms": round(statistics.median(check_ms), 2), "n": len(check_ms)},
        "score_of_the_check_in_photo": round(checker.score(image, box), 4),
        "threshold": checker.threshold,
    }
    # Both servers at once, requests alternating between them: on a busy machine the noise then falls on both
    # alike, and the median of the paired differences is the cost liveness adds to a request.
    on = {"FACEGATE_SERVE__LIVENESS": "true", "FACEGATE_SERVE__LIVENESS_MODEL": str(bundle)}
    servers = {
        "server_off": Server(model, tmp / "liveness-off", 16),
        "server_on": Server(model, tmp / "liveness-on", 16, on),
    }
    try:
        keys = {label: enroll_and_key(server, enrol)[0] for label, server in servers.items()}
        body = verify_request(photo, "S1")
        times: dict[str, list[float]] = {label: [] for label in servers}
        clients = {
            label: httpx.Client(headers={"Authorization": f"Bearer {keys[label]}"}, timeout=30) for label in servers
        }
        for i in range(n + 10):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for label in order:
                t0 = time.perf_counter()
                r = clients[label].post(servers[label].url + "/v2/models/verifier/infer", json=body)
                dt = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                if outputs(r.json())["decision"] != "accept":
                    sys.exit(f"unexpected decision from {label}: {outputs(r.json())}")
                if i >= 10:
                    times[label].append(dt)
        for c in clients.values():
            c.close()
    finally:
        for server in servers.values():
            server.stop()
    for label, ts in times.items():
        out[label] = {
            "p50_ms": round(statistics.median(ts), 2),
            "p99_ms": round(statistics.quantiles(ts, n=100)[98], 2),
        }
    diffs = [a - b for a, b in zip(times["server_on"], times["server_off"], strict=True)]
    out["added_ms_median_of_paired_differences"] = round(statistics.median(diffs), 2)
    out["n"] = n
    return out


def server_runs(
    model: str, tmp: Path, enrol: list[Path], photo: bytes, args: argparse.Namespace, peer: Any
) -> dict[str, Any]:
    """This code's server (and the baseline's, when given) side by side: latency JSON and binary, then throughput."""
    variants: dict[str, tuple[int, str | None]] = {"this": (args.max_batch, None)}
    if args.baseline_src:
        variants["baseline"] = (args.max_batch, args.baseline_src)
    if args.unbatched:
        variants["this_unbatched"] = (1, None)
    servers = {label: Server(model, tmp / label, mb, src=src) for label, (mb, src) in variants.items()}
    try:
        keys = {label: enroll_and_key(server, enrol, args.clients) for label, server in servers.items()}
        first = {label: (servers[label], keys[label][0]) for label in servers if label != "this_unbatched"}
        return {
            "max_batch": args.max_batch,
            "latency_json": latency_run(first, photo, args.latency_requests, peer),
            "latency_binary": latency_run(first, photo, args.latency_requests, peer, binary=True),
            "throughput": throughput_interleaved(
                {label: (servers[label], keys[label]) for label in servers},
                photo,
                args.clients,
                args.duration,
                args.slices,
            ),
        }
    finally:
        for server in servers.values():
            server.stop()


def bench_inputs() -> tuple[Path, list[Path], bytes]:
    """The photos folder, the enrollment photos of S1 and S1's 640x480 check-in JPEG."""
    photos = require(SHARED / "data" / "photos")
    enrol = [photos / "train" / "obama" / n for n in ("obama.jpg", "obama2.jpg")]
    return photos, enrol, check_in_photo(photos / "test" / "obama1.jpg")


def served_model(model: str | None, tmp: Path) -> str:
    """``model``, or SFace exported to OpenVINO FP32 under ``tmp`` when none is given."""
    if model is not None:
        return model
    from facegate.export.convert import export_model, load_faces

    faces = load_faces(SHARED / "data" / "lfw-aligned", limit=40)
    export_model("sface", tmp / "exp", faces, formats=["openvino-fp32"])
    return str(tmp / "exp" / "openvino-fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the 8-client throughput run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--latency-requests", type=int, default=200)
    ap.add_argument("--model", default=None, help="bundle to serve (default: SFace exported to OpenVINO FP32)")
    ap.add_argument("--baseline-src", default=None, help="src folder of the code to compare with (same run)")
    ap.add_argument("--liveness-only", action="store_true", help="only the liveness cost (3.), not 1. and 2.")
    ap.add_argument("--no-liveness", action="store_true", help="skip the liveness cost (3.)")
    ap.add_argument("--max-batch", type=int, default=16, help="serve.max_batch of the servers compared")
    ap.add_argument("--unbatched", action="store_true", help="also a max_batch 1 server in the throughput runs")
    ap.add_argument("--slices", type=int, default=4, help="turns per server in the throughput run (interleaved)")
    args = ap.parse_args()

    photos, enrol, photo = bench_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        model = served_model(args.model, Path(tmp))
        result: dict[str, Any] = {"machine": machine(), "model": model if args.model else "sface openvino-fp32"}
        result["loadavg_at_start"] = loadavg()
        result["photo"] = {"size": "640x480", "jpeg_bytes": len(photo)}
        if not args.no_liveness:
            frame = camera_photo(photos / "test" / "obama1.jpg")
            result["liveness"] = liveness_cost(model, Path(tmp), frame, enrol, args.latency_requests)
        if args.liveness_only:
            print(json.dumps(result, indent=2))
            return
        peer = in_process_peer(model, photo, enrol)
        result["runs"] = runs = server_runs(model, Path(tmp), enrol, photo, args, peer)
        thr = runs["throughput"]
        ratios: dict[str, float] = {
            "json_http_over_in_process_p50": runs["latency_json"]["this"]["http_over_in_process_p50"],
            "binary_http_over_in_process_p50": runs["latency_binary"]["this"]["http_over_in_process_p50"],
        }
        if args.baseline_src:
            ratios["baseline_json_http_over_in_process_p50"] = runs["latency_json"]["baseline"][
                "http_over_in_process_p50"
            ]
            ratios["json_p50_baseline_over_this"] = round(
                runs["latency_json"]["baseline"]["p50_ms"] / runs["latency_json"]["this"]["p50_ms"], 2
            )
            ratios["throughput_this_over_baseline"] = round(
                thr["this"]["requests_per_s"] / thr["baseline"]["requests_per_s"], 2
            )
        if args.unbatched:
            ratios["batched_over_unbatched_throughput"] = round(
                thr["this"]["requests_per_s"] / thr["this_unbatched"]["requests_per_s"], 2
            )
        result["ratios"] = ratios
        result["loadavg_at_end"] = loadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
