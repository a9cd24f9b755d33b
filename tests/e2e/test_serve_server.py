"""`facegate serve` as a real process on 127.0.0.1 with an OpenVINO bundle, answered through the official Triton
HTTP client (a client nobody here wrote), then stopped with SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from facegate.serve.gallery import KeyRing

pytestmark = pytest.mark.e2e

ADMIN = secrets.token_urlsafe(24)  # made up per run, never a literal in the source


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(lfw, photos, tmp_path_factory) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    from facegate.export.convert import export_model, load_faces

    tmp = tmp_path_factory.mktemp("server")
    export_model("sface", tmp / "exp", load_faces(lfw, limit=40), formats=["openvino-fp32"])
    bundle = tmp / "exp" / "openvino-fp32"
    port = _free_port()
    gallery_key = KeyRing.generate("k1")
    env = {
        **os.environ,
        "FACEGATE_HOME": str(tmp / "home"),
        "FACEGATE_GALLERY_KEYS": gallery_key,
        "FACEGATE_ADMIN_KEY": ADMIN,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facegate", "serve", "--model", str(bundle), "--port", str(port), "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp / "server.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready in 120 s"
            time.sleep(0.3)
        yield {"url": url, "port": port, "proc": proc, "log": tmp / "server.log", "gallery_key": gallery_key}
    finally:
        if proc.poll() is None:
            proc.kill()  # only the process this fixture started, by its pid
            proc.wait(10)
        log.close()


def _infer(client, image: bytes, student: bytes, key: str | None, binary: bool):  # type: ignore[no-untyped-def]
    import tritonclient.http as th

    img = th.InferInput("image", [1], "BYTES")
    img.set_data_from_numpy(np.array([image if binary else base64.b64encode(image)], dtype=object), binary_data=binary)
    sid = th.InferInput("student_id", [1], "BYTES")
    sid.set_data_from_numpy(np.array([student], dtype=object), binary_data=binary)
    outs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("decision", "score", "threshold", "model_version")]
    headers = {"Authorization": f"Bearer {key}"} if key else None
    res = client.infer("verifier", [img, sid], outputs=outs, headers=headers)
    out = {n: res.as_numpy(n)[0] for n in ("decision", "score", "threshold", "model_version")}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in out.items()}


def test_triton_client_against_served_openvino_verifier(server, photos):
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    url = str(server["url"])
    admin = {"Authorization": f"Bearer {ADMIN}"}
    enrol = base64.b64encode((photos / "train" / "obama" / "obama.jpg").read_bytes()).decode()
    r = httpx.put(url + "/admin/v1/students/S1", json={"photos": [enrol]}, headers=admin, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"].endswith("openvino-fp32")
    kiosk = httpx.post(url + "/admin/v1/keys/kiosk-1", headers=admin).json()["key"]

    client = th.InferenceServerClient(f"127.0.0.1:{server['port']}", connection_timeout=30, network_timeout=60)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("verifier")
    same = (photos / "test" / "obama1.jpg").read_bytes()
    other = (photos / "train" / "biden" / "biden.jpg").read_bytes()
    for binary in (True, False):  # the binary tensor extension and plain JSON
        ok = _infer(client, same, b"S1", kiosk, binary)
        assert ok["decision"] == "accept", ok
        assert ok["score"] >= ok["threshold"]
        assert ok["model_version"].endswith("openvino-fp32")
        bad = _infer(client, other, b"S1", kiosk, binary)
        assert bad["decision"] == "reject" and bad["score"] < bad["threshold"]
    with pytest.raises(InferenceServerException) as err:
        _infer(client, same, b"S1", None, True)
    assert "401" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        _infer(client, same, b"nobody", kiosk, True)
    assert "404" in str(err.value)
    client.close()

    # /metrics: not on the API port; on its own loopback port, which the "starting" log line names.
    assert httpx.get(url + "/metrics").status_code == 404
    starting = next(
        json.loads(line) for line in Path(str(server["log"])).read_text().splitlines() if '"starting"' in line
    )
    assert starting["metrics_url"].startswith("http://127.0.0.1:")
    metrics = httpx.get(starting["metrics_url"], timeout=10).text
    assert 'facegate_decisions_total{decision="accept"' in metrics

    proc = server["proc"]
    assert isinstance(proc, subprocess.Popen)
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal: the exit status says "terminated by SIGTERM".
    assert proc.wait(30) in (0, -signal.SIGTERM)
    text = Path(str(server["log"])).read_text()
    assert "Finished server process" in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any("127.0.0.1" in str(rec.get("msg", "")) or rec.get("host") == "127.0.0.1" for rec in records)
    assert any(rec.get("msg") == "verify" and rec.get("decision") == "accept" for rec in records)
    for secret in (ADMIN, kiosk, str(server["gallery_key"]).split(":", 1)[1], enrol[:40]):
        assert secret not in text
