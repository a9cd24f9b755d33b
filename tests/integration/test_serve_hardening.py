"""Issue 11 (hardening) against the real verifier served by uvicorn on 127.0.0.1, configured as `facegate serve`
configures it: slow clients, early refusals, the enrollment oracle, pixel budgets and Triton discovery."""

from __future__ import annotations

import base64
import io
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from facegate.config import load_settings
from facegate.serve.app import create_app
from facegate.serve.auth import ApiKeyStore
from facegate.serve.gallery import Gallery, KeyRing
from facegate.serve.local import LocalServer
from facegate.serve.models import build_runtime

pytestmark = pytest.mark.integration

ADMIN = secrets.token_urlsafe(24)  # made up per run
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def live(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("hardening")
    settings = load_settings(
        overrides={
            "home": str(tmp),
            "serve.max_request_bytes": 2_000_000,
            "serve.max_request_pixels": 8_000_000,
            "serve.rate_burst": 10_000,
            "serve.header_timeout_s": TIMEOUT_S,
            "serve.body_timeout_s": TIMEOUT_S,
        },
        env={},
    )
    gallery = Gallery(settings.gallery_url(), KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")}))
    runtime = build_runtime(settings, "sface", gallery=gallery)
    keys = ApiKeyStore(gallery.engine, env={"FACEGATE_ADMIN_KEY": ADMIN})
    kiosk = keys.create("kiosk-1")
    with LocalServer(create_app(settings, runtime, keys), settings=settings) as server:
        enrol = base64.b64encode((photos / "train" / "obama" / "obama.jpg").read_bytes()).decode()
        r = httpx.put(
            server.url + "/admin/v1/students/S1",
            json={"photos": [enrol]},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        yield {"url": server.url, "port": server.port, "kiosk": kiosk, "keys": keys}
    runtime.close()


def _verify_body(image: bytes, student: str = "S1") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]},
            {"name": "student_id", "shape": [1], "datatype": "BYTES", "data": [student]},
        ]
    }


def _verify(live: dict[str, Any], image: bytes, student: str = "S1") -> httpx.Response:
    return httpx.post(
        live["url"] + "/v2/models/verifier/infer",
        json=_verify_body(image, student),
        headers={"Authorization": f"Bearer {live['kiosk']}"},
        timeout=30,
    )


def _closed_within(sock: socket.socket, deadline: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` before ``deadline`` (monotonic), and what it sent before closing."""
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, got
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False, got
        except OSError:  # reset by the server: closed as well
            return True, got
        if not chunk:
            return True, got
        got += chunk


def test_slowloris_cannot_delay_a_verify_and_is_closed_within_the_timeout(live: dict[str, Any], photos: Path) -> None:
    photo = (photos / "test" / "obama1.jpg").read_bytes()
    assert _verify(live, photo).status_code == 200  # warm
    socks = []
    opened = time.monotonic()
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", live["port"]), timeout=10)
            # Unfinished headers: the request line and one header, never the blank line that ends them.
            s.sendall(f"POST /v2/models/verifier/infer HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: 1\r\n".encode())
            socks.append(s)
        t0 = time.perf_counter()
        r = _verify(live, photo)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200 and elapsed < 1.0, (r.status_code, elapsed)
        # Every slow socket is closed once the header timeout has passed (margin for a loaded 2-core machine).
        deadline = opened + TIMEOUT_S + 6.0
        results = [_closed_within(s, deadline) for s in socks]
        assert all(closed for closed, _ in results), sum(not c for c, _ in results)
        assert sum(b" 408 " in got for _, got in results) >= 250
    finally:
        for s in socks:
            s.close()
    assert _verify(live, photo).status_code == 200


def test_partial_body_times_out_and_early_refusal_closes_the_connection(live: dict[str, Any]) -> None:
    port = live["port"]
    auth = f"Authorization: Bearer {live['kiosk']}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"POST /v2/models/verifier/infer HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            'Content-Length: 5000\r\n\r\n{"inputs": ['.encode()
        )
        closed, got = _closed_within(s, time.monotonic() + TIMEOUT_S + 6.0)
        assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
    # A chunked upload past the body limit: 413 at once, then the connection is closed although the client could
    # keep streaming.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"POST /v2/models/verifier/infer HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"a" * 65536
        t0 = time.monotonic()
        try:
            for _ in range(40):  # 2.6 MB, over the 2 MB limit
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed while we were still sending: what we want
        closed, got = _closed_within(s, t0 + 5.0)
        assert closed and b" 413 " in got.split(b"\r\n", 1)[0], got[:200]
    # A refusal before any body is read (no key) closes too.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v2/models/verifier/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        closed, got = _closed_within(s, time.monotonic() + 5.0)
        assert closed and b" 401 " in got.split(b"\r\n", 1)[0]


def test_no_enrollment_oracle_from_bad_images(live: dict[str, Any], photos: Path) -> None:
    """A bad image gets the same answer whether the student is enrolled or not; only a usable check-in tells."""
    for junk in (b"\xff\xd8\xff", b"GIF89a" + b"\0" * 64, b"not an image at all"):
        enrolled, unknown = _verify(live, junk, "S1"), _verify(live, junk, "S-nobody")
        assert enrolled.status_code == unknown.status_code == 400, (enrolled.text, unknown.text)
        assert enrolled.json()["code"] == unknown.json()["code"]
    # The documented answer a kiosk key does get: a usable photo and an unknown id -> 404.
    assert _verify(live, (photos / "test" / "obama1.jpg").read_bytes(), "S-nobody").status_code == 404


def test_duplicate_inputs_and_pixel_budget_over_http(live: dict[str, Any], photos: Path) -> None:
    headers = {"Authorization": f"Bearer {live['kiosk']}"}
    body = _verify_body((photos / "test" / "obama1.jpg").read_bytes())
    body["inputs"].append({"name": "student_id", "shape": [1], "datatype": "BYTES", "data": ["S2"]})
    r = httpx.post(live["url"] + "/v2/models/verifier/infer", json=body, headers=headers, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == "duplicate_input"
    # Three 3-megapixel PNGs (PNG has no reduced-scale decode) overspend the 8-megapixel budget of one request.
    y, x = np.mgrid[0:1500, 0:2000]
    buf = io.BytesIO()
    Image.fromarray(((x // 50 + y // 50) % 2 * 255).astype(np.uint8)).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    embed = {"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": [png] * 3}]}
    r = httpx.post(live["url"] + "/v2/models/embed/infer", json=embed, headers=headers, timeout=60)
    assert r.status_code == 413 and r.json()["code"] == "too_many_pixels", r.text


def test_triton_client_discovers_and_infers_from_metadata_alone(live: dict[str, Any], photos: Path) -> None:
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    client = th.InferenceServerClient(f"127.0.0.1:{live['port']}", connection_timeout=30, network_timeout=60)
    headers = {"Authorization": f"Bearer {live['kiosk']}"}
    server = client.get_server_metadata()
    assert "model_repository_extension" not in server["extensions"]
    with pytest.raises(InferenceServerException):
        client.get_model_repository_index()  # not advertised, and indeed not there
    photo = (photos / "test" / "obama1.jpg").read_bytes()
    values = {"image": photo, "student_id": b"S1"}
    for model in ("verifier", "embed"):
        meta = client.get_model_metadata(model)
        assert meta["inputs"] and meta["outputs"], meta
        inputs = []
        for spec in meta["inputs"]:  # built from the metadata only: names, datatypes, shapes
            shape = [1 if d == -1 else int(d) for d in spec["shape"]]
            inp = th.InferInput(spec["name"], shape, spec["datatype"])
            inp.set_data_from_numpy(np.array([values[spec["name"]]], dtype=object), binary_data=True)
            inputs.append(inp)
        outputs = [th.InferRequestedOutput(o["name"], binary_data=True) for o in meta["outputs"]]
        res = client.infer(model, inputs, outputs=outputs, headers=headers)
        got = {o["name"]: res.as_numpy(o["name"]) for o in meta["outputs"]}
        for spec in meta["outputs"]:
            arr = got[spec["name"]]
            assert arr is not None and arr.ndim == len(spec["shape"])
            assert arr.dtype == (np.float32 if spec["datatype"] == "FP32" else object)
        if model == "verifier":
            decision = got["decision"][0]
            assert (decision.decode() if isinstance(decision, bytes) else decision) == "accept"
            assert float(got["score"][0]) >= float(got["threshold"][0])
        else:
            assert got["embedding"].shape == (1, int(meta["outputs"][0]["shape"][1]))
