"""The verifier's short paths (issue 19): the direct v2 route answers exactly as KServe's route does, the warm-up
touches every preprocess thread and writes nothing, and the stage timers cover the request from body to answer."""

from __future__ import annotations

import base64
import secrets
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from facegate.config import load_settings
from facegate.serve.app import create_app
from facegate.serve.auth import ApiKeyStore
from facegate.serve.client import verify_request, verify_request_binary
from facegate.serve.gallery import Gallery, KeyRing
from facegate.serve.models import Runtime, build_runtime

pytestmark = pytest.mark.integration

ADMIN = secrets.token_urlsafe(24)  # made up per run
GALLERY_KEY = KeyRing.generate("k1")


def _runtime(tmp: Path, **overrides: object) -> tuple[Runtime, ApiKeyStore, object]:
    settings = load_settings(overrides={"home": str(tmp), "serve.rate_burst": 10_000, **overrides}, env={})
    gallery = Gallery(settings.gallery_url(), KeyRing.from_env({"FACEGATE_GALLERY_KEYS": GALLERY_KEY}))
    runtime = build_runtime(settings, "sface", gallery=gallery)
    return runtime, ApiKeyStore(gallery.engine, env={"FACEGATE_ADMIN_KEY": ADMIN}), settings


def _stage_count(stage: str) -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "facegate_stage_seconds"
        for s in m.samples
        if s.name.endswith("_count") and s.labels.get("stage") == stage
    )


def test_direct_route_answers_as_kserve_does_and_times_every_stage(photos, tmp_path):
    runtime, keys, settings = _runtime(tmp_path)
    gate = create_app(settings, runtime, keys)  # type: ignore[arg-type]
    kiosk = {"Authorization": f"Bearer {keys.create('kiosk-1')}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    enrol = [(photos / "train" / "obama" / n).read_bytes() for n in ("obama.jpg", "obama2.jpg")]
    same = (photos / "test" / "obama1.jpg").read_bytes()
    binary, binary_headers = verify_request_binary(same, "S1")
    with TestClient(gate) as client:
        body = {"photos": [base64.b64encode(p).decode() for p in enrol]}
        assert client.put("/admin/v1/students/S1", json=body, headers=admin).status_code == 200
        requests = {
            "json": {"json": {**verify_request(same, "S1"), "id": "req-1"}},
            "binary": {"content": binary, "headers": {**binary_headers, "x-request-id": "req-3"}},
            "unknown student": {"json": {**verify_request(same, "nobody"), "id": "req-2"}},
            "malformed": {"json": {"inputs": [{"name": "image"}]}},
            "not JSON": {"content": b"{nope", "headers": {"content-type": "application/json"}},
            "unknown model": {"json": verify_request(same, "S1"), "path": "/v2/models/nope/infer"},
        }
        answers = {}
        before = {s: _stage_count(s) for s in ("read_body", "parse", "auth", "detect", "align", "serialise")}
        for route in ("direct", "kserve"):
            gate.app = gate.app if route == "direct" else gate.fastapi  # type: ignore[assignment]
            for label, req in requests.items():
                req = dict(req)
                path = str(req.pop("path", "/v2/models/verifier/infer"))
                headers = {**kiosk, **dict(req.pop("headers", {}))}  # type: ignore[arg-type]
                r = client.post(path, headers=headers, **req)  # type: ignore[arg-type]
                answers[route, label] = (r.status_code, r.json())
            if route == "direct":
                after = {s: _stage_count(s) for s in before}
    for label in requests:
        assert answers["direct", label] == answers["kserve", label], label
    assert answers["direct", "json"][0] == 200 and answers["direct", "unknown student"][0] == 404
    assert answers["direct", "malformed"][0] in (400, 422) and answers["direct", "unknown model"][0] == 404
    # Each stage was timed once per request that reached it (two well-formed, one unknown student, all authed).
    assert after["read_body"] - before["read_body"] == len(requests)  # every inference body was read here
    assert after["serialise"] - before["serialise"] == 2
    assert after["auth"] - before["auth"] == len(requests)
    assert after["detect"] - before["detect"] == 3 and after["align"] - before["align"] == 3


def test_a_lone_check_in_is_embedded_on_the_thread_that_aligned_it(photos, tmp_path):
    """No hand-off to the batcher's thread and back for a check-in with no company (two thread wake-ups saved)."""
    runtime, keys, settings = _runtime(tmp_path)
    gate = create_app(settings, runtime, keys)  # type: ignore[arg-type]
    names: list[str] = []
    inner = runtime.embedder.inner  # type: ignore[attr-defined]
    real = inner._forward

    def recording(faces):  # type: ignore[no-untyped-def]
        names.append(threading.current_thread().name.rsplit("_", 1)[0])
        return real(faces)

    inner._forward = recording
    assert runtime.decisions is not None
    committed_on: list[str] = []
    real_insert = runtime.decisions._insert

    def insert(rows):  # type: ignore[no-untyped-def]
        committed_on.append(threading.current_thread().name.rsplit("_", 1)[0])
        return real_insert(rows)

    runtime.decisions._insert = insert  # type: ignore[method-assign]
    kiosk = {"Authorization": f"Bearer {keys.create('kiosk-1')}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    enrol = [(photos / "train" / "obama" / n).read_bytes() for n in ("obama.jpg", "obama2.jpg")]
    with TestClient(gate) as client:
        body = {"photos": [base64.b64encode(p).decode() for p in enrol]}
        assert client.put("/admin/v1/students/S1", json=body, headers=admin).status_code == 200
        names.clear()
        committed_on.clear()
        r = client.post("/v2/models/verifier/infer", json=verify_request(enrol[0], "S1"), headers=kiosk)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["accept"]
        rid = r.headers["x-request-id"]
        # Decided and audited there too: the row is committed before the answer, without the writer thread.
        rows = [e for e in runtime.gallery.audit(5) if e["action"] == "verify"]
        assert rows[0]["detail"] == {"reason": "match", "request_id": rid} and rows[0]["decision"] == "accept"
        assert committed_on == ["facegate-pre"]
        # An unknown student is not decided there (no template): its reject goes through the writer, as before.
        r = client.post("/v2/models/verifier/infer", json=verify_request(enrol[0], "S9"), headers=kiosk)
        assert r.status_code == 404 and committed_on == ["facegate-pre", "facegate-audit"]
    assert names[0] == "facegate-pre"  # embedded where it was aligned


def test_warm_up_runs_on_every_preprocess_thread_and_records_nothing(tmp_path, monkeypatch):
    threads: set[int] = set()
    names: set[str] = set()
    real = Runtime.aligner

    def counting(self: Runtime):  # type: ignore[no-untyped-def]
        threads.add(threading.get_ident())
        names.add(threading.current_thread().name.rsplit("_", 1)[0])
        return real(self)

    monkeypatch.setattr(Runtime, "aligner", counting)
    runtime, keys, settings = _runtime(tmp_path, **{"serve.preprocess_threads": 3})
    before = runtime.gallery.counts()
    create_app(settings, runtime, keys)  # type: ignore[arg-type]  # loads the models: the warm-up runs here
    # The 3 check-in threads and the 1 low-priority thread of embed requests (3 // 2): each has built its detector,
    # so neither a first check-in nor a first burst of embeds pays for it (nor leaves that memory behind after).
    assert len(threads) == 4 and threading.get_ident() not in threads
    assert names == {"facegate-pre", "facegate-bulk"}
    assert runtime.gallery.counts() == before  # the rolled-back audit insert left no row
    assert keys.fresh()  # the key table was read before readiness: the first kiosk does not wait for it
    runtime.close()

    threads.clear()
    runtime, keys, settings = _runtime(tmp_path / "off", **{"serve.warmup": False})
    create_app(settings, runtime, keys)  # type: ignore[arg-type]
    assert threads == set()
    runtime.close()


def test_counters_and_the_log_line_come_after_the_answer_and_cannot_fail_it(photos, tmp_path, monkeypatch, caplog):
    """The direct route writes the answer first, then counts and logs; KServe's route still counts before answering."""
    import facegate.serve.models as served

    runtime, keys, settings = _runtime(tmp_path)
    gate = create_app(settings, runtime, keys)  # type: ignore[arg-type]
    events: list[str] = []
    real_count = served.count_checkin

    def counting(kiosk: str, decision: str) -> None:
        events.append(f"counted {decision}")
        real_count(kiosk, decision)

    monkeypatch.setattr(served, "count_checkin", counting)

    def recording(app):  # type: ignore[no-untyped-def]
        async def wrapped(scope, receive, send):  # type: ignore[no-untyped-def]
            async def send_recorded(message):  # type: ignore[no-untyped-def]
                await send(message)
                if message["type"] == "http.response.body":
                    events.append("answered")

            await app(scope, receive, send_recorded)

        return wrapped

    direct, kserve = gate.app, gate.fastapi  # type: ignore[attr-defined]
    kiosk = {"Authorization": f"Bearer {keys.create('kiosk-1')}"}
    enrol = [(photos / "train" / "obama" / n).read_bytes() for n in ("obama.jpg", "obama2.jpg")]
    with TestClient(gate) as client:
        body = {"photos": [base64.b64encode(p).decode() for p in enrol]}
        assert client.put("/admin/v1/students/S1", json=body, headers={"Authorization": f"Bearer {ADMIN}"}).is_success
        check_in = verify_request(enrol[0], "S1")
        for app, want in ((direct, ["answered", "counted accept"]), (kserve, ["counted accept", "answered"])):
            gate.app = recording(app)  # type: ignore[assignment]
            events.clear()
            with caplog.at_level("INFO", logger="facegate.serve"):
                r = client.post("/v2/models/verifier/infer", json=check_in, headers=kiosk)
            assert r.status_code == 200 and events == want
            assert [rec for rec in caplog.records if rec.getMessage() == "verify"]  # logged on both routes
            caplog.clear()

        def broken(kiosk: str, decision: str) -> None:
            raise RuntimeError("counter backend gone")

        monkeypatch.setattr(served, "count_checkin", broken)
        gate.app = direct  # type: ignore[assignment]
        with caplog.at_level("ERROR", logger="facegate.serve"):
            r = client.post("/v2/models/verifier/infer", json=check_in, headers=kiosk)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["accept"]  # the answer stands
        assert any(rec.getMessage() == "bookkeeping after the answer failed" for rec in caplog.records)
