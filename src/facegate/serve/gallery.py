"""The enrollment gallery: students, encrypted aligned crops, templates per model version, and an audit log.

- **Storage**: SQLAlchemy; SQLite (``<home>/gallery.db``) is the embedded default, PostgreSQL by URL in the cluster.
- **No raw photos** are stored. Each accepted photo's aligned 112x112 crop is kept *encrypted* (AES-256-GCM, the
  student id as associated data, so a crop cannot be moved to another student) to let ``reindex`` build templates
  for a new model before it takes traffic.
- **Keys** come from ``FACEGATE_GALLERY_KEYS`` (a Kubernetes Secret in the cluster): ``id1:base64key[,id2:...]``,
  the first being the active key. Older keys still decrypt; ``rotate_keys`` re-encrypts everything with the active
  one. Keys never appear in logs, errors or the database.
- **Atomic**: an enrollment, re-enrollment or deletion is one transaction, so a process killed midway leaves the
  gallery as it was before (SQLite's journal and PostgreSQL both guarantee it).
- **Templates** are the L2-normalised mean of a student's accepted photo embeddings, one row per model version.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits, decode_image, encode_jpeg
from facegate.errors import FacegateError
from facegate.faces.pipeline import FaceAligner
from facegate.models.base import Embedder, l2_normalize

__all__ = ["EnrollResult", "Gallery", "GalleryError", "KeyRing"]

MAX_STUDENT_ID = 64
KEYS_ENV = "FACEGATE_GALLERY_KEYS"


class GalleryError(FacegateError):
    """A gallery operation was refused (unknown student, bad id, no usable photo, missing key)."""

    code = "gallery_error"


def _now() -> datetime:
    return datetime.now(UTC)


class _Base(DeclarativeBase):
    pass


class Student(_Base):
    __tablename__ = "students"
    id: Mapped[str] = mapped_column(String(MAX_STUDENT_ID), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    crops: Mapped[list[Crop]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    templates: Mapped[list[Template]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class Crop(_Base):
    __tablename__ = "crops"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary(12))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Template(_Base):
    __tablename__ = "templates"
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    n_photos: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


#: One student's template for one model version (the check-in's lookup; parameters ``student_id``, ``model_version``).
_TEMPLATE_BLOB = select(Template.embedding).where(
    Template.student_id == bindparam("student_id"), Template.model_version == bindparam("model_version")
)


class EnrollmentEnd(_Base):
    """The last day of a student's enrollment, when known: retention erases the student the day after."""

    __tablename__ = "enrollment_ends"
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"), primary_key=True)
    ends_on: Mapped[date] = mapped_column(Date)


class AuditEntry(_Base):
    """Append-only (database triggers refuse UPDATE and DELETE); it holds no image and no template."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    action: Mapped[str] = mapped_column(String(32))
    kiosk: Mapped[str | None] = mapped_column(String(64), nullable=True)
    student_id: Mapped[str] = mapped_column(String(MAX_STUDENT_ID), index=True)
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ApiKey(_Base):
    """An API key, stored as the SHA-256 of the key (keys are 256-bit random, so a fast hash is enough)."""

    __tablename__ = "api_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class KeyRing:
    """AES-256-GCM keys by id; the first is the active (encrypting) key.

    Args:
        keys: ``[(key_id, 32-byte key), ...]``, active first.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise GalleryError(f"no gallery encryption key: set {KEYS_ENV}=id:base64key", code="no_key")
        for kid, key in keys:
            if len(key) != 32 or not kid or ":" in kid or "," in kid:
                raise GalleryError(f"gallery key {kid!r} must be 32 bytes (AES-256) with a plain id", code="bad_key")
        self.keys = dict(keys)
        self.active = keys[0][0]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> KeyRing:
        """Parse ``FACEGATE_GALLERY_KEYS`` (``id:base64key,...``). The key material is never echoed."""
        raw = (env if env is not None else os.environ).get(KEYS_ENV, "")
        pairs: list[tuple[str, bytes]] = []
        for item in filter(None, (x.strip() for x in raw.split(","))):
            kid, sep, b64 = item.partition(":")
            if not sep:
                raise GalleryError(f"{KEYS_ENV}: entries must look like id:base64key", code="bad_key")
            try:
                pairs.append((kid, base64.b64decode(b64, validate=True)))
            except (binascii.Error, ValueError):
                raise GalleryError(f"{KEYS_ENV}: key {kid!r} is not valid base64", code="bad_key") from None
        return cls(pairs)

    @staticmethod
    def generate(key_id: str = "k1") -> str:
        """A new ``id:base64key`` entry for ``FACEGATE_GALLERY_KEYS``."""
        return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"

    def derive(self, purpose: str, key_id: str | None = None) -> bytes:
        """A 32-byte key for ``purpose``, derived from the active key or the named one (HMAC-SHA256).

        Raises:
            GalleryError: ``no_key`` when ``key_id`` is not in the ring (the key itself is never exposed).
        """
        key = self.keys.get(key_id or self.active)
        if key is None:
            raise GalleryError(f"data sealed with key {key_id!r}, which is not in {KEYS_ENV}", code="no_key")
        return hmac.new(key, b"facegate:" + purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, data: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        """``(key_id, nonce, ciphertext)`` with the active key."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(12)
        return self.active, nonce, AESGCM(self.keys[self.active]).encrypt(nonce, data, aad)

    def decrypt(self, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt with the named key; fails if the key is unknown or the data was tampered with."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self.keys.get(key_id)
        if key is None:
            raise GalleryError(f"crop encrypted with key {key_id!r}, which is not in {KEYS_ENV}", code="no_key")
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise GalleryError("a stored crop failed authentication (tampered or wrong key)", code="bad_crop") from None


@dataclass
class EnrollResult:
    """Outcome of an enrollment."""

    student_id: str
    accepted: int
    rejected: list[dict[str, str]] = field(default_factory=list)
    model_version: str = ""


def check_student_id(student_id: str) -> str:
    """Validate a student id: 1-64 printable characters without control characters or surrounding spaces.

    Raises:
        GalleryError: ``bad_student_id``.
    """
    if not isinstance(student_id, str) or not 0 < len(student_id) <= MAX_STUDENT_ID:
        raise GalleryError(f"student id must be 1-{MAX_STUDENT_ID} characters", code="bad_student_id")
    if student_id != student_id.strip() or any(not c.isprintable() for c in student_id):
        raise GalleryError("student id has surrounding spaces or control characters", code="bad_student_id")
    return student_id


def prepare_sqlite_path(url: str) -> None:
    """For a SQLite URL: a 0700 folder and a 0600 database file, before SQLite creates anything.

    SQLite gives ``-wal`` and ``-shm`` the database file's mode, so creating the file 0600 first covers all three.
    Existing files are tightened too. A shared folder (sticky, like /tmp) is left as it is: it is not ours.
    """
    if not url.startswith("sqlite:///"):
        return
    raw = url.removeprefix("sqlite:///").partition("?")[0]
    if not raw or raw == ":memory:":
        return
    db = Path(raw)
    folder = db.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if not st.st_mode & 0o1000 and st.st_uid == os.getuid() and st.st_mode & 0o077:
        folder.chmod(0o700)
    # Only a file that does not exist yet is opened (and closed) here. Closing any descriptor of a file drops every
    # POSIX lock this process holds on it, so opening an existing database would silently release the locks of this
    # process's open SQLite connections (a second store on the same file, a backup): another process closing its last
    # connection would then think itself the last one and delete the -wal/-shm files in use here ("disk I/O error",
    # lost rows). See https://www.sqlite.org/howtocorrupt.html section 2.2.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


def audit_guard_ddl(dialect: str, *, drop: bool = False) -> list[str]:
    """Statements that make the audit table append-only (or, with ``drop``, lift that inside one transaction).

    Only retention (``facegate.serve.retention``) lifts it, in the same transaction that erases old rows and puts
    the guard back, so no other writer ever sees an unguarded table.
    """
    if dialect == "sqlite":
        if drop:
            return [f"DROP TRIGGER IF EXISTS audit_no_{op}" for op in ("update", "delete")]
        return [
            f"CREATE TRIGGER IF NOT EXISTS audit_no_{op.lower()} BEFORE {op} ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END"
            for op in ("UPDATE", "DELETE")
        ]
    if dialect == "postgresql":
        if drop:
            return ["DROP TRIGGER IF EXISTS audit_append_only ON audit"]
        return [
            "CREATE OR REPLACE FUNCTION facegate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the audit table is append-only'; END $$",
            "CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit "
            "FOR EACH STATEMENT EXECUTE FUNCTION facegate_audit_append_only()",
        ]
    return []


class Gallery:
    """The enrollment gallery.

    Args:
        url: SQLAlchemy URL (``sqlite:///path/gallery.db``, ``postgresql+psycopg://...``).
        keys: The key ring (``KeyRing.from_env()`` when omitted).
        clock: The time source for enrollment, verification and audit stamps (tests of retention move it).
    """

    def __init__(self, url: str, keys: KeyRing | None = None, *, clock: Callable[[], datetime] = _now) -> None:
        self.keys = keys or KeyRing.from_env()
        self.clock = clock
        prepare_sqlite_path(url)
        # hide_parameters: a database error must not print student ids, templates or ciphertext into a log.
        self.engine: Engine = create_engine(url, future=True, hide_parameters=True)
        self._template_sql: tuple[str, list[str]] | None = None
        if self.engine.dialect.name == "sqlite":  # qmark parameters, in the compiled order
            compiled = _TEMPLATE_BLOB.compile(dialect=self.engine.dialect)
            self._template_sql = str(compiled), list(compiled.positiontup or [])
        if self.engine.dialect.name == "sqlite":

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:  # cascades and crash safety on SQLite
                cur = conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                # Deleted rows are overwritten with zeros, not left in free pages: deleting a student must not
                # leave their template or encrypted crops recoverable from the file.
                cur.execute("PRAGMA secure_delete=ON")
                cur.close()

        _Base.metadata.create_all(self.engine)
        self._protect_audit()

    def _protect_audit(self) -> None:
        """Make the audit table append-only in the database itself (triggers), not only by the API's convention."""
        ddl = audit_guard_ddl(self.engine.dialect.name)
        if not ddl:
            return
        with self.engine.begin() as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement)

    # -- enrollment ------------------------------------------------------------------------------------------------
    def enroll(
        self,
        student_id: str,
        photos: Sequence[bytes],
        embedder: Embedder,
        aligner: FaceAligner,
        *,
        limits: ImageLimits = DEFAULT_LIMITS,
        admin: str | None = None,
    ) -> EnrollResult:
        """Enroll (or re-enroll) a student from 1..N photos.

        Each photo is decoded under the limits, must show exactly one sharp, large-enough face (the aligner's
        policy), and is otherwise rejected with its reason. Re-enrollment replaces the student's crops and every
        template (templates of other model versions would be stale: ``reindex`` rebuilds them).

        Raises:
            GalleryError: If the id is invalid or no photo is usable (with each photo's reason).
        """
        check_student_id(student_id)
        if not photos:
            raise GalleryError("enrollment needs at least one photo", code="no_photo")
        faces: list[np.ndarray] = []
        rejected: list[dict[str, str]] = []
        for i, data in enumerate(photos):
            try:
                image = decode_image(data, limits=limits, name=f"photo {i + 1}")
                faces.append(aligner.prepare(image, "always").face)
            except FacegateError as exc:
                rejected.append({"photo": str(i + 1), "reason": exc.code, "message": exc.message})
        if not faces:
            reasons = ", ".join(f"photo {r['photo']}: {r['reason']}" for r in rejected)
            raise GalleryError(f"no usable photo ({reasons})", code="no_usable_photo")
        template = l2_normalize(embedder.embed(np.stack(faces)).mean(axis=0, keepdims=True))[0]
        aad = student_id.encode()
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            student = session.get(Student, student_id)
            if student is None:
                student = Student(id=student_id, created_at=now, updated_at=now)
                session.add(student)
            else:
                student.crops.clear()
                student.templates.clear()
                student.updated_at = now
            for face in faces:
                kid, nonce, ct = self.keys.encrypt(encode_jpeg(face, quality=95), aad)
                student.crops.append(Crop(key_id=kid, nonce=nonce, ciphertext=ct))
            student.templates.append(
                Template(model_version=embedder.version, embedding=template.tobytes(), n_photos=len(faces))
            )
            session.add(
                AuditEntry(
                    at=now,
                    action="enroll",
                    kiosk=admin,
                    student_id=student_id,
                    model_version=embedder.version,
                    detail={"accepted": len(faces), "rejected": [r["reason"] for r in rejected]},
                )
            )
        return EnrollResult(student_id, len(faces), rejected, embedder.version)

    def delete(self, student_id: str, *, admin: str | None = None) -> bool:
        """Delete a student with every crop and template; returns whether the student existed."""
        check_student_id(student_id)
        with Session(self.engine) as session, session.begin():
            student = session.get(Student, student_id)
            if student is None:
                return False
            session.delete(student)
            session.add(AuditEntry(at=self.clock(), action="delete", kiosk=admin, student_id=student_id))
        self.scrub_wal()
        return True

    def scrub_wal(self) -> None:
        """Copy the WAL into the database and truncate it: older WAL frames still hold the deleted rows' pages."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def students(self) -> list[dict[str, Any]]:
        """Students with their photo count and the model versions they have templates for (no biometric data)."""
        with Session(self.engine) as session:
            out = []
            for s in session.scalars(select(Student).order_by(Student.id)):
                out.append(
                    {
                        "student_id": s.id,
                        "photos": len(s.crops),
                        "model_versions": sorted(t.model_version for t in s.templates),
                        "updated_at": s.updated_at.isoformat(),
                    }
                )
            return out

    def template(self, student_id: str, model_version: str) -> np.ndarray | None:
        """A student's template for a model version, or ``None`` if not enrolled (for that version)."""
        check_student_id(student_id)
        # This runs on every check-in. Not an ORM session: its identity map and object loading cost about twice
        # the query (0.2 against 0.08 ms here). On SQLite not even a SQLAlchemy connection: the statement, compiled
        # once, on a pooled DBAPI connection (0.03 ms; SQLAlchemy's execution and result set-up are most of the rest).
        params = {"student_id": student_id, "model_version": model_version}
        if self._template_sql is not None:
            dbapi = self.engine.raw_connection()
            try:
                cursor = dbapi.cursor()
                cursor.execute(self._template_sql[0], tuple(params[k] for k in self._template_sql[1]))
                found = cursor.fetchone()
                cursor.close()
            finally:
                dbapi.close()  # back to the pool (rolled back, as SQLAlchemy does on return)
            blob = None if found is None else found[0]
        else:
            with self.engine.connect() as conn:
                blob = conn.execute(_TEMPLATE_BLOB, params).scalar()
        return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()

    def template_count(self, model_version: str) -> int:
        """How many students have a template for ``model_version`` (a rollout refuses a version without any)."""
        with Session(self.engine) as session:
            query = select(func.count()).select_from(Template).where(Template.model_version == model_version)
            return int(session.scalar(query) or 0)

    def reindex(self, embedder: Embedder, *, chunk: int = 256) -> int:
        """Build (or rebuild) templates for ``embedder.version`` from the stored crops, in this process.

        See :func:`facegate.serve.reindex.reindex_shard` (here: one shard, every template rewritten); the CLI and
        the pipeline run it sharded, on several processes or pods, and resumable.

        Returns:
            The number of students indexed.
        """
        from facegate.serve.reindex import reindex_shard  # it imports this module

        return reindex_shard(self, embedder, chunk=chunk, resume=False).built

    def rotate_keys(self) -> int:
        """Re-encrypt every crop with the active key; returns the number re-encrypted."""
        n = 0
        with Session(self.engine) as session, session.begin():
            for crop in session.scalars(select(Crop)):
                if crop.key_id == self.keys.active:
                    continue
                aad = crop.student_id.encode()
                plain = self.keys.decrypt(crop.key_id, crop.nonce, crop.ciphertext, aad)
                crop.key_id, crop.nonce, crop.ciphertext = self.keys.encrypt(plain, aad)
                n += 1
            session.add(AuditEntry(action="rotate_keys", student_id="*", detail={"crops": n}))
        return n

    def record_decision(
        self,
        *,
        kiosk: str,
        student_id: str,
        decision: str,
        score: float | None,
        model_version: str,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Append a verification decision to the audit log (never an image or a template).

        ``request_id`` (the id the client got in its answer) goes into ``detail``, so a kiosk's complaint can be
        matched with its audit row.
        """
        detail = {k: v for k, v in (("reason", reason), ("request_id", request_id)) if v}
        with Session(self.engine) as session, session.begin():
            session.add(
                AuditEntry(
                    at=self.clock(),
                    action="verify",
                    kiosk=kiosk,
                    student_id=student_id[:MAX_STUDENT_ID],
                    decision=decision,
                    score=score,
                    model_version=model_version,
                    detail=detail or None,
                )
            )

    def audit(self, limit: int = 100, *, before: int | None = None) -> list[dict[str, Any]]:
        """The most recent audit entries, newest first (only ids below ``before`` when given: paging)."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if before is not None:
            query = query.where(AuditEntry.id < before)
        with Session(self.engine) as session:
            rows = session.scalars(query)
            return [
                {
                    "id": r.id,
                    "at": r.at.isoformat(),
                    "action": r.action,
                    "kiosk": r.kiosk,
                    "student_id": r.student_id,
                    "decision": r.decision,
                    "score": r.score,
                    "model_version": r.model_version,
                    "detail": r.detail,
                }
                for r in rows
            ]

    def counts(self) -> dict[str, int]:
        """Row counts per table (tests and operators)."""
        with Session(self.engine) as session:
            return {
                name: len(session.scalars(select(model)).all())
                for name, model in (
                    ("students", Student),
                    ("crops", Crop),
                    ("templates", Template),
                    ("audit", AuditEntry),
                )
            }

    def _decrypt_face(self, student_id: str, crop: Crop) -> np.ndarray:
        data = self.keys.decrypt(crop.key_id, crop.nonce, crop.ciphertext, student_id.encode())
        return decode_image(data, name="stored crop")
