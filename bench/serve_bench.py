"""End-to-end verifier benchmark: `facegate serve` as a real process on 127.0.0.1, driven over HTTP.

1. **Latency**: one kiosk sends a 640x480 JPEG check-in photo again and again; p50/p99 of the whole round trip
   (HTTP, auth, decode, detect, align, embed, compare, audit write), beside the same pipeline called in-process
   (decode + align + embed + compare, no server) as the peer.
2. **Throughput**: 8 concurrent clients for ``--duration`` seconds, with micro-batching on (``max_batch`` 16) and off
   (``max_batch`` 1) in two server runs; requests/s, errors and the server's RSS growth.

3. **Liveness cost** (when the MiniFASNet weights are in ../shared and torch is installed to convert them): the
   liveness check alone in-process (two 80x80 networks on the detected face, OpenVINO), and the server's p50/p99
   with ``serve.liveness`` off and on, so the cost per request is measured end to end as well.

The model is an OpenVINO export of the SFace baseline (``--model`` takes any bundle). Prints one JSON object.
Usage: ``python bench/serve_bench.py [--duration 60] [--latency-requests 200] [--model BUNDLE] [--liveness-only]``.
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

from facegate.serve.client import outputs, verify_request

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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Server:
    """A `facegate serve` process this benchmark starts and stops (by its own pid)."""

    def __init__(self, model: str, home: Path, max_batch: int, extra_env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        from facegate.serve.gallery import KeyRing

        env = {
            **os.environ,
            "FACEGATE_HOME": str(home),
            "FACEGATE_GALLERY_KEYS": KeyRing.generate("k1"),
            "FACEGATE_ADMIN_KEY": ADMIN,
            "FACEGATE_SERVE__MAX_BATCH": str(max_batch),
            "FACEGATE_SERVE__RATE_PER_MINUTE": "1000000",
            "FACEGATE_SERVE__RATE_BURST": "100000",
            "FACEGATE_LOG_LEVEL": "WARNING",
            "FACEGATE_SERVE__METRICS_PORT": "0",
            **(extra_env or {}),
        }
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

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def enroll_and_key(server: Server, photos: list[Path]) -> str:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"photos": [base64.b64encode(p.read_bytes()).decode() for p in photos]}
    r = httpx.put(server.url + "/admin/v1/students/S1", json=body, headers=admin, timeout=60)
    r.raise_for_status()
    return str(httpx.post(server.url + "/admin/v1/keys/kiosk", headers=admin).json()["key"])


def latency_run(server: Server, key: str, photo: bytes, n: int) -> dict[str, float]:
    body = verify_request(photo, "S1")
    times = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for i in range(n + 10):
            t0 = time.perf_counter()
            r = client.post(server.url + "/v2/models/verifier/infer", json=body)
            dt = time.perf_counter() - t0
            r.raise_for_status()
            decision = outputs(r.json())["decision"]
            if decision != "accept":
                sys.exit(f"unexpected decision {decision!r} for the enrolled person")
            if i >= 10:  # warm-up excluded
                times.append(dt * 1000)
    q = statistics.quantiles(times, n=100)
    return {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(q[98], 2), "n": len(times)}


def throughput_run(server: Server, key: str, photo: bytes, clients: int, duration: float) -> dict[str, Any]:
    body = verify_request(photo, "S1")
    counts, errors, ended = [0] * clients, [0] * clients, [0.0] * clients
    stop_at = time.monotonic() + duration
    rss0 = rss_kib(server.proc.pid)

    def worker(i: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            while time.monotonic() < stop_at:
                try:
                    r = client.post(server.url + "/v2/models/verifier/infer", json=body)
                    if r.status_code == 200:
                        counts[i] += 1
                    else:
                        errors[i] += 1
                except httpx.HTTPError:
                    errors[i] += 1
        ended[i] = time.monotonic()

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
    rss1 = rss_kib(server.proc.pid)
    half = samples[len(samples) // 2 - 1] if len(samples) >= 2 else rss0 / 1024
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": sum(counts),
        "errors": sum(errors),
        "requests_per_s": round(sum(counts) / elapsed, 2),
        "server_rss_mib_start": round(rss0 / 1024, 1),
        "server_rss_mib_end": round(rss1 / 1024, 1),
        "server_rss_growth_mib": round((rss1 - rss0) / 1024, 1),
        "server_rss_growth_second_half_mib": round(rss1 / 1024 - half, 1),
        "server_rss_mib_samples": samples,
    }


def in_process_peer(model: str, photo: bytes, template_photos: list[Path], n: int) -> dict[str, float]:
    """The same pipeline without the server: decode, detect + align, embed, compare."""
    from facegate.bundles import load_embedder
    from facegate.config import load_settings
    from facegate.data.imageio import decode_image
    from facegate.faces.pipeline import aligner_from_settings
    from facegate.models.base import l2_normalize

    emb = load_embedder(model)
    aligner = aligner_from_settings(load_settings(env={}), multiple="reject")
    faces = np.stack([aligner.prepare(decode_image(p.read_bytes())).face for p in template_photos])
    template = l2_normalize(emb.embed(faces).mean(axis=0, keepdims=True))[0]
    times = []
    for i in range(n + 10):
        t0 = time.perf_counter()
        face = aligner.prepare(decode_image(photo)).face
        float(np.dot(emb.embed(face)[0], template))
        if i >= 10:
            times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(times), 2), "n": len(times)}


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
        keys = {label: enroll_and_key(server, enrol) for label, server in servers.items()}
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the 8-client throughput run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--latency-requests", type=int, default=200)
    ap.add_argument("--model", default=None, help="bundle to serve (default: SFace exported to OpenVINO FP32)")
    ap.add_argument("--liveness-only", action="store_true", help="only the liveness cost (3.), not 1. and 2.")
    args = ap.parse_args()

    photos = require(SHARED / "data" / "photos")
    enrol = [photos / "train" / "obama" / n for n in ("obama.jpg", "obama2.jpg")]
    photo = check_in_photo(photos / "test" / "obama1.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from facegate.export.convert import export_model, load_faces

            lfw = SHARED / "data" / "lfw-aligned"
            faces = load_faces(lfw, limit=40)
            export_model("sface", Path(tmp) / "exp", faces, formats=["openvino-fp32"])
            model = str(Path(tmp) / "exp" / "openvino-fp32")
        result: dict[str, Any] = {"machine": machine(), "model": model if args.model else "sface openvino-fp32"}
        result["photo"] = {"size": "640x480", "jpeg_bytes": len(photo)}
        frame = camera_photo(photos / "test" / "obama1.jpg")
        result["liveness"] = liveness_cost(model, Path(tmp), frame, enrol, args.latency_requests)
        if args.liveness_only:
            print(json.dumps(result, indent=2))
            return
        result["in_process_peer"] = in_process_peer(model, photo, enrol, args.latency_requests)
        runs = {}
        for label, max_batch in (("batched", 16), ("unbatched", 1)):
            server = Server(model, Path(tmp) / label, max_batch)
            try:
                key = enroll_and_key(server, enrol)
                run: dict[str, Any] = {"max_batch": max_batch}
                if label == "batched":
                    run["latency"] = latency_run(server, key, photo, args.latency_requests)
                run["throughput"] = throughput_run(server, key, photo, args.clients, args.duration)
                runs[label] = run
            finally:
                server.stop()
        result["runs"] = runs
        lat = runs["batched"]["latency"]
        result["ratios"] = {
            "server_p50_over_in_process_p50": round(lat["p50_ms"] / result["in_process_peer"]["p50_ms"], 2),
            "batched_over_unbatched_throughput": round(
                runs["batched"]["throughput"]["requests_per_s"] / runs["unbatched"]["throughput"]["requests_per_s"], 2
            ),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
