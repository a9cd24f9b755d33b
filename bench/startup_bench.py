"""Start-up benchmark of the verifier: process start to ready, and the first check-in against the hundredth.

A Knative canary scaled from zero, or a pod replaced by a rollout, answers its first kiosk right after its readiness
probe turns green, so both figures are check-in latency. For each round, `facegate serve` is started as a process
on 127.0.0.1 over a gallery enrolled beforehand (in this process, so no admin request warms the server first):

- ``ready_s``: from the process's start until ``/v2/health/ready`` answers 200 (polled every 20 ms);
- ``first_ms``: the first check-in right after that (JSON, 640x480 JPEG, the enrolled person);
- ``p50_ms``: the median of the next ``--requests`` check-ins, and ``first_over_p50``.

Rounds alternate between ``serve.warmup`` on (the default) and off, so the warm-up's effect is a ratio from the same
run. Prints one JSON object with the load average. Usage: ``python bench/startup_bench.py [--rounds 3]
[--requests 100] [--model BUNDLE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import machine
from serve_bench import RawClient, bench_inputs, breakdown, free_port, loadavg, served_model, stage_sums

from facegate.serve.client import outputs, verify_request


def prepare_home(home: Path, model: str, enrol: list[Path], keys: str) -> str:
    """Enroll S1 into ``home``'s gallery and create a kiosk key, without a server; returns the key."""
    from facegate.bundles import load_embedder
    from facegate.config import load_settings
    from facegate.faces.pipeline import aligner_from_settings
    from facegate.serve.auth import ApiKeyStore
    from facegate.serve.gallery import Gallery, KeyRing

    settings = load_settings(env={"FACEGATE_HOME": str(home)})
    gallery = Gallery(settings.gallery_url(), KeyRing.from_env({"FACEGATE_GALLERY_KEYS": keys}))
    aligner = aligner_from_settings(settings, multiple="reject")
    gallery.enroll("S1", [p.read_bytes() for p in enrol], load_embedder(model), aligner)
    key = ApiKeyStore(gallery.engine, env={}).create("kiosk")
    gallery.engine.dispose()
    return key


def one_round(model: str, home: Path, keys: str, key: str, photo: bytes, warmup: bool, n: int) -> dict[str, Any]:
    """Start a server, time it to ready, then its first check-in and the next ``n``; stop it."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "FACEGATE_HOME": str(home),
        "FACEGATE_GALLERY_KEYS": keys,
        "FACEGATE_LOG_LEVEL": "WARNING",
        "FACEGATE_SERVE__METRICS_PORT": str(metrics_port),
        "FACEGATE_SERVE__WARMUP": "true" if warmup else "false",
        "FACEGATE_SERVE__RATE_PER_MINUTE": "1000000",
        "FACEGATE_SERVE__RATE_BURST": "100000",
    }
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "facegate", "serve", "--model", model, "--port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                sys.exit("the server exited during start-up")
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 180:
                sys.exit("the server did not become ready in 180 s")
            time.sleep(0.02)
        ready_s = time.perf_counter() - t0
        body = json.dumps(verify_request(photo, "S1")).encode()
        times = []
        # The kiosk's side on a plain socket (serve_bench's client): httpx's first request in this process cost
        # ~75 ms of its own (first use of its connection pool), which read as a slow first check-in in round 1.
        client = RawClient(url, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            scrapes = [stage_sums(metrics_port)]
            for i in range(n + 1):
                t1 = time.perf_counter()
                status, answer = client.request("POST", "/v2/models/verifier/infer", body)
                times.append((time.perf_counter() - t1) * 1000)
                if status != 200:
                    sys.exit(f"the server answered {status}: {answer[:200]!r}")
                if outputs(json.loads(answer))["decision"] != "accept":
                    sys.exit(f"unexpected answer {outputs(json.loads(answer))}")
                if i == 0:
                    scrapes.append(stage_sums(metrics_port))
            scrapes.append(stage_sums(metrics_port))
        finally:
            client.close()
        p50 = statistics.median(times[1:])
        return {
            "ready_s": round(ready_s, 3),
            "first_ms": round(times[0], 2),
            "p50_ms": round(p50, 2),
            "first_over_p50": round(times[0] / p50, 2),
            "first_stage_ms": breakdown(scrapes[0], scrapes[1], 1),  # where the first request's time went
            "later_stage_mean_ms": breakdown(scrapes[1], scrapes[2], n),
            "loadavg": loadavg(),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds."""
    return {
        k: round(statistics.median(r[k] for r in rounds), 3)
        for k in ("ready_s", "first_ms", "p50_ms", "first_over_p50")
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="server starts per variant")
    ap.add_argument("--requests", type=int, default=100, help="check-ins after the first (for the p50)")
    ap.add_argument("--model", default=None, help="bundle to serve (default: SFace exported to OpenVINO FP32)")
    args = ap.parse_args()

    from facegate.serve.gallery import KeyRing

    _, enrol, photo = bench_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        model = served_model(args.model, Path(tmp))
        keys = KeyRing.generate("k1")
        home = Path(tmp) / "home"
        key = prepare_home(home, model, enrol, keys)
        runs: dict[str, list[dict[str, Any]]] = {"warmup": [], "no_warmup": []}
        for _ in range(args.rounds):
            for label in runs:  # alternating, so load on the shared machine falls on both alike
                runs[label].append(one_round(model, home, keys, key, photo, label == "warmup", args.requests))
        result = {
            "machine": machine(),
            "model": args.model or "sface openvino-fp32",
            "rounds": args.rounds,
            "requests_after_first": args.requests,
            "warmup": summary(runs["warmup"]),
            "no_warmup": summary(runs["no_warmup"]),
            "runs": runs,
            "loadavg_at_end": loadavg(),
        }
        w, c = result["warmup"], result["no_warmup"]
        result["ratios"] = {
            "first_over_p50_with_warmup": w["first_over_p50"],
            "first_over_p50_without_warmup": c["first_over_p50"],
            "ready_s_with_over_without_warmup": round(w["ready_s"] / c["ready_s"], 2),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
