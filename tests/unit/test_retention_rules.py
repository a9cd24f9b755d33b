"""Retention rules without face data: a failed purge rolls back (guard included), a student's own enrollment end."""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from facegate.config import RetentionSettings
from facegate.serve import retention
from facegate.serve.gallery import Crop, Gallery, KeyRing, Student, Template

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _gallery(tmp_path, key=None):
    keys = KeyRing.from_env({"FACEGATE_GALLERY_KEYS": key or KeyRing.generate()})
    g = Gallery(f"sqlite:///{tmp_path / 'g.db'}", keys)
    with Session(g.engine) as session, session.begin():  # rows as enrollment writes them, without a face model
        for sid in ("S-1", "S-2"):
            student = Student(id=sid, created_at=T0, updated_at=T0)
            kid, nonce, ct = g.keys.encrypt(b"crop", sid.encode())
            student.crops.append(Crop(key_id=kid, nonce=nonce, ciphertext=ct))
            student.templates.append(Template(model_version="v1", embedding=b"\0" * 16, n_photos=1))
            session.add(student)
    g.clock = lambda: T0
    g.record_decision(kiosk="k", student_id="S-1", decision="accept", score=0.9, model_version="v1")
    return g


def test_a_failed_purge_rolls_back_rows_and_guard(tmp_path, monkeypatch):
    g = _gallery(tmp_path)
    before = g.counts()

    def boom(*args, **kwargs):
        raise RuntimeError("killed after the erasure, before the commit")

    monkeypatch.setattr(retention, "insert", boom)  # the purge's last statement
    with pytest.raises(RuntimeError, match="killed"):
        retention.purge(g, RetentionSettings(audit_mode="delete"), now=T0 + timedelta(days=400))
    assert g.counts() == before
    with pytest.raises(DatabaseError, match="append-only"), g.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit")
    monkeypatch.undo()
    done = retention.purge(g, RetentionSettings(audit_mode="delete"), now=T0 + timedelta(days=400))
    assert len(done.students) == 2 and g.counts() == {"students": 0, "crops": 0, "templates": 0, "audit": 1}


def test_a_students_own_enrollment_end(tmp_path):
    from typer.testing import CliRunner

    from facegate.cli import app

    key = KeyRing.generate("k1")
    g = _gallery(tmp_path, key)
    env = {"FACEGATE_GALLERY_KEYS": key}
    db = ["--db", f"sqlite:///{tmp_path / 'g.db'}"]
    runner = CliRunner()
    out = runner.invoke(app, ["gallery", "enrollment-end", "S-1", "2026-02-28", *db], env=env)
    assert out.exit_code == 0 and "2026-02-28" in out.stdout, out.output
    cleared = runner.invoke(app, ["gallery", "enrollment-end", "S-2", "none", *db], env=env)
    assert cleared.exit_code == 0, cleared.output
    unknown = runner.invoke(app, ["gallery", "enrollment-end", "S-9", "2026-02-28", *db], env=env)
    assert unknown.exit_code != 0 and "unknown_student" in unknown.output
    policy = RetentionSettings()
    assert retention.plan_purge(g, policy, now=datetime(2026, 2, 28, 23, 59, tzinfo=UTC)).students == []
    done = retention.purge(g, policy, now=datetime(2026, 3, 1, tzinfo=UTC))  # the day after: S-1 only
    assert [(s["student_id"], s["reason"]) for s in done.students] == [("S-1", "end_of_enrollment")]
    assert [s["student_id"] for s in g.students()] == ["S-2"]
    with g.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM enrollment_ends").scalar() == 0  # gone with the student
    retention.set_enrollment_end(g, "S-2", date(2026, 3, 1))
    retention.set_enrollment_end(g, "S-2", None)  # cleared again: the inactivity rule alone applies
    assert retention.plan_purge(g, policy, now=datetime(2026, 6, 1, tzinfo=UTC)).students == []
