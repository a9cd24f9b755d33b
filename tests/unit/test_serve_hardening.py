"""Issue 11 (hardening), the parts that need no model: key throttling, forwarded headers, admission, request ids,
log aggregation, duplicate inputs, gallery file modes, the metrics listener and protocol-5 ``.bin`` files."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pickle
import secrets
import stat
import urllib.request
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from facegate.config import load_settings
from facegate.serve.app import Gatekeeper, client_address, start_metrics_server, uvicorn_config
from facegate.serve.auth import ApiKeyStore, RateLimiter, claimed_key_id, hash_key
from facegate.serve.gallery import ApiKey, Gallery, KeyRing
from facegate.serve.kserve_compat import InferInput, InferRequest
from facegate.serve.models import _inputs
from facegate.serve.protocol import BadRequestError

pytestmark = pytest.mark.unit

INFER = "/v2/models/verifier/infer"


def _made_up_key(kid: str | None = None) -> str:
    """A key-shaped string that was never issued (made up per call, never a literal)."""
    return f"fgk_{kid or secrets.token_hex(8)}.{secrets.token_urlsafe(24)}"


async def _ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _call(
    gate: Any, key: str | None = None, client: str = "10.0.0.9", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """One request straight through the ASGI interface (fast enough for 10,000 of them)."""
    raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if key is not None:
        raw.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "method": "POST", "path": INFER, "headers": raw, "client": (client, 5555)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gate(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode(): v.decode("latin-1") for k, v in start["headers"]}


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    return create_engine(f"sqlite:///{tmp_path / 'keys.db'}")


def _gate(store: ApiKeyStore, app: Any = _ok_app, **kw: Any) -> Gatekeeper:
    return Gatekeeper(app, store, RateLimiter(1e9, 10**9), 1 << 20, 1 << 20, **kw)


def test_bad_key_flood_never_locks_out_valid_keys_even_after_a_restart(engine: Any) -> None:
    store = ApiKeyStore(engine, env={})
    keys = [store.create(f"kiosk-{i}") for i in range(4)]
    legacy = "fgk_" + secrets.token_urlsafe(32)  # issued before key ids existed
    with Session(engine) as session, session.begin():
        session.add(ApiKey(name="old-kiosk", role="kiosk", key_hash=hash_key(legacy)))
    assert all(claimed_key_id(k) for k in keys) and claimed_key_id(legacy) is None

    async def flood(gate: Gatekeeper, n: int) -> Counter[int]:
        return Counter([(await _call(gate, _made_up_key()))[0] for _ in range(n)])

    async def scenario() -> None:
        gate = _gate(store)
        statuses = await flood(gate, 10_000)
        assert set(statuses) == {401, 429} and statuses[429] > 9_900  # the guesser is throttled ...
        # ... and a never-used key from the very same address passes on its first try.
        assert (await _call(gate, keys[0]))[0] == 200
        # Guessing secrets for a real key's id throttles those guesses, never the key itself.
        kid = claimed_key_id(keys[1])
        guesses = Counter([(await _call(gate, _made_up_key(kid), client=f"10.1.0.{i}"))[0] for i in range(200)])
        assert guesses[429] > 150
        assert (await _call(gate, keys[1]))[0] == 200

        # A restart (or another replica): nothing remembered, flooded again first, then every key on its first try.
        gate2 = _gate(ApiKeyStore(engine, env={}))
        assert (await flood(gate2, 10_000))[429] > 9_900
        for key in [*keys, legacy]:
            status, headers = await _call(gate2, key)
            assert status == 200, (status, headers)

    asyncio.run(scenario())


def test_forwarded_headers_only_from_trusted_proxies(engine: Any) -> None:
    store = ApiKeyStore(engine, env={})

    async def rotate(gate: Gatekeeper, peer: str) -> Counter[int]:
        return Counter(
            [
                (await _call(gate, _made_up_key(), client=peer, headers={"X-Forwarded-For": f"203.0.113.{i % 250}"}))[0]
                for i in range(200)
            ]
        )

    async def scenario() -> None:
        # Default: nobody is trusted, not even 127.0.0.1; rotating the header does not escape the throttle.
        assert (await rotate(_gate(store), "127.0.0.1"))[429] >= 150
        # A configured proxy's header is believed (each forwarded client has its own budget) ...
        trusting = _gate(store, trusted_proxies=("10.0.0.0/8",))
        assert (await rotate(trusting, "10.2.3.4"))[429] == 0
        # ... and nobody else's.
        assert (await rotate(trusting, "198.51.100.7"))[429] >= 150

    asyncio.run(scenario())
    nets = [__import__("ipaddress").ip_network("10.0.0.0/8")]
    assert client_address("10.0.0.1", b"1.2.3.4, 10.0.0.2", nets) == "1.2.3.4"  # rightmost untrusted hop
    assert client_address("10.0.0.1", b"6.6.6.6, 1.2.3.4", nets) == "1.2.3.4"  # a client-sent hop is not believed
    assert client_address("8.8.8.8", b"1.2.3.4", nets) == "8.8.8.8"
    assert client_address("10.0.0.1", b"not-an-ip", nets) == "10.0.0.1"
    # uvicorn itself believes no forwarded header (its default trusts 127.0.0.1).
    cfg = uvicorn_config(load_settings(env={}), _ok_app)
    assert cfg.proxy_headers is False and cfg.limit_concurrency and cfg.timeout_keep_alive <= 5


def test_per_key_concurrency_and_bounded_admission(engine: Any) -> None:
    store = ApiKeyStore(engine, env={})
    a, b, c = (store.create(n) for n in ("kiosk-a", "kiosk-b", "kiosk-c"))

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await release.wait()
            await _ok_app(scope, receive, send)

        gate = _gate(store, slow_app, max_inflight_per_key=2, max_inflight=3)
        held = [asyncio.create_task(_call(gate, a)) for _ in range(2)]
        await asyncio.sleep(0.05)
        status, headers = await asyncio.wait_for(_call(gate, a), 5)  # answered at once, never queued
        assert status == 429 and headers["retry-after"] == "1" and headers["connection"] == "close"
        held.append(asyncio.create_task(_call(gate, b)))  # another kiosk still gets in
        await asyncio.sleep(0.05)
        status, headers = await asyncio.wait_for(_call(gate, c), 5)  # all 3 slots taken: 503
        assert status == 503 and headers["retry-after"] == "1"
        release.set()
        assert [s for s, _ in await asyncio.gather(*held)] == [200, 200, 200]
        assert gate.inflight_total == 0 and not gate.inflight
        assert (await _call(gate, c))[0] == 200

    asyncio.run(scenario())


def test_request_ids_only_plain_tokens_and_throttle_lines_aggregated(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = ApiKeyStore(engine, env={})
    key = store.create("kiosk-1")
    bad_ids = ["a b", "x" * 129, "<script>", "id\u00e9", "evil\r\nx"]

    async def scenario() -> None:
        gate = _gate(store)
        assert (await _call(gate, key, headers={"X-Request-Id": "kiosk-7:42.a_b"}))[1]["x-request-id"] == (
            "kiosk-7:42.a_b"
        )
        for rid in bad_ids:
            for k in (key, None, _made_up_key()):  # 200, 401 without a key, 401 with a bad one
                status, headers = await _call(gate, k, headers={"X-Request-Id": rid})
                assert headers["x-request-id"] != rid and len(headers["x-request-id"]) == 32, (status, rid)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for _ in range(2_000):
                await _call(gate, _made_up_key(), client="10.9.9.9")
            gate.throttle_log.flush(force=True)
        lines = [r for r in caplog.records if r.name.startswith("facegate")]
        assert len(lines) <= 40, len(lines)  # 30 unthrottled 401s, then one summary, not 2,000 lines
        summary = [r for r in lines if r.getMessage() == "auth_throttled"]
        assert summary and sum(r.fields["count"] for r in summary) >= 1_900  # type: ignore[attr-defined]

    asyncio.run(scenario())
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert not any(rid in logged for rid in bad_ids)


def test_third_party_warnings_become_json_lines() -> None:
    from facegate.logs import configure_json_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    try:
        configure_json_logging("INFO", stream=buf)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a third-party warning", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        root.handlers[:], level = saved
        root.setLevel(level)
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert line["logger"] == "py.warnings" and "a third-party warning" in line["msg"]


def _request(*names: str) -> InferRequest:
    inputs = [InferInput(name=n, shape=[1], datatype="BYTES", data=["eA=="]) for n in names]
    return InferRequest(model_name="verifier", infer_inputs=inputs)


def test_duplicate_input_names_refused() -> None:
    with pytest.raises(BadRequestError) as err:
        _inputs(_request("image", "student_id", "student_id"), ("image", "student_id"))
    assert err.value.code == "duplicate_input"
    assert _inputs(_request("image", "student_id"), ("image", "student_id"))[0] == "v2"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_gallery_files_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, under which SQLite would create 0644 files
    try:
        home = tmp_path / "home"
        g = Gallery(f"sqlite:///{home / 'gallery.db'}", KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate()}))
        with g.engine.connect() as conn:  # WAL and shared-memory files exist while a connection is open
            conn.exec_driver_sql("SELECT 1")
            files = [home / "gallery.db", home / "gallery.db-wal", home / "gallery.db-shm"]
            assert all(f.exists() for f in files)
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert _mode(home) == 0o700
        g.engine.dispose()
        # An existing, world-readable gallery (made before this fix) is tightened when opened.
        (home / "gallery.db").chmod(0o644)
        home.chmod(0o755)
        Gallery(f"sqlite:///{home / 'gallery.db'}", g.keys).engine.dispose()
        assert _mode(home / "gallery.db") == 0o600 and _mode(home) == 0o700
        store = ApiKeyStore.from_url(f"sqlite:///{tmp_path / 'keys' / 'k.db'}")
        store.create("k")
        assert _mode(tmp_path / "keys") == 0o700 and _mode(tmp_path / "keys" / "k.db") == 0o600
    finally:
        os.umask(old)


def test_opening_a_second_store_keeps_the_first_connections_locks(tmp_path: Path) -> None:
    """The serve app opens the gallery, the key store and the audit writer on one SQLite file, one after another.

    Opening (and closing) the database file again in the same process would drop the POSIX locks its live
    connections hold; another process closing its last connection then believes it is the only one and deletes the
    -wal/-shm files still in use here, and the next connection here fails with "disk I/O error".
    """
    import subprocess
    import sys

    db = tmp_path / "gallery.db"
    url = f"sqlite:///{db}"
    g = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate()}))
    with g.engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM students")  # an open connection, holding its lock on the file
        ApiKeyStore.from_url(url).create("kiosk")  # a second store on the same file, in the same process
        other = (
            f"import sqlite3; c = sqlite3.connect({str(db)!r}); c.execute('SELECT count(*) FROM students'); c.close()"
        )
        subprocess.run([sys.executable, "-c", other], check=True, timeout=60)
        assert (tmp_path / "gallery.db-shm").exists(), "another process took itself for the last connection"
    again = Gallery(url, g.keys)
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM api_keys").scalar() == 1
    again.engine.dispose()
    g.engine.dispose()


def test_metrics_on_their_own_loopback_port() -> None:
    settings = load_settings(overrides={"serve.metrics_port": 0}, env={})
    assert settings.serve.metrics_host == "127.0.0.1" and load_settings(env={}).serve.metrics_port == 8082
    url, stop = start_metrics_server(settings)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        with urllib.request.urlopen(url, timeout=10) as resp:  # no key needed on this port
            text = resp.read().decode()
        for name in ("facegate_decisions_total", "facegate_stage_seconds", "facegate_score"):
            assert f"# TYPE {name}" in text
    finally:
        stop()


def test_insightface_bin_pickled_with_protocol_5(tmp_path: Path) -> None:
    """insightface's current packing script pickles numpy arrays; protocol 5 reaches ``_frombuffer``."""
    from facegate.data.pairs import load_bin

    blobs = []
    for shade in (10, 200, 90, 160):
        buf = io.BytesIO()
        Image.new("RGB", (112, 112), (shade, shade, shade)).save(buf, format="JPEG")
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps((blobs, [True, False]), protocol=5))
    assert b"_frombuffer" in path.read_bytes()
    pairs = load_bin(path)
    assert len(pairs) == 2 and list(pairs.same) == [True, False]
    # Still refused: anything else a pickle could name.
    path.write_bytes(pickle.dumps((blobs, [True, False], os.system), protocol=5))
    with pytest.raises(Exception, match="not allowed|not a readable"):
        load_bin(path)


def test_embed_work_runs_at_lower_priority() -> None:
    """Bulk (embed) images are decoded and aligned on threads that yield the CPU to kiosks' verifications."""
    import threading

    from facegate.serve.workers import BULK_NICE, bulk_executor

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pool = bulk_executor(1)
    try:
        nice = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(10)
    finally:
        pool.shutdown()
    assert nice >= min(19, max(base, BULK_NICE))
