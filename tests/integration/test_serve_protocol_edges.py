"""Issue 18 (protocol edges) against the real verifier served by uvicorn on 127.0.0.1, configured as `facegate serve`
configures it: refusals a client can read, request smuggling, one request id, Triton model configuration."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from facegate.config import load_settings
from facegate.serve.app import create_app
from facegate.serve.auth import ApiKeyStore
from facegate.serve.gallery import Gallery, KeyRing
from facegate.serve.local import LocalServer
from facegate.serve.models import build_runtime

pytestmark = pytest.mark.integration

LIMIT = 2_000_000
INFER = "/v2/models/verifier/infer"


@pytest.fixture(scope="module")
def live(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("edges")
    settings = load_settings(
        overrides={
            "home": str(tmp),
            "serve.max_request_bytes": LIMIT,
            "serve.rate_burst": 10_000,
            "serve.header_timeout_s": 3.0,
            "serve.body_timeout_s": 3.0,
        },
        env={},
    )
    gallery = Gallery(settings.gallery_url(), KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")}))
    runtime = build_runtime(settings, "sface", gallery=gallery)
    keys = ApiKeyStore(gallery.engine, env={})
    kiosk = keys.create("kiosk-1")
    flooder = keys.create("kiosk-flood")
    photo = (photos / "train" / "obama" / "obama.jpg").read_bytes()
    assert gallery.enroll("S1", [photo], runtime.embedder, runtime.aligner(), limits=runtime.limits).accepted
    with LocalServer(create_app(settings, runtime, keys), settings=settings) as server:
        yield {"url": server.url, "port": server.port, "kiosk": kiosk, "flooder": flooder, "gallery": gallery}
    runtime.close()


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"a" * n


def _post(port: int, key: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """POST with the standard library's client, which sends the whole body before it reads the answer (as browsers
    do): a refusal that resets the connection while the body is in flight is an error here, not a 4xx."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
        conn.request("POST", INFER, body=body, headers=hdrs, encode_chunked=not isinstance(body, bytes))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_a_12_mib_chunked_upload_reads_413_not_a_reset(live: dict[str, Any]) -> None:
    """The client finishes sending (the server drains what it refused) and reads the 413 with Connection: close."""
    status, headers, body = _post(live["port"], live["kiosk"], _chunks(12 * 1024 * 1024))
    assert status == 413 and json.loads(body)["code"] == "too_large", body
    assert headers["connection"] == "close"
    # Declared too large up front: refused on the header, the body drained all the same.
    status, headers, body = _post(live["port"], live["kiosk"], b"x" * (6 * 1024 * 1024))
    assert status == 413 and headers["connection"] == "close", body


def test_a_flooding_key_reads_429_with_retry_after_while_still_sending(live: dict[str, Any]) -> None:
    port = live["port"]
    auth = f"Authorization: Bearer {live['flooder']}\r\n"
    holders = []
    try:
        # Two requests that never finish their bodies hold the key's two in-flight slots.
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(
                f"POST {INFER} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                'Content-Length: 100000\r\n\r\n{"inputs": ['.encode()
            )
            holders.append(s)
        time.sleep(0.3)
        # More than the socket buffers hold: the 429 comes (before the size limit is reached) while it is sent.
        status, headers, body = _post(port, live["flooder"], _chunks(12 * 1024 * 1024))
        assert status == 429 and json.loads(body)["code"] == "too_many_inflight", body
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
    finally:
        for s in holders:
            s.close()


def _raw(port: int, request: bytes, wait_s: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        got = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                return got + b"<closed>"
            got += chunk
        return got


def test_content_length_with_chunked_is_refused_and_closed(live: dict[str, Any]) -> None:
    body = b'{"inputs": []}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    for path in (INFER, "/v2/health/ready"):
        # The second request would be smuggled behind a proxy that framed the body by Content-Length.
        req = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live['kiosk']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(chunked)}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode() + chunked
        got = _raw(live["port"], req + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        head = got.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 400"), got[:300]
        assert b"connection: close" in head
        assert b'"code":"ambiguous_framing"' in got.replace(b" ", b"")
        assert got.endswith(b"<closed>") and got.count(b"HTTP/1.1 ") == 1, got[-300:]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.mu = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.mu:
            self.records.append(record)


def test_one_request_id_in_body_header_audit_and_logs(live: dict[str, Any], photos: Path) -> None:
    capture = _Capture()
    loggers = [logging.getLogger("facegate.access"), logging.getLogger("facegate.serve")]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.INFO)
    photo = base64.b64encode((photos / "test" / "obama1.jpg").read_bytes()).decode()
    body = {
        "id": "kiosk-7.check-0042",
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [photo]},
            {"name": "student_id", "shape": [1], "datatype": "BYTES", "data": ["S1"]},
        ],
    }
    headers = {"Authorization": f"Bearer {live['kiosk']}"}
    try:
        # The body's id wins over a different header id, and over none.
        for sent in ({"x-request-id": "header-id-1"}, {}):
            r = httpx.post(live["url"] + INFER, json=body, headers={**headers, **sent}, timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["id"] == r.headers["x-request-id"] == "kiosk-7.check-0042"
        # An invalid body id is not echoed; the header's id is used everywhere instead.
        bad = {**body, "id": "bad id\nwith newline"}
        r = httpx.post(live["url"] + INFER, json=bad, headers={**headers, "x-request-id": "hdr-2"}, timeout=60)
        assert r.json()["id"] == r.headers["x-request-id"] == "hdr-2"
        embed = {"id": "embed-9", "inputs": [body["inputs"][0]]}
        r = httpx.post(live["url"] + "/v2/models/embed/infer", json=embed, headers=headers, timeout=60)
        assert r.json()["id"] == r.headers["x-request-id"] == "embed-9"
    finally:
        for lg in loggers:
            lg.removeHandler(capture)
    fields = [getattr(rec, "fields", {}) for rec in capture.records]
    access = [f["request_id"] for f in fields if "status" in f and f.get("path") == INFER]
    verify = [f["request_id"] for f in fields if "decision" in f]
    assert access == ["kiosk-7.check-0042", "kiosk-7.check-0042", "hdr-2"], access
    assert verify == ["kiosk-7.check-0042", "kiosk-7.check-0042", "hdr-2"], verify
    rows = [e for e in live["gallery"].audit(10) if e["action"] == "verify"][:3]
    assert [(e["detail"] or {}).get("request_id") for e in rows] == ["hdr-2", *["kiosk-7.check-0042"] * 2]


def test_triton_model_config_and_statistics(live: dict[str, Any], photos: Path) -> None:
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    client = th.InferenceServerClient(f"127.0.0.1:{live['port']}", connection_timeout=30, network_timeout=60)
    headers = {"Authorization": f"Bearer {live['kiosk']}"}
    types = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}
    before = {}
    for model in ("verifier", "embed"):
        config = client.get_model_config(model)
        meta = client.get_model_metadata(model)
        assert config["name"] == model and config["backend"] == "python"
        assert isinstance(config["max_batch_size"], int)
        # The configuration agrees with the metadata a Triton client already reads.
        for side, key in (("input", "inputs"), ("output", "outputs")):
            got = [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config[side]]
            want = [(t["name"], types[t["datatype"]], [int(d) for d in t["shape"]]) for t in meta[key]]
            assert got == want, (model, side)
        stats = client.get_inference_statistics(model, headers=headers)["model_stats"]
        assert [s["name"] for s in stats] == [model]
        before[model] = stats[0]
    assert client.get_model_config("embed")["parameters"]["max_images_per_request"]["string_value"] == "64"
    with pytest.raises(InferenceServerException):
        client.get_model_config("nope")
    with pytest.raises(InferenceServerException) as err:
        client.get_inference_statistics("verifier")  # statistics need a key, like /metrics needs its own port
    assert "401" in str(err.value) or "API key" in str(err.value)

    photo = (photos / "test" / "obama1.jpg").read_bytes()
    img = th.InferInput("image", [1], "BYTES")
    img.set_data_from_numpy(np.array([photo], dtype=object), binary_data=True)
    sid = th.InferInput("student_id", [1], "BYTES")
    sid.set_data_from_numpy(np.array([b"S1"], dtype=object), binary_data=True)
    client.infer("verifier", [img, sid], headers=headers)
    with pytest.raises(InferenceServerException):
        client.infer("verifier", [img], headers=headers)  # missing input: a failure
    after = client.get_inference_statistics("verifier", headers=headers)["model_stats"][0]
    b, a = before["verifier"]["inference_stats"], after["inference_stats"]
    assert a["success"]["count"] == b["success"]["count"] + 1 and a["success"]["ns"] > b["success"]["ns"]
    assert a["fail"]["count"] == b["fail"]["count"] + 1
    assert after["inference_count"] == before["verifier"]["inference_count"] + 1
    assert after["last_inference"] >= before["verifier"]["last_inference"]
    every = client.get_inference_statistics(headers=headers)["model_stats"]
    assert sorted(s["name"] for s in every) == ["embed", "verifier"]
    emb = next(s for s in every if s["name"] == "embed")
    assert emb == client.get_inference_statistics("embed", headers=headers)["model_stats"][0]
    client.close()
    json.dumps(every)  # plain JSON, nothing a client cannot parse
