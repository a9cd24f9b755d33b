"""Smoke test of the built serve image, run the way the chart runs it, with a real engine (podman).

    .venv/bin/python tools/images/smoke_serve.py [--image ghcr.io/facegate/facegate-serve:0.1.0]

Exports SFace to an OpenVINO bundle (parity-gated, from ../shared's aligned LFW faces; cached under build/images/)
and starts the image as uid 10001 on a read-only root file system with the bundle mounted read-only at /mnt/models,
then checks, failing with the reason on the first that does not hold:
- the image is at most 700 MB and keeps its HEALTHCHECK;
- the process runs as uid 10001, and the root file system refuses writes;
- /v2/health/ready answers 200; the time from `podman run` to that is the start-to-ready figure;
- an enrolled student's own photo is accepted, another person's rejected, over the KServe v2 REST protocol;
- /kiosk/ is served with the service's Content-Security-Policy;
- /metrics answers on its own port (and not on the API port);
- SIGTERM with a request in flight (its headers sent, its body not yet): the request is still answered, and the
  container exits within the grace period (30 s in Kubernetes), with the image's entrypoint: tini as PID 1, as the
  chart also starts it (`command: [tini, --, facegate]`).
Prints one JSON object: start-to-ready (and, as its peer in the same run, the same server started from this
checkout's venv without a container), first and median verify latency, drain and exit times, load average.
Starts and removes only its own containers (by the names it gives them).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
PODMAN = str(REPO / "tools" / "images" / "podman.sh")
SHARED = Path(os.environ.get("FACEGATE_SHARED", REPO.parent / "shared"))
SIZE_GOAL_MB = 700  # issue 15: the serve image, OpenVINO and no torch, at most 700 MB
GRACE_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds (the chart keeps it)
UID = "10001"


class SmokeError(AssertionError):
    """A check of the image failed."""


def check(ok: bool, what: str) -> None:
    """Fail with ``what`` unless ``ok``."""
    if not ok:
        raise SmokeError(what)


def podman(*args: str, timeout: float = 120, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman (through the repo's configuration); raise with its stderr when it fails and ``ok``."""
    res = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if ok and res.returncode != 0:
        raise SmokeError(f"podman {' '.join(args[:2])} failed: {res.stderr.strip()[-2000:]}")
    return res


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundle(cache: Path) -> Path:
    """An OpenVINO FP32 SFace bundle (exported once, then reused from ``cache``)."""
    out = cache / "smoke-bundle"
    if not (out / "openvino-fp32").is_dir():
        from facegate.export.convert import export_model, load_faces

        lfw = SHARED / "data" / "lfw-aligned"
        check(lfw.is_dir(), f"needs {lfw} (../shared beside the checkout)")
        export_model("sface", out, load_faces(lfw, limit=40), formats=["openvino-fp32"])
    # The image runs as uid 10001, which must read what this (root) process wrote, as a storage initializer's files.
    for path in (out, *out.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out / "openvino-fp32"


def v2_request(image: bytes, student: str) -> dict[str, Any]:
    """A KServe v2 verify request in plain JSON (the image base64-encoded in a BYTES tensor)."""
    return {
        "id": secrets.token_hex(8),
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]},
            {"name": "student_id", "shape": [1], "datatype": "BYTES", "data": [student]},
        ],
    }


def decision(resp: httpx.Response) -> str:
    """The verifier's decision output."""
    check(resp.status_code == 200, f"verify answered {resp.status_code}: {resp.text[:300]}")
    out = {o["name"]: o["data"][0] for o in resp.json()["outputs"]}
    return str(out["decision"])


class Container:
    """One `podman run -d` of the image, removed on exit."""

    def __init__(self, image: str, model: Path, env: dict[str, str], entrypoint: list[str] | None = None) -> None:
        self.name = f"facegate-smoke-{os.getpid()}-{secrets.token_hex(3)}"
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Secrets travel by name (`-e NAME`): podman reads their values from its environment, not from argv.
        self.env = env
        args = ["run", "-d", "--name", self.name, "--read-only", "--user", f"{UID}:{UID}",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--tmpfs", "/var/lib/facegate:rw,size=64m,mode=1777",
                "--tmpfs", "/tmp:rw,size=64m",  # noqa: S108 (the container's own /tmp)
                "-v", f"{model}:/mnt/models:ro",
                "-p", f"127.0.0.1:{self.port}:8080", "-p", f"127.0.0.1:{self.metrics_port}:8082",
                *[x for k in env for x in ("-e", k)]]  # fmt: skip
        if entrypoint:
            args += ["--entrypoint", json.dumps(entrypoint[:1])]
            self.args = [*args, image, *entrypoint[1:]]
        else:
            self.args = [*args, image]

    def start(self) -> float:
        """Start the container; returns the seconds from `podman run` to /v2/health/ready answering 200."""
        t0 = time.monotonic()
        res = subprocess.run(  # noqa: S603 (our own argv)
            [PODMAN, *self.args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, **self.env},
        )
        check(res.returncode == 0, f"podman run failed: {res.stderr.strip()[-2000:]}")
        deadline = t0 + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            state = podman("inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()
            check(state == "running", f"container {state} before ready:\n{self.logs()}")
            time.sleep(0.1)
        raise SmokeError(f"not ready within 120 s:\n{self.logs()}")

    def logs(self) -> str:
        """The container's last log lines."""
        return podman("logs", "--tail", "40", self.name, ok=False).stderr[-4000:]

    def remove(self) -> None:
        """Remove the container (it is this script's own, by name)."""
        podman("rm", "-f", "-t", "0", self.name, ok=False)


def native_start_to_ready(model: Path, env: dict[str, str], home: Path) -> float:
    """The same server started from this checkout's venv, no container: the peer of the start-to-ready figure."""
    port = free_port()
    cmd = [sys.executable, "-m", "facegate", "serve", "--model", str(model), "--port", str(port), "--metrics-port", "0"]
    t0 = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 (our own argv)
        cmd, env={**os.environ, **env, "FACEGATE_HOME": str(home)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while time.monotonic() - t0 < 120:
            check(proc.poll() is None, "the native server exited before ready")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SmokeError("the native server was not ready within 120 s")
    finally:
        proc.terminate()  # the process this function started, by its pid
        proc.wait(30)


def drain_on_sigterm(ctr: Container, body: bytes, path: str, headers: dict[str, str]) -> dict[str, float | int]:
    """SIGTERM with a request in flight: the request must still be answered, the container exit within GRACE_S."""
    sock = socket.create_connection(("127.0.0.1", ctr.port), timeout=GRACE_S)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode())
    half = len(body) // 2
    sock.sendall(body[:half])
    time.sleep(0.5)  # the server has the request's headers: it is in flight
    t0 = time.monotonic()
    podman("kill", "--signal", "TERM", ctr.name)
    time.sleep(1.0)  # shutdown has begun; the body is still arriving
    sock.sendall(body[half:])
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    answered = time.monotonic() - t0
    sock.close()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    check(status != 0, f"in-flight request not answered after SIGTERM (got {reply[:200]!r})")
    waited = podman("wait", ctr.name, timeout=GRACE_S + 30).stdout.strip()
    exited = time.monotonic() - t0
    check(exited < GRACE_S, f"container took {exited:.1f} s to exit after SIGTERM (grace {GRACE_S:.0f} s)")
    return {"inflight_status": status, "answered_s": round(answered, 2), "exit_s": round(exited, 2),
            "exit_code": int(waited or -1)}  # fmt: skip


def run(image: str) -> dict[str, Any]:
    """Every check on one image; returns the figures."""
    from facegate.serve.gallery import KeyRing
    from facegate.serve.web import CONTENT_SECURITY_POLICY

    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    check(inspect["Config"].get("User", "").split(":")[0] == UID, f"image user is {inspect['Config'].get('User')}")
    healthcheck = inspect.get("Healthcheck") or inspect["Config"].get("Healthcheck")
    check(bool(healthcheck), "the image lost its HEALTHCHECK (build with --format docker)")
    model = bundle(REPO / "build" / "images")
    photos = SHARED / "data" / "photos"
    admin_key = secrets.token_urlsafe(24)
    env = {
        "FACEGATE_GALLERY_KEYS": KeyRing.generate("k1"),
        "FACEGATE_ADMIN_KEY": admin_key,
        "FACEGATE_SERVE__METRICS_HOST": "0.0.0.0",  # noqa: S104 (inside the container) as in the chart: scraped from outside the pod
        # The smoke test's requests come from one address; the limiter has its own tests.
        "FACEGATE_SERVE__RATE_PER_MINUTE": "6000",
        "FACEGATE_SERVE__RATE_BURST": "200",
    }
    admin = {"Authorization": f"Bearer {admin_key}"}
    result: dict[str, Any] = {"image": image, "size_mb": inspect["Size"] // 1_000_000}
    check(result["size_mb"] <= SIZE_GOAL_MB, f"the image is {result['size_mb']} MB (goal: {SIZE_GOAL_MB} MB)")

    native_home = REPO / "build" / "images" / "smoke-native-home"
    shutil.rmtree(native_home, ignore_errors=True)
    result["native_start_to_ready_s"] = round(native_start_to_ready(model, env, native_home), 2)
    ctr = Container(image, model, env)
    try:
        result["start_to_ready_s"] = round(ctr.start(), 2)
        result["start_to_ready_vs_native"] = round(result["start_to_ready_s"] / result["native_start_to_ready_s"], 2)
        whoami = podman("exec", ctr.name, "python", "-c", "import os; print(os.getuid(), os.getgid())").stdout
        check(whoami.split() == [UID, UID], f"server runs as {whoami.strip()}, not {UID}")
        write = podman("exec", ctr.name, "sh", "-c", "echo x > /opt/venv/probe", ok=False)
        check(write.returncode != 0 and "Read-only file system" in write.stderr, "root file system is writable")

        enrol = base64.b64encode((photos / "train" / "obama" / "obama.jpg").read_bytes()).decode()
        r = httpx.put(ctr.url + "/admin/v1/students/S1", json={"photos": [enrol]}, headers=admin, timeout=60)
        check(r.status_code == 200, f"enrol answered {r.status_code}: {r.text[:300]}")
        kiosk = httpx.post(ctr.url + "/admin/v1/keys/kiosk-1", headers=admin, timeout=30).json()["key"]
        auth = {"Authorization": f"Bearer {kiosk}"}
        same = (photos / "test" / "obama1.jpg").read_bytes()
        other = (photos / "train" / "biden" / "biden.jpg").read_bytes()
        infer = ctr.url + "/v2/models/verifier/infer"
        times = []
        for i in range(16):
            t0 = time.monotonic()
            got = decision(httpx.post(infer, json=v2_request(same, "S1"), headers=auth, timeout=60))
            times.append(time.monotonic() - t0)
            check(got == "accept", f"own photo: {got} (request {i})")
        check(decision(httpx.post(infer, json=v2_request(other, "S1"), headers=auth, timeout=60)) == "reject",
              "another person's photo was not rejected")  # fmt: skip
        result["first_verify_ms"] = round(times[0] * 1000, 1)
        result["p50_verify_ms"] = round(statistics.median(times[1:]) * 1000, 1)
        result["first_over_p50"] = round(times[0] / statistics.median(times[1:]), 2)

        page = httpx.get(ctr.url + "/kiosk/", timeout=10)
        check(page.status_code == 200 and "<html" in page.text.lower(), f"/kiosk/ answered {page.status_code}")
        csp = page.headers.get("content-security-policy")
        check(csp == CONTENT_SECURITY_POLICY, f"/kiosk/ CSP is {csp!r}")

        check(httpx.get(ctr.url + "/metrics", timeout=10).status_code == 404, "/metrics is on the API port")
        metrics = httpx.get(f"http://127.0.0.1:{ctr.metrics_port}/metrics", timeout=10)
        check('facegate_decisions_total{decision="accept"' in metrics.text, "no decision counter on the metrics port")

        body = json.dumps(v2_request(same, "S1")).encode()
        result["sigterm_tini"] = drain_on_sigterm(ctr, body, "/v2/models/verifier/infer",
                                                  {**auth, "Content-Type": "application/json"})  # fmt: skip
        check(result["sigterm_tini"]["inflight_status"] == 200, "the in-flight verify was not answered 200")
        logs = ctr.logs()
        for secret in (admin_key, kiosk, env["FACEGATE_GALLERY_KEYS"].split(":", 1)[1], enrol[:40]):
            check(secret not in logs, "a secret reached the container's log")
    finally:
        ctr.remove()

    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    return result


def smoke_main(doc: str, label: str, default_image: str, run_one: Callable[[str], dict[str, Any]]) -> int:
    """The command line of a smoke test: run it on --image, print its JSON and keep it in build/images/."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    version = next(line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines()
                   if line.startswith("version ="))  # fmt: skip
    parser.add_argument("--image", default=default_image.format(version=version))
    args = parser.parse_args()
    try:
        result = run_one(args.image)
    except SmokeError as err:
        print(f"{label} image smoke test FAILED: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    out = REPO / "build" / "images" / f"smoke-{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(smoke_main(__doc__ or "", "serve", "ghcr.io/facegate/facegate-serve:{version}", run))
