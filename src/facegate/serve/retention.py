"""Retention: erase what the gallery no longer needs, on a schedule (``facegate gallery purge``, a chart CronJob).

- A student not verified (nor enrolled) for ``inactive_days``, past their own enrollment end
  (:func:`set_enrollment_end`), or anyone once the policy's ``end_of_enrollment`` has passed, loses their student
  row, encrypted crops and templates, with the same guarantees as a delete: one transaction, and on SQLite
  ``secure_delete`` plus a WAL checkpoint so no byte of them stays in the files.
- Audit rows older than ``audit_days`` are stripped of the student id or deleted. The audit is append-only in the
  database (triggers); purge lifts that guard only inside its own transaction and puts it back before committing,
  so no other writer ever sees an unguarded table, and a purge killed midway changes nothing.
- The real run appends one ``purge`` audit row with the counts (never the erased ids: the notice of erasure must not
  keep what was erased). ``--dry-run`` lists what would go and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from facegate.config import RetentionSettings
from facegate.serve.gallery import (
    AuditEntry,
    EnrollmentEnd,
    Gallery,
    GalleryError,
    Student,
    audit_guard_ddl,
    check_student_id,
)

__all__ = ["PurgePlan", "end_of_enrollment_passed", "plan_purge", "purge", "set_enrollment_end"]

#: Audit rows whose ``student_id`` names no student (gallery-wide actions, already-stripped rows) are not personal.
_NOT_A_STUDENT = ("*", "")
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


@dataclass
class PurgePlan:
    """What a purge erases (or, for a dry run, would erase)."""

    now: str
    inactive_before: str
    audit_before: str
    audit_mode: str
    students: list[dict[str, str]] = field(default_factory=list)
    audit_rows: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts only: what the audit row of a real purge records."""
        return {
            "students": len(self.students),
            "audit_rows": self.audit_rows,
            "audit_mode": self.audit_mode,
            "inactive_before": self.inactive_before,
            "audit_before": self.audit_before,
        }

    def to_dict(self) -> dict[str, Any]:
        """The full plan (student ids with the reason each goes), for ``--dry-run``."""
        return asdict(self)


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes (it stores no zone); every stamp facegate writes is UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def _plan(conn: Connection, policy: RetentionSettings, now: datetime) -> PurgePlan:
    inactive_before = now - timedelta(days=policy.inactive_days)
    audit_before = now - timedelta(days=policy.audit_days)
    ended = end_of_enrollment_passed(policy, now.date())
    # The last interaction: the latest verification claiming the student, or the (re-)enrollment if later.
    last_verify = (
        select(AuditEntry.student_id.label("sid"), func.max(AuditEntry.at).label("at"))
        .where(AuditEntry.action == "verify")
        .group_by(AuditEntry.student_id)
        .subquery()
    )
    rows = conn.execute(
        select(Student.id, Student.updated_at, last_verify.c.at, EnrollmentEnd.ends_on)
        .outerjoin(last_verify, last_verify.c.sid == Student.id)
        .outerjoin(EnrollmentEnd, EnrollmentEnd.student_id == Student.id)
        .order_by(Student.id)
    )
    plan = PurgePlan(
        now=now.isoformat(),
        inactive_before=inactive_before.isoformat(),
        audit_before=audit_before.isoformat(),
        audit_mode=policy.audit_mode,
    )
    for sid, updated, verified, ends_on in rows:
        last = max(_aware(updated), _aware(verified)) if verified is not None else _aware(updated)
        if ended or (ends_on is not None and now.date() > ends_on):
            plan.students.append({"student_id": sid, "reason": "end_of_enrollment", "last_seen": last.isoformat()})
        elif last < inactive_before:
            plan.students.append({"student_id": sid, "reason": "inactive", "last_seen": last.isoformat()})
    plan.audit_rows = int(conn.scalar(_old_audit(select(func.count()).select_from(AuditEntry), audit_before)) or 0)
    return plan


def _old_audit(query: Any, before: datetime) -> Any:
    return query.where(AuditEntry.at < before, AuditEntry.student_id.not_in(_NOT_A_STUDENT))


def plan_purge(gallery: Gallery, policy: RetentionSettings, *, now: datetime | None = None) -> PurgePlan:
    """What :func:`purge` would erase now (a dry run: nothing changes)."""
    with gallery.engine.connect() as conn:
        return _plan(conn, policy, _aware(now or gallery.clock()))


def purge(gallery: Gallery, policy: RetentionSettings, *, now: datetime | None = None) -> PurgePlan:
    """Erase expired students and age out the audit, in one transaction; returns what was erased.

    Args:
        gallery: The gallery.
        policy: The retention settings.
        now: The time to judge ages against (the gallery's clock when omitted).
    """
    at = _aware(now or gallery.clock())
    dialect = gallery.engine.dialect.name
    with gallery.engine.begin() as conn:
        if dialect == "sqlite":
            # pysqlite opens a transaction only before DML, so the DDL below would otherwise autocommit; IMMEDIATE
            # also takes the write lock now, so no verification lands between planning and erasing.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        for statement in audit_guard_ddl(dialect, drop=True):  # PostgreSQL: also locks the audit table
            conn.exec_driver_sql(statement)
        plan = _plan(conn, policy, at)
        for ids in _chunks([s["student_id"] for s in plan.students]):
            conn.execute(delete(Student).where(Student.id.in_(ids)))  # crops and templates: ON DELETE CASCADE
        audit_before = datetime.fromisoformat(plan.audit_before)
        if policy.audit_mode == "delete":
            conn.execute(_old_audit(delete(AuditEntry), audit_before))
        else:
            conn.execute(_old_audit(update(AuditEntry), audit_before).values(student_id=""))
        for statement in audit_guard_ddl(dialect):
            conn.exec_driver_sql(statement)
        conn.execute(insert(AuditEntry).values(at=at, action="purge", student_id="*", detail=plan.summary()))
    gallery.scrub_wal()
    if dialect == "postgresql":
        # Dead row versions stay in the heap until vacuumed; make their space reusable now rather than at autovacuum.
        with gallery.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM students, crops, templates, audit")
    return plan


def end_of_enrollment_passed(policy: RetentionSettings, today: date) -> bool:
    """Whether the policy's end-of-enrollment date is over (the day itself still counts as enrolled)."""
    return policy.end_of_enrollment is not None and today > policy.end_of_enrollment


def set_enrollment_end(gallery: Gallery, student_id: str, ends_on: date | None) -> None:
    """Record the last day of a student's enrollment (``None`` clears it); purge erases them the day after.

    Raises:
        GalleryError: ``unknown_student`` for a student who is not enrolled.
    """
    check_student_id(student_id)
    with Session(gallery.engine) as session, session.begin():
        if session.get(Student, student_id) is None:
            raise GalleryError(f"no student {student_id!r}", code="unknown_student")
        row = session.get(EnrollmentEnd, student_id)
        if ends_on is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(EnrollmentEnd(student_id=student_id, ends_on=ends_on))
        else:
            row.ends_on = ends_on
