"""The audit rows of verification decisions: committed before the kiosk gets its answer, synced to disk behind it.

Every decision is in the audit table before its answer leaves the server, so a crash of the server process can
lose no row: a kiosk never admits a student the audit log does not show. What is moved off the request path is the
wait for the disk. On SQLite the decision rows are committed on one connection that runs ``synchronous=NORMAL``
(in WAL mode a commit is then a write into the WAL: durable across a crash of the process, which is what SQLite
documents for this mode), and a background thread syncs the WAL (``fsync``) every ``sync_interval_s`` while rows are
waiting for it, so a power cut of the machine loses at most that window. On PostgreSQL every transaction keeps the
server's synchronous commit: the gallery there is the cluster's legal record, and a crash of the database server
must not take acknowledged check-ins with it (group commit below keeps the cost to one flush per turn).
Enrollments, deletions and key changes keep their full synchronous commits on the gallery's other connections.

Rows from concurrent requests are written together, one transaction per turn of the writer thread (group commit),
so eight kiosks do not queue behind eight commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert

from facegate.serve.gallery import MAX_STUDENT_ID, AuditEntry, Gallery, _now

__all__ = ["DecisionLog"]

log = logging.getLogger("facegate.serve")


@dataclass
class _Pending:
    row: dict[str, Any]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class DecisionLog:
    """Writes verification decisions to the gallery's audit table from one writer thread.

    Args:
        gallery: The gallery (its engine and audit table).
        sync_interval_s: On SQLite, how often the WAL is synced to disk while decision rows are waiting for it.
    """

    def __init__(self, gallery: Gallery, *, sync_interval_s: float = 0.2) -> None:
        self.engine = gallery.engine
        # The gallery's clock where it has one (main's retention work adds ``Gallery.clock``), so rows are stamped
        # as record_decision stamps them; else the column's default.
        self._clock = getattr(gallery, "clock", None)
        self.sync_interval_s = sync_interval_s
        self._sqlite = self.engine.dialect.name == "sqlite"
        database = self.engine.url.database or ""
        self._wal = f"{database}-wal" if self._sqlite and database not in ("", ":memory:") else None
        self._queue: queue.SimpleQueue[_Pending | threading.Event | None] = queue.SimpleQueue()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._conn: Any = None
        # The writer's connection is used by the writer thread (group commits) and by a worker thread committing a
        # lone check-in's row (write_here): one at a time.
        self._lock = threading.Lock()
        self._plain = _PlainInsert(self.engine.dialect) if self._sqlite else None
        self._writer = threading.Thread(target=self._run, name="facegate-audit", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name="facegate-audit-sync", daemon=True)
        self._writer.start()
        if self._wal is not None:
            self._syncer.start()

    async def write(
        self,
        *,
        kiosk: str,
        student_id: str,
        decision: str,
        score: float | None,
        model_version: str,
        reason: str,
        request_id: str | None = None,
    ) -> None:
        """Append one decision; returns once it is committed (raises what the database raised)."""
        loop = asyncio.get_running_loop()
        row = self._row(kiosk, student_id, decision, score, model_version, reason, request_id)
        pending = _Pending(row, loop.create_future(), loop)
        self._queue.put(pending)
        await pending.future

    def write_here(
        self,
        *,
        kiosk: str,
        student_id: str,
        decision: str,
        score: float | None,
        model_version: str,
        reason: str,
        request_id: str | None = None,
    ) -> None:
        """Commit one decision on the calling thread, on the writer's connection; returns once it is committed.

        For a check-in with no company (a worker thread that has just decided it): the same row, connection and
        durability as :meth:`write`, without waking the writer thread and then the event loop. Concurrent check-ins
        use :meth:`write`, where rows share a transaction. Raises what the database raised.
        """
        row = self._row(kiosk, student_id, decision, score, model_version, reason, request_id)
        with self._lock:
            self._insert([row])

    def _row(
        self,
        kiosk: str,
        student_id: str,
        decision: str,
        score: float | None,
        model_version: str,
        reason: str,
        request_id: str | None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "action": "verify",
            "kiosk": kiosk,
            "student_id": student_id[:MAX_STUDENT_ID],
            "decision": decision,
            "score": score,
            "model_version": model_version,
            # As Gallery.record_decision writes it: the request id lets a kiosk's complaint find its row.
            "detail": {k: v for k, v in (("reason", reason), ("request_id", request_id)) if v} or None,
        }
        # Stamped here rather than by the column's default, so the plain SQLite insert below writes the same value.
        row["at"] = (self._clock or _now)()
        return row

    def warm(self, timeout_s: float = 30.0) -> None:
        """Open the writer's connection and run one insert, rolled back (the warm-up: nothing is recorded)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout_s)

    def close(self) -> None:
        """Write what is queued, sync it to disk, and stop the threads."""
        self._stopping.set()
        self._queue.put(None)
        self._writer.join(10)
        if self._syncer.is_alive():
            self._syncer.join(10)
        self._sync()

    # -- the writer thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if isinstance(first, threading.Event):
                self._warm(first)
                continue
            batch = [first] if first is not None else []
            while True:  # everything queued meanwhile goes into the same transaction
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    first = None
                elif isinstance(item, threading.Event):
                    self._warm(item)
                else:
                    batch.append(item)
            if batch:
                self._commit(batch)
            if first is None:
                with self._lock:
                    self._release()
                return

    def _commit(self, batch: list[_Pending]) -> None:
        error: BaseException | None = None
        try:
            with self._lock:
                self._insert([p.row for p in batch])
        except Exception as exc:  # the rows' requests fail, as a failed audit write always has
            error = exc
        for p in batch:
            p.loop.call_soon_threadsafe(_settle, p.future, error)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Commit ``rows`` in one transaction (the caller holds ``_lock``); on failure, reconnect next time."""
        try:
            conn = self._connection()
            with conn.begin():
                if self._plain is not None:
                    self._plain.execute(conn, rows)
                else:
                    conn.execute(insert(AuditEntry.__table__), rows)  # type: ignore[arg-type]
            self._dirty.set()
        except Exception:
            self._release(broken=True)
            raise

    def _warm(self, done: threading.Event) -> None:
        # The same columns as a real row: SQLAlchemy compiles one statement per set of columns.
        row = {"action": "verify", "kiosk": "warm-up", "student_id": "warm-up", "decision": "retry", "score": None,
               "model_version": "warm-up", "detail": None}  # fmt: skip
        if self._clock is not None:
            row["at"] = self._clock()
        try:
            with self._lock:
                conn = self._connection()
                tx = conn.begin()
                try:
                    conn.execute(insert(AuditEntry.__table__), [row])  # type: ignore[arg-type]
                finally:
                    tx.rollback()
        except Exception:  # a warm-up failure is not fatal: the first real write reports a database that is down
            log.warning("audit writer warm-up failed", exc_info=True)
            with self._lock:
                self._release(broken=True)
        finally:
            done.set()

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self.engine.connect()
            if self._sqlite:
                conn.exec_driver_sql("PRAGMA synchronous=NORMAL")  # this connection only; see the module docstring
                conn.commit()
            self._conn = conn
        return self._conn

    def _release(self, broken: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if broken:
                conn.invalidate()
            elif self._sqlite:  # back in the pool, the connection must be as durable as the others again
                conn.exec_driver_sql("PRAGMA synchronous=FULL")
                conn.commit()
            conn.close()

    # -- the sync thread -----------------------------------------------------------------------------------------
    def _sync_loop(self) -> None:
        while not self._stopping.is_set():
            if self._dirty.wait(0.5):
                time.sleep(self.sync_interval_s)  # rows committed meanwhile are synced by the same fsync
                self._sync()

    def _sync(self) -> None:
        if self._wal is None or not self._dirty.is_set():
            return
        self._dirty.clear()
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and truncated meanwhile: the checkpoint synced the rows into the database
        try:
            os.fsync(fd)
        except OSError:
            log.exception("audit WAL sync failed")
        finally:
            os.close(fd)


class _PlainInsert:
    """The audit insert on SQLite as one prepared DBAPI statement, with SQLAlchemy's own value conversions.

    The row is the same (each value goes through the column type's SQLAlchemy bind processor: the timestamp's text
    form, the JSON of ``detail``); what is left out is SQLAlchemy's per-execution work (statement cache lookup,
    parameter processing, result set-up), which on a check-in cost 0.15-0.25 ms more than the insert itself (SQLite,
    after a forward pass has left the caches cold; measured in docs/performance-serving.md). It runs inside the
    connection's SQLAlchemy transaction, so the commit and its durability are unchanged. A test compares a row
    written this way with one written by SQLAlchemy.
    """

    def __init__(self, dialect: Any) -> None:
        table = AuditEntry.__table__
        names = [c.name for c in table.columns if not c.primary_key]
        compiled = insert(table).compile(dialect=dialect, column_keys=names)  # type: ignore[arg-type]
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or [])
        assert sorted(self.order) == sorted(names), "the audit insert's parameters are its columns"
        self.convert = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in self.order]

    def execute(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` on ``conn`` (a SQLAlchemy connection in a transaction)."""
        pairs = list(zip(self.convert, self.order, strict=True))
        params = [tuple(row.get(n) if f is None else f(row.get(n)) for f, n in pairs) for row in rows]
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.executemany(self.sql, params)
        finally:
            cursor.close()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return  # the request was cancelled (client went away); its row is written all the same
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
