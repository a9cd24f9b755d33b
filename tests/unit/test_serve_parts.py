"""Parts of the verifier service that need no model: API keys, rate limits, the v2 binary parser, the
micro-batcher, route classes and JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import struct

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from facegate.logs import JsonFormatter
from facegate.models.base import Embedder
from facegate.serve.app import route_class
from facegate.serve.auth import ApiKeyStore, AuthError, RateLimiter, hash_key
from facegate.serve.batching import MicroBatcher
from facegate.serve.kserve_compat import InvalidInput
from facegate.serve.protocol import BadRequestError, bytes_values, parse_binary_request

pytestmark = pytest.mark.unit


BOOTSTRAP = secrets.token_urlsafe(16)  # made up per run


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    return ApiKeyStore(create_engine(f"sqlite:///{tmp_path / 'k.db'}"), env={"FACEGATE_ADMIN_KEY": BOOTSTRAP})


def test_api_keys_hashed_roles_revocation_and_bootstrap(store):
    kiosk = store.create("kiosk-1")
    admin = store.create("ops", "admin")
    assert kiosk.startswith("fgk_") and len(kiosk) > 40 and kiosk != admin
    assert store.authenticate(kiosk).role == "kiosk" and store.authenticate(admin).role == "admin"
    assert store.authenticate(BOOTSTRAP).role == "admin"
    assert store.authenticate(None) is None and store.authenticate("") is None and store.authenticate("x" * 999) is None
    assert store.authenticate(kiosk + "x") is None
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT name, key_hash FROM api_keys")).all()
    assert dict(rows)["kiosk-1"] == hash_key(kiosk)
    assert all(kiosk not in str(r) and admin not in str(r) for r in rows)
    # Re-creating replaces the key; revoking stops it at once (the cache is cleared).
    again = store.create("kiosk-1")
    assert store.authenticate(kiosk) is None and store.authenticate(again).name == "kiosk-1"
    assert store.revoke("kiosk-1") and not store.revoke("kiosk-1")
    assert store.authenticate(again) is None
    assert {k["name"]: k["revoked_at"] is not None for k in store.list()} == {"kiosk-1": True, "ops": False}
    with pytest.raises(AuthError):
        store.create("bad name!")
    with pytest.raises(AuthError):
        store.create("k", "root")  # type: ignore[arg-type]


def test_rate_limiter_bucket_per_name():
    now = [0.0]
    lim = RateLimiter(rate_per_minute=60, burst=3, clock=lambda: now[0])
    assert [lim.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = lim.acquire("a")
    assert wait == pytest.approx(1.0)
    assert lim.acquire("b") == 0.0  # its own bucket
    now[0] = 1.0
    assert lim.acquire("a") == 0.0 and lim.acquire("a") > 0
    now[0] = 100.0  # refills, but never beyond the burst
    assert [lim.acquire("a") for _ in range(4)][-1] > 0


def _binary(values: dict[str, list[bytes]]) -> tuple[bytes, int]:
    raws = {k: b"".join(struct.pack("<I", len(v)) + v for v in vs) for k, vs in values.items()}
    inputs = [
        {"name": k, "shape": [len(vs)], "datatype": "BYTES", "parameters": {"binary_data_size": len(raws[k])}}
        for k, vs in values.items()
    ]
    header = json.dumps({"id": "r1", "inputs": inputs}).encode()
    return header + b"".join(raws.values()), len(header)


def test_binary_parser_keeps_raw_bytes_and_rejects_inconsistencies():
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9"  # not UTF-8: KServe 0.21 itself fails on this
    body, n = _binary({"image": [jpeg], "student_id": [b"S1"]})
    req = parse_binary_request(body, n, "verifier")
    assert req.id == "r1"
    by = {i.name: i for i in req.inputs}
    assert bytes_values(by["image"], base64_text=True) == [jpeg]
    assert bytes_values(by["student_id"], base64_text=False) == [b"S1"]
    for bad_body, bad_n in [
        (body, len(body) + 1),  # header longer than the body
        (body, 0),
        (body + b"tail", n),  # bytes after the last input
        (body[:-3], n),  # data cut short
        (b"{not json" + body[n:], 9),
    ]:
        with pytest.raises(InvalidInput):
            parse_binary_request(bad_body, bad_n, "verifier")
    two, n2 = _binary({"image": [b"a", b"b"]})
    shape_lie = two.replace(b'"shape": [2]', b'"shape": [3]')
    with pytest.raises(InvalidInput):
        parse_binary_request(shape_lie, n2, "verifier")


def test_bytes_values_checks_datatype_shape_and_base64():
    from facegate.serve.kserve_compat import InferInput

    ok = InferInput("image", [1], "BYTES", data=["aGk="])
    assert bytes_values(ok, base64_text=True) == [b"hi"]
    assert bytes_values(InferInput("s", [1], "BYTES", data=["hi"]), base64_text=False) == [b"hi"]
    for bad in (
        InferInput("image", [1], "FP32", data=[1.0]),
        InferInput("image", [2], "BYTES", data=["aGk="]),
        InferInput("image", [1], "BYTES", data=["***"]),
        InferInput("image", [1], "BYTES", data=[3]),
    ):
        with pytest.raises(BadRequestError):
            bytes_values(bad, base64_text=True)


class _CountingEmbedder(Embedder):
    name = "counting"
    embedding_size = 4

    def __init__(self) -> None:
        self.batches: list[int] = []

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        self.batches.append(len(faces))
        # Each face's embedding encodes its own pixel value, so a mix-up between callers would show.
        v = faces[:, 0, 0, 0].astype(np.float32)
        return np.stack([v + 1, np.ones_like(v), np.zeros_like(v), np.zeros_like(v)], axis=1)


def test_microbatcher_groups_concurrent_requests_and_keeps_order():
    emb = _CountingEmbedder()
    batcher = MicroBatcher(emb, max_batch=8, max_wait_s=0.05)

    async def main() -> list[np.ndarray]:
        faces = [np.full((1, 112, 112, 3), i, np.uint8) for i in range(12)]
        return await asyncio.gather(*(batcher.embed(f) for f in faces))

    try:
        out = asyncio.run(main())
    finally:
        batcher.close()
    assert len(emb.batches) < 12 and max(emb.batches) <= 8 and sum(emb.batches) == 12
    for i, e in enumerate(out):
        expected = np.array([i + 1, 1, 0, 0], np.float32)
        np.testing.assert_allclose(e[0], expected / np.linalg.norm(expected), rtol=1e-6)


def test_microbatcher_passes_errors_to_every_caller():
    class Broken(_CountingEmbedder):
        def _forward(self, faces: np.ndarray) -> np.ndarray:
            raise RuntimeError("device lost")

    batcher = MicroBatcher(Broken(), max_batch=4, max_wait_s=0.01)

    async def main() -> list[object]:
        faces = [np.zeros((1, 112, 112, 3), np.uint8) for _ in range(3)]
        return await asyncio.gather(*(batcher.embed(f) for f in faces), return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert all(isinstance(r, RuntimeError) for r in results)


def test_route_classes():
    assert route_class("/v2/models/verifier/infer") == "inference"
    assert route_class("/v1/models/verifier:predict") == "inference"
    assert route_class("/admin/v1/students") == "admin"
    # KServe routes that would 500 or let the verifier be unloaded while readiness stays green.
    for path in (
        "/v2/repository/models/verifier/unload",
        "/v2/models/verifier/versions/1/infer",
        "/v1/models/v:explain",
    ):
        assert route_class(path) == "unsupported"
    for path in ("/", "/metrics", "/v2/health/ready", "/v2/models/verifier/ready", "/v2/models/verifier"):
        assert route_class(path) == "open"


def test_json_formatter_merges_fields():
    rec = logging.LogRecord("facegate.serve", logging.INFO, __file__, 1, "verify %s", ("x",), None)
    rec.fields = {"decision": "accept", "score": 0.5}
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "verify x" and out["decision"] == "accept" and out["level"] == "info"
