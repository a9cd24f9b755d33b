"""Latency parts that need no model: the micro-batcher waits only for requests on their way, and decision rows are
committed before the answer (a killed process loses none) on a connection that goes back to the pool as durable as
it came."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from sqlalchemy import text

from facegate.models.base import Embedder
from facegate.serve.batching import MicroBatcher
from facegate.serve.decisions import DecisionLog
from facegate.serve.gallery import Gallery, KeyRing

pytestmark = pytest.mark.unit


class _Counting(Embedder):
    name, version, embedding_size = "fake", "fake-1", 4

    def __init__(self) -> None:
        self.batches: list[int] = []

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        self.batches.append(len(faces))
        return np.ones((len(faces), 4), np.float32)


def test_batcher_waits_only_for_requests_on_their_way():
    emb = _Counting()
    batcher = MicroBatcher(emb, max_batch=8, max_wait_s=600.0)  # a wait this long would hang the test (bounded)
    face = np.zeros((1, 112, 112, 3), np.uint8)

    async def lone() -> None:
        await asyncio.wait_for(batcher.embed(face), 30)

    async def announced() -> None:
        async def late() -> np.ndarray:
            with batcher.coming():
                await asyncio.sleep(0.05)  # decoding and detecting, say
            return await batcher.embed(face)

        with batcher.coming():
            first = asyncio.ensure_future(batcher.embed(face))
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(first, late()), 30)

    async def both() -> None:
        await lone()
        batcher.max_wait_s = 5.0
        with batcher.coming():  # someone else is on the way: the batch waits for them
            await announced()

    asyncio.run(both())
    batcher.close()
    assert emb.batches[0] == 1  # the lone request did not wait 600 s for company
    assert emb.batches[1:] == [2]  # the announced one joined the batch instead of going alone


def test_a_lone_check_in_is_embedded_on_its_own_thread_and_company_is_batched():
    """``alone()`` only for the one caller on its way with nothing queued or running; ``embed_here`` runs there."""
    started, release = threading.Event(), threading.Event()
    threads: list[str] = []

    class Blocking(_Counting):
        def _forward(self, faces: np.ndarray) -> np.ndarray:
            threads.append(threading.current_thread().name)
            if faces[0, 0, 0, 0] == 7:  # the batch held open, to look at the batcher while it runs
                started.set()
                release.wait(30)
            return super()._forward(faces)

    emb = Blocking()
    batcher = MicroBatcher(emb, max_batch=8, max_wait_s=0.0)
    face = np.zeros((1, 112, 112, 3), np.uint8)
    held = face.copy()
    held[0, 0, 0, 0] = 7

    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        seen = []
        with batcher.coming():  # one check-in on its way, asking from its preprocess thread
            seen.append(await loop.run_in_executor(None, batcher.alone))
            out = await loop.run_in_executor(None, batcher.embed_here, face)
            assert out.shape == (1, 4)
        with batcher.coming(), batcher.coming():  # two on their way: they should share a batch
            seen.append(await loop.run_in_executor(None, batcher.alone))
        running = asyncio.ensure_future(batcher.embed(held))
        await loop.run_in_executor(None, started.wait, 30)
        with batcher.coming():  # a batch is being embedded: join the next one rather than wait for the lock
            seen.append(await loop.run_in_executor(None, batcher.alone))
        release.set()
        await asyncio.wait_for(running, 30)
        return seen

    seen = asyncio.run(scenario())
    batcher.close()
    assert seen == [True, False, False]
    assert threads[0].startswith("asyncio") and threads[1].startswith("facegate-embed")  # caller's thread, worker's


@pytest.fixture
def gallery(tmp_path):  # type: ignore[no-untyped-def]
    return Gallery(f"sqlite:///{tmp_path / 'g.db'}", KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate()}))


def test_decisions_are_committed_before_write_returns_and_grouped(gallery):
    log = DecisionLog(gallery, sync_interval_s=0.01)

    async def many() -> None:
        await asyncio.gather(
            *(
                log.write(kiosk="k", student_id=f"S{i}", decision="accept", score=0.9, model_version="v", reason="m")
                for i in range(20)
            )
        )
        # Read on another connection, while the writer still holds its own: every row is already committed.
        with gallery.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit WHERE action='verify'")).scalar() == 20

    asyncio.run(many())
    log.close()
    rows = gallery.audit(50)
    assert {r["student_id"] for r in rows} == {f"S{i}" for i in range(20)}
    assert all(r["detail"] == {"reason": "m"} and r["kiosk"] == "k" for r in rows)
    # The writer's connection went back to the pool as durable as the others (synchronous=FULL is 2).
    for _ in range(3):
        with gallery.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_the_plain_sqlite_audit_insert_writes_what_sqlalchemy_writes(gallery):
    """The writer's prepared DBAPI insert on SQLite stores every column exactly as SQLAlchemy's insert does."""
    from sqlalchemy import insert

    from facegate.serve.gallery import AuditEntry

    log = DecisionLog(gallery)
    rows = [
        log._row("kiosk-1", "S1", "accept", 0.912345678, "sface-v1", "match", "req-1"),
        log._row("kiosk-1", "S2", "retry", None, "sface-v1", "no_face", None),
        log._row("kiosk-2", "S3", "reject", -0.25, "sface-v1", "", None),  # no detail at all
    ]
    with log._lock:  # the path write_here and the writer thread take, with these very rows (same timestamps)
        log._insert(rows)
    log.close()
    with gallery.engine.begin() as conn:  # the same rows through SQLAlchemy, after the plain ones
        conn.execute(insert(AuditEntry.__table__), [{**r, "kiosk": "sa-" + r["kiosk"]} for r in rows])
    with gallery.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT at, action, kiosk, student_id, decision, score, model_version, detail, typeof(detail), typeof(at)"
            " FROM audit WHERE action='verify' ORDER BY id"
        ).all()
    plain, through_sa = stored[:3], stored[3:]
    assert [r[:2] + r[3:] for r in plain] == [r[:2] + r[3:] for r in through_sa] and len(plain) == 3
    assert [r[2] for r in through_sa] == ["sa-" + r[2] for r in plain]
    audit = gallery.audit(10)
    assert {e["student_id"]: e["detail"] for e in audit if e["kiosk"] == "kiosk-1"} == {
        "S1": {"reason": "match", "request_id": "req-1"},
        "S2": {"reason": "no_face"},
    }


def test_rows_committed_on_worker_threads_and_by_the_writer_share_one_connection_safely(gallery):
    """``write_here`` (a lone check-in, on its worker thread) and group commits do not interleave on the connection."""
    log = DecisionLog(gallery, sync_interval_s=0.01)
    committed_before_return: list[bool] = []

    def worker(n: int) -> None:
        for i in range(15):
            log.write_here(kiosk="w", student_id=f"W{n}-{i}", decision="reject", score=0.1, model_version="v",
                           reason="mismatch", request_id=f"r{n}-{i}")  # fmt: skip
            with gallery.engine.connect() as conn:  # another connection already sees it: committed
                found = conn.execute(text("SELECT count(*) FROM audit WHERE student_id=:s"), {"s": f"W{n}-{i}"})
                committed_before_return.append(found.scalar() == 1)

    async def grouped() -> None:
        await asyncio.gather(
            *(
                log.write(kiosk="k", student_id=f"S{i}", decision="accept", score=0.9, model_version="v", reason="m")
                for i in range(30)
            )
        )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    asyncio.run(grouped())
    for t in threads:
        t.join(60)
    log.close()
    rows = gallery.audit(200)
    assert len(rows) == 30 + 45 and all(committed_before_return) and len(committed_before_return) == 45
    assert {r["detail"]["request_id"] for r in rows if r["kiosk"] == "w"} == {
        f"r{n}-{i}" for n in range(3) for i in range(15)
    }


def test_a_killed_server_process_loses_no_answered_decision(tmp_path):
    keys = KeyRing.generate()
    url = f"sqlite:///{tmp_path / 'g.db'}"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from facegate.serve.decisions import DecisionLog
        from facegate.serve.gallery import Gallery, KeyRing

        log = DecisionLog(Gallery({url!r}, KeyRing.from_env({{"FACEGATE_GALLERY_KEYS": {keys!r}}})), sync_interval_s=60)

        async def main():
            loop = asyncio.get_running_loop()
            for i in range(25):
                row = dict(kiosk="k", student_id=f"S{{i}}", decision="accept", score=0.5, model_version="v", reason="m")
                if i % 2:  # a lone check-in's row, committed on a worker thread
                    await loop.run_in_executor(None, lambda: log.write_here(**row))
                else:  # through the writer thread
                    await log.write(**row)
                print(i, flush=True)  # "answered"
            os.kill(os.getpid(), signal.SIGKILL)  # no close(), no sync: the process just dies

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    answered = len(proc.stdout.split())
    assert answered == 25
    gallery = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": keys}))
    assert gallery.counts()["audit"] == answered


def test_key_table_is_reread_in_the_background_before_it_expires(tmp_path, monkeypatch):
    import types

    from sqlalchemy import create_engine

    import facegate.serve.auth as auth

    now = [1000.0]
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    engine = create_engine(f"sqlite:///{tmp_path / 'k.db'}")
    replica, other = auth.ApiKeyStore(engine, cache_ttl_s=10, env={}), auth.ApiKeyStore(engine, env={})
    assert replica.authenticate("fgk_nothing") is None  # loads the table at t=1000
    key = other.create("kiosk-9")  # another replica issues a key: this one's copy does not have it yet
    now[0] += 6  # past half the lifetime, not expired
    reads: list[int] = []
    real = replica._reload
    monkeypatch.setattr(replica, "_reload", lambda: reads.append(1) or real())
    assert replica.fresh()  # still answered from memory ...
    for _ in range(500):  # ... while the table is re-read behind (bounded wait for the thread)
        if not replica._refreshing.is_set():
            break
        threading.Event().wait(0.01)
    assert reads == [1]
    principal = replica.authenticate(key)
    assert principal is not None and principal.name == "kiosk-9" and reads == [1]  # no read on the request's path


def test_queued_json_logs_are_formatted_and_written_off_the_calling_thread():
    import json
    import logging

    from facegate.logs import configure_json_logging

    class Sink:
        def __init__(self) -> None:
            self.lines: list[tuple[int, str]] = []

        def write(self, text: str) -> None:
            self.lines.append((threading.get_ident(), text))

        def flush(self) -> None:
            pass

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    sink = Sink()
    try:
        configure_json_logging("INFO", sink, queued=True)
        logging.getLogger("facegate.access").info("request", extra={"fields": {"status": 200, "ms": 1.5}})
        for _ in range(500):  # bounded wait for the writer thread
            if any(t.strip() for _, t in sink.lines):
                break
            threading.Event().wait(0.01)
        queued = [(tid, t) for tid, t in sink.lines if t.strip()]
        # A line from elsewhere (uvicorn's last words before it re-raises SIGTERM) is written at once, in order.
        logging.getLogger("facegate.access").info("second", extra={"fields": {"status": 200}})
        logging.getLogger("uvicorn.error").info("Finished server process")
        lines = [json.loads(t)["msg"] for _, t in sink.lines if t.strip()]
    finally:
        logging.captureWarnings(False)  # as configure_json_logging's other tests do: leave warnings as found
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert len(queued) == 1 and queued[0][0] != threading.get_ident()
    line = json.loads(queued[0][1])
    assert (line["msg"], line["status"], line["ms"], line["logger"]) == ("request", 200, 1.5, "facegate.access")
    assert lines == ["request", "second", "Finished server process"]
