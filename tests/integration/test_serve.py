"""The verifier service in process (FastAPI TestClient over the real app): decisions on real photos, the admin API,
authentication, limits, a bad-input corpus, and what the logs may not contain."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import secrets
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facegate.config import load_settings
from facegate.logs import JsonFormatter
from facegate.serve.app import create_app
from facegate.serve.auth import ApiKeyStore
from facegate.serve.gallery import Gallery, KeyRing
from facegate.serve.models import build_runtime

pytestmark = pytest.mark.integration

ADMIN = secrets.token_urlsafe(24)  # made up per run, never a literal in the source
GALLERY_KEY = KeyRing.generate("k1")


def _made_up_key() -> str:
    """A key-shaped string that was never issued (made up per call, never a literal)."""
    return "fgk_" + secrets.token_urlsafe(16)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2(image: bytes | str, student: str = "S1", **over: object) -> dict[str, object]:
    img = image if isinstance(image, str) else b64(image)
    inputs = [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [img]},
        {"name": "student_id", "shape": [1], "datatype": "BYTES", "data": [student]},
    ]
    return {"inputs": inputs, **over}


def binary_body(elements: dict[str, list[bytes]]) -> tuple[bytes, int]:
    """A v2 binary-extension body (what Triton clients send) for BYTES inputs."""
    blobs, inputs = [], []
    for name, values in elements.items():
        raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
        blobs.append(raw)
        inputs.append(
            {"name": name, "shape": [len(values)], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
        )
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(blobs), len(header)


def _png(w: int, h: int, mode: str = "1") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _make_app(tmp: Path, **overrides: object):  # type: ignore[no-untyped-def]
    settings = load_settings(
        overrides={"home": str(tmp), "serve.max_request_bytes": 2_000_000, "serve.rate_burst": 10_000, **overrides},
        env={},
    )
    gallery = Gallery(settings.gallery_url(), KeyRing.from_env({"FACEGATE_GALLERY_KEYS": GALLERY_KEY}))
    runtime = build_runtime(settings, "sface", gallery=gallery)
    keys = ApiKeyStore(gallery.engine, env={"FACEGATE_ADMIN_KEY": ADMIN})
    return create_app(settings, runtime, keys), keys


@pytest.fixture(scope="module")
def service(photos, tmp_path_factory):  # type: ignore[no-untyped-def]
    gate, keys = _make_app(tmp_path_factory.mktemp("serve"))
    kiosk = keys.create("kiosk-7")
    with TestClient(gate) as client:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        enrol = [(photos / "train" / "obama" / n).read_bytes() for n in ("obama.jpg", "obama2.jpg")]
        r = client.put("/admin/v1/students/S1", json={"photos": [b64(p) for p in enrol]}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 2
        yield client, {"Authorization": f"Bearer {kiosk}"}, admin, gate, kiosk


def _out(resp) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {o["name"]: o["data"][0] for o in resp.json()["outputs"]}


def test_verify_accepts_same_person_rejects_other_and_asks_retry(service, photos):
    client, kiosk, _, gate, _ = service
    same = client.post(
        "/v2/models/verifier/infer", json=v2((photos / "test" / "obama1.jpg").read_bytes()), headers=kiosk
    )
    assert same.status_code == 200, same.text
    out = _out(same)
    assert out["decision"] == "accept" and out["reason"] == "match"
    assert out["score"] >= out["threshold"] == pytest.approx(gate.runtime.threshold)
    assert out["model_version"] == gate.runtime.embedder.version

    other = client.post(
        "/v2/models/verifier/infer", json=v2((photos / "train" / "biden" / "biden.jpg").read_bytes()), headers=kiosk
    )
    assert _out(other)["decision"] == "reject" and _out(other)["score"] < out["threshold"]

    two = client.post("/v2/models/verifier/infer", json=v2((photos / "two_people.jpg").read_bytes()), headers=kiosk)
    assert (_out(two)["decision"], _out(two)["reason"]) == ("retry", "multiple_faces")

    blank = np.full((480, 640, 3), 128, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(blank).save(buf, format="JPEG")
    none = client.post("/v2/models/verifier/infer", json=v2(buf.getvalue()), headers=kiosk)
    assert (_out(none)["decision"], _out(none)["reason"]) == ("retry", "no_face")

    # A face too blurred, or too small, to trust: the kiosk is asked to take the photo again.
    photo = np.asarray(Image.open(photos / "test" / "obama1.jpg").convert("RGB"))
    for label, bad in (
        ("blurry", cv2.GaussianBlur(photo, (101, 101), 0)),
        ("too small", cv2.resize(photo, None, fx=0.07, fy=0.07, interpolation=cv2.INTER_AREA)),
    ):
        buf = io.BytesIO()
        Image.fromarray(bad).save(buf, format="JPEG", quality=95)
        r = client.post("/v2/models/verifier/infer", json=v2(buf.getvalue()), headers=kiosk)
        assert (_out(r)["decision"], _out(r)["reason"]) == ("retry", "low_quality"), (label, _out(r))

    # v1 :predict gives the same decision, and a binary (Triton-style) body too.
    v1 = client.post(
        "/v1/models/verifier:predict",
        json={
            "instances": [{"image": {"b64": b64((photos / "test" / "obama1.jpg").read_bytes())}, "student_id": "S1"}]
        },
        headers=kiosk,
    )
    assert v1.status_code == 200 and v1.json()["predictions"][0]["decision"] == "accept"
    body, n = binary_body({"image": [(photos / "test" / "obama1.jpg").read_bytes()], "student_id": [b"S1"]})
    binr = client.post(
        "/v2/models/verifier/infer",
        content=body,
        headers={**kiosk, "Inference-Header-Content-Length": str(n), "Content-Type": "application/octet-stream"},
    )
    assert binr.status_code == 200, binr.text
    assert _out(binr)["decision"] == "accept"

    audit = client.get("/admin/v1/audit?limit=50", headers=service[2]).json()["entries"]
    verifies = [e for e in audit if e["action"] == "verify"]
    assert {e["decision"] for e in verifies} >= {"accept", "reject", "retry"}
    assert all(e["kiosk"] == "kiosk-7" for e in verifies)
    from prometheus_client import REGISTRY, generate_latest  # /metrics is on its own port (test_serve_hardening)

    metrics = generate_latest(REGISTRY).decode()
    assert 'facegate_decisions_total{decision="retry",model_version=' in metrics
    assert "facegate_stage_seconds_bucket" in metrics and "facegate_score_bucket" in metrics
    # The blank grey photo (no face) is counted in its illumination bin, by covariate and bin only.
    assert (
        'facegate_covariate_decisions_total{bin="normal",covariate="illumination",decision="retry",reason="no_face"}'
        in metrics
    )
    by_bin = client.get("/admin/v1/covariates", headers=service[2]).json()
    assert by_bin["illumination"]["normal"]["retry"] >= 1 and by_bin["face_size"]["unknown"]["retry"] >= 1
    assert client.get("/admin/v1/covariates", headers=kiosk).status_code == 403  # proctors' view, not kiosks'


def test_embed_model_returns_unit_norm_embeddings(service, photos, lfw):
    client, kiosk, *_ = service
    imgs = [(photos / "test" / "obama1.jpg").read_bytes(), next((lfw / "Aaron_Peirsol").glob("*.jpg")).read_bytes()]
    r = client.post(
        "/v2/models/embed/infer",
        json={"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(i) for i in imgs]}]},
        headers=kiosk,
    )
    assert r.status_code == 200, r.text
    emb = next(o for o in r.json()["outputs"] if o["name"] == "embedding")
    arr = np.asarray(emb["data"], np.float32).reshape(emb["shape"])
    assert arr.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-4)


def test_auth_missing_wrong_revoked_and_forbidden(service, photos):
    client, kiosk, admin, gate, _ = service
    body = v2((photos / "test" / "obama1.jpg").read_bytes())
    assert client.post("/v2/models/verifier/infer", json=body).status_code == 401
    r = client.post("/v2/models/verifier/infer", json=body, headers={"Authorization": f"Bearer {_made_up_key()}"})
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/admin/v1/students", headers=kiosk).status_code == 403
    assert client.delete("/admin/v1/students/S1", headers=kiosk).status_code == 403
    # A client cannot claim a principal by sending the internal header itself.
    spoof = client.get("/admin/v1/students", headers={"x-facegate-principal": "ops:admin"})
    assert spoof.status_code == 401
    # A new kiosk key works, and stops working once revoked (the cache is cleared on revoke).
    new = client.post("/admin/v1/keys/kiosk-9", headers=admin).json()["key"]
    assert client.post("/v2/models/verifier/infer", json=body, headers={"X-API-Key": new}).status_code == 200
    assert client.delete("/admin/v1/keys/kiosk-9", headers=admin).status_code == 200
    assert client.post("/v2/models/verifier/infer", json=body, headers={"X-API-Key": new}).status_code == 401
    listed = client.get("/admin/v1/keys", headers=admin).json()["keys"]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    # Keys are stored hashed: the plaintext is nowhere in the database file.
    db = Path(gate.runtime.gallery.engine.url.database).read_bytes()
    assert new.encode() not in db and service[4].encode() not in db
    # A client address that keeps guessing is throttled before its guesses cost database lookups.
    guesses = [
        client.post("/v2/models/verifier/infer", json=body, headers={"X-API-Key": _made_up_key()}).status_code
        for i in range(40)
    ]
    assert 429 in guesses and set(guesses) <= {401, 429}
    # Kiosks sharing that address (one ingress, one NAT) keep working with keys that authenticated before.
    assert client.post("/v2/models/verifier/infer", json=body, headers=kiosk).status_code == 200
    never_used = client.post("/admin/v1/keys/kiosk-10", headers=admin).json()["key"]
    r = client.post("/v2/models/verifier/infer", json=body, headers={"X-API-Key": never_used})
    assert r.status_code == 200  # a valid key is never refused for another client's failures
    gate.failures = type(gate.failures)(rate_per_minute=30, burst=30)  # reset for the other tests
    # Health and readiness stay open for Kubernetes probes; metrics are not on this port at all.
    for path in ("/", "/v2/health/live", "/v2/health/ready", "/v2/models/verifier/ready"):
        assert client.get(path).status_code == 200, path
    assert client.get("/metrics").status_code == 404


def test_oversized_request_refused_before_decoding(service, monkeypatch):
    client, kiosk, *_ = service
    import facegate.serve.models as models

    calls = []
    real = models.decode_image
    monkeypatch.setattr(models, "decode_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    big = b64(b"\xff\xd8" + b"\0" * 3_000_000)
    r = client.post("/v2/models/verifier/infer", json=v2(big), headers=kiosk)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert calls == []
    # Streamed without a Content-Length, it is cut off as soon as the limit is crossed.
    chunks = (b"x" * 500_000 for _ in range(10))
    r = client.post("/v2/models/verifier/infer", content=chunks, headers=kiosk)
    assert r.status_code == 413 and calls == []


def test_enroll_delete_via_admin_api_removes_every_row(service, photos):
    client, kiosk, admin, gate, _ = service
    photo = b64((photos / "train" / "rose_leslie" / "img1.jpg").read_bytes())
    bad = b64(b"not an image")
    r = client.put("/admin/v1/students/S-tmp", json={"photos": [photo, bad]}, headers=admin)
    assert r.status_code == 200
    assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["reason"] == "not_an_image"
    r = client.put("/admin/v1/students/S-bad", json={"photos": [bad]}, headers=admin)
    assert r.status_code == 422 and r.json()["code"] == "no_usable_photo"
    from sqlalchemy import text

    def rows(student: str) -> dict[str, int]:
        with gate.runtime.gallery.engine.connect() as conn:
            return {
                t: conn.execute(text(f"SELECT COUNT(*) FROM {t} WHERE {c} = :s"), {"s": student}).scalar_one()
                for t, c in (("students", "id"), ("crops", "student_id"), ("templates", "student_id"))
            }

    assert rows("S-tmp") == {"students": 1, "crops": 1, "templates": 1}
    assert client.delete("/admin/v1/students/S-tmp", headers=admin).json()["deleted"] is True
    assert rows("S-tmp") == {"students": 0, "crops": 0, "templates": 0}
    assert client.delete("/admin/v1/students/S-tmp", headers=admin).status_code == 404
    r = client.post("/v2/models/verifier/infer", json=v2(photo, "S-tmp"), headers=kiosk)
    assert r.status_code == 404 and r.json()["code"] == "unknown_student"
    assert {s["student_id"] for s in client.get("/admin/v1/students", headers=admin).json()["students"]} == {"S1"}


def test_rate_limit_per_kiosk(photos, tmp_path):
    gate, keys = _make_app(tmp_path, **{"serve.rate_burst": 3, "serve.rate_per_minute": 1.0})
    a, b = keys.create("a"), keys.create("b")
    with TestClient(gate) as client:
        codes = [client.post("/v2/models/verifier/infer", json={}, headers={"X-API-Key": a}) for _ in range(4)]
        assert [c.status_code for c in codes[:3]] == [422, 422, 422]  # admitted (and refused as malformed)
        assert codes[3].status_code == 429 and int(codes[3].headers["retry-after"]) >= 1
        # Another kiosk has its own bucket.
        assert client.post("/v2/models/verifier/infer", json={}, headers={"X-API-Key": b}).status_code == 422


def _inp(name: str, data: list[object], shape: list[int] | None = None, dt: str = "BYTES") -> dict[str, object]:
    return {"name": name, "shape": [len(data)] if shape is None else shape, "datatype": dt, "data": data}


def _req(*inputs: dict[str, object], path: str | None = None) -> dict[str, object]:
    return {"json": {"inputs": list(inputs)}, **({"path": path} if path else {})}


def _bin(content: bytes, length: object) -> dict[str, object]:
    return {"content": content, "headers": {"inference-header-content-length": str(length)}}


def _v1(instances: object) -> dict[str, object]:
    return {"path": "/v1/models/verifier:predict", "json": instances}


def _admin(method: str, path: str, body: object = None) -> dict[str, object]:
    return {"method": method, "path": path, **({"json": body} if body is not None else {})}


def _corpus(photos: Path) -> list[tuple[str, dict[str, object]]]:
    good = (photos / "test" / "obama1.jpg").read_bytes()
    g64 = b64(good)
    corrupt = good[:600] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)) + good[-2:]
    gif, ico = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, format="GIF")
    Image.new("RGB", (64, 64)).save(ico, format="ICO")
    bin_ok, n_ok = binary_body({"image": [good], "student_id": [b"S1"]})
    bin_utf8, n_utf8 = binary_body({"image": [good], "student_id": [b"\xff\xfe\x00"]})
    img, sid = _inp("image", [g64]), _inp("student_id", ["S1"])
    raw_json = {"headers": {"content-type": "application/json"}}
    return [
        ("truncated jpeg", {"json": v2(good[: len(good) // 3])}),
        ("0-byte image", {"json": v2(b"")}),
        ("text named image", {"json": v2(b"hello, I am a text file\n")}),
        ("corrupt jpeg", {"json": v2(corrupt)}),
        ("decompression bomb png", {"json": v2(_png(30000, 30000))}),  # 900 Mpx in a few kB
        ("20000x20000 png", {"json": v2(_png(20000, 20000))}),
        ("gif not accepted", {"json": v2(gif.getvalue())}),
        ("ico not accepted", {"json": v2(ico.getvalue())}),
        ("8x8 image", {"json": v2(_png(8, 8, "RGB"))}),
        ("image not base64", {"json": v2("@@@ not base64 @@@")}),
        ("image datatype FP32", _req(_inp("image", [1.0], dt="FP32"), sid)),
        ("student_id datatype INT32", _req(img, _inp("student_id", [7], dt="INT32"))),
        ("two images", _req(_inp("image", [g64, g64]), _inp("student_id", ["S1", "S1"]))),
        ("missing student_id", _req(img)),
        ("missing image", _req(sid)),
        ("extra input", _req(img, sid, _inp("x", ["y"]))),
        ("numbers as BYTES data", _req(_inp("image", [5]), _inp("student_id", [6]))),
        ("negative shape", _req(_inp("image", [g64], [-1]), _inp("student_id", ["S1"], [-1]))),
        ("malformed json", {"content": b'{"inputs": [', **raw_json}),
        ("json array body", {"json": [1, 2, 3]}),
        ("empty body", {"content": b"", **raw_json}),
        ("inputs not a list", {"json": {"inputs": {"image": "x"}}}),
        ("huge student id", {"json": v2(good, "9" * 100_000)}),
        ("sql-looking id", {"json": v2(good, "1'; DROP TABLE students;--")}),
        ("unknown student", {"json": v2(good, "S-does-not-exist")}),
        ("unicode student id", {"json": v2(good, "學生-ü-🙂")}),
        ("control character in id", {"json": v2(good, "S\x001")}),
        ("id with surrounding spaces", {"json": v2(good, " S1 ")}),
        ("empty student id", {"json": v2(good, "")}),
        ("student id not utf-8 (binary)", _bin(bin_utf8, n_utf8)),
        ("binary: header length not a number", _bin(bin_ok, "abc")),
        ("binary: header length beyond body", _bin(bin_ok, len(bin_ok) + 99)),
        ("binary: element overruns data", _bin(bin_ok[:n_ok] + struct.pack("<I", 10**6) + b"xx", n_ok)),
        ("binary: trailing garbage", _bin(bin_ok + b"garbage", n_ok)),
        ("binary: json part invalid", _bin(b"{nope" + bin_ok[n_ok:], 5)),
        ("v1 without instances", _v1({"inputs": []})),
        ("v1 image not base64", _v1({"instances": [{"image": {"b64": "%%%"}, "student_id": "S1"}]})),
        ("v1 two instances", _v1({"instances": [{"image": g64, "student_id": "S1"}] * 2})),
        ("v1 not json", {"path": "/v1/models/verifier:predict", "content": b"\x00\x01garbage", **raw_json}),
        ("unknown model", {"path": "/v2/models/nope/infer", "json": v2(good)}),
        ("embed with zero images", _req(_inp("image", []), path="/v2/models/embed/infer")),
        (
            "embed image without a face",
            _req(_inp("image", [b64(_png(200, 200, "RGB"))]), path="/v2/models/embed/infer"),
        ),
        ("enroll with non-base64 photo", _admin("PUT", "/admin/v1/students/S2", {"photos": ["%%%"]})),
        ("enroll with no photos", _admin("PUT", "/admin/v1/students/S2", {"photos": []})),
        ("enroll with sql-looking id", _admin("PUT", "/admin/v1/students/x%27%20OR%201%3D1", {"photos": [b64(b"")]})),
        ("delete unknown student", _admin("DELETE", "/admin/v1/students/nobody")),
        ("audit limit not a number", _admin("GET", "/admin/v1/audit?limit=lots")),
        ("v1 explain", {"path": "/v1/models/verifier:explain", "json": {"instances": []}}),
        ("model version in the path", {"path": "/v2/models/verifier/versions/1/infer", "json": v2(good)}),
        ("model version metadata, no key", {"method": "GET", "path": "/v2/models/verifier/versions/1"}),
        ("unload the verifier", _admin("POST", "/v2/repository/models/verifier/unload")),
    ]


def test_bad_input_corpus_gets_4xx_json_and_server_keeps_answering(service, photos):
    client, kiosk, admin, *_ = service
    corpus = _corpus(photos)
    assert len(corpus) >= 30
    seen = {}
    for name, spec in corpus:
        spec = dict(spec)
        method = str(spec.pop("method", "POST"))
        path = str(spec.pop("path", "/v2/models/verifier/infer"))
        headers = {**(admin if path.startswith("/admin") else kiosk), **dict(spec.pop("headers", {}))}  # type: ignore[arg-type]
        r = client.request(method, path, headers=headers, **spec)  # type: ignore[arg-type]
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
        payload = r.json()
        assert isinstance(payload.get("error"), str) and payload.get("code"), (name, payload)
        seen[name] = (r.status_code, payload["code"])
    assert seen["decompression bomb png"] == (413, "too_many_pixels")
    assert seen["unknown student"] == (404, "unknown_student")
    assert seen["sql-looking id"][1] == "unknown_student"
    # Still up, still right, and the students table survived the SQL-looking id.
    r = client.post("/v2/models/verifier/infer", json=v2((photos / "test" / "obama1.jpg").read_bytes()), headers=kiosk)
    assert r.status_code == 200 and _out(r)["decision"] == "accept"
    assert [s["student_id"] for s in client.get("/admin/v1/students", headers=admin).json()["students"]] == ["S1"]


def test_logs_hold_no_key_image_or_template(service, photos):
    client, kiosk, admin, gate, kiosk_key = service
    guess = _made_up_key()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(lambda rec: not rec.name.startswith(("httpx", "httpcore")))  # the test's client, not the server
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        img = (photos / "train" / "obama" / "obama.jpg").read_bytes()
        client.put("/admin/v1/students/S-log", json={"photos": [b64(img)]}, headers=admin)
        template = gate.runtime.gallery.template("S-log", gate.runtime.embedder.version)
        client.post("/v2/models/verifier/infer", json=v2(img, "S-log"), headers=kiosk)
        # A client-chosen request id is echoed and logged only when it is a plain token.
        odd = v2(img, "S-log")
        odd["id"] = "x" * 5000 + "\n{forged}"
        r = client.post("/v2/models/verifier/infer", json=odd, headers=kiosk)
        assert r.status_code == 200 and "forged" not in r.json()["id"]
        client.post("/v2/models/verifier/infer", json=v2(b"junk", "S-log"), headers=kiosk)
        client.post("/v2/models/verifier/infer", json=v2(img, "S-log"), headers={"X-API-Key": guess})
        client.delete("/admin/v1/students/S-log", headers=admin)
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(rec.get("msg") == "verify" for rec in lines) and any(rec.get("msg") == "request" for rec in lines)
    for secret in (ADMIN, kiosk_key, guess, GALLERY_KEY.split(":", 1)[1], b64(img)[:40], "S-log"):
        assert secret not in text, [line[:300] for line in text.splitlines() if secret in line][:3]
    assert template is not None
    assert not any(f"{v:.5f}" in text for v in template[:16])
    assert not re.search(r"(-?\d\.\d{4,}[\s,]+){8}", text)  # no vector of floats, with commas or numpy-style
    assert "xxxxxxxxxxxxxxxx" not in text and "forged" not in text
    # Student ids appear as keyed tags, not as a plain digest anyone could recompute from a list of ids.
    assert hashlib.sha256(b"S-log").hexdigest()[:12] not in text
