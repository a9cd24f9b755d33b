"""Retention on a clock the test controls: enroll, verify, advance, purge; the right rows go and no bytes stay."""

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from facegate.config import RetentionSettings
from facegate.data.imageio import read_image
from facegate.faces.pipeline import FaceAligner
from facegate.faces.quality import FacePolicy
from facegate.serve.gallery import Gallery, KeyRing
from facegate.serve.retention import plan_purge, purge
from tests.integration.test_gallery import _assert_audit_append_only

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PEOPLE = {"S-obama": "obama", "S-biden": "biden", "S-kit": "kit_harington"}


class Clock:
    """A clock that only moves when the test says so."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, days: float) -> None:
        self.at += timedelta(days=days)


@pytest.fixture
def kiosk(aligner):
    return FaceAligner(aligner.detector, FacePolicy(multiple="reject"))


def _photo(photos, person, n=0):
    return sorted((photos / "train" / person).glob("*.jp*g"))[n]


def _enroll_three(g, photos, sface, kiosk):
    for sid, person in PEOPLE.items():
        assert g.enroll(sid, [_photo(photos, person).read_bytes()], sface, kiosk).accepted == 1


def _verify(g, sface, kiosk, student, path):
    """What the verifier does: score against the claimed student's template, decide, audit the decision."""
    template = g.template(student, sface.version)
    score = float(np.dot(sface.embed(kiosk.prepare(read_image(path)).face)[0], template))
    decision = "accept" if score >= sface.default_threshold else "reject"
    g.record_decision(kiosk="k1", student_id=student, decision=decision, score=score, model_version=sface.version)
    return decision


def test_purge_erases_inactive_students_and_ages_out_the_audit(photos, tmp_path, sface, kiosk):
    clock = Clock(T0)
    db = tmp_path / "g.db"
    g = Gallery(f"sqlite:///{db}", KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")}), clock=clock)
    _enroll_three(g, photos, sface, kiosk)
    clock.advance(10)
    assert _verify(g, sface, kiosk, "S-biden", _photo(photos, "biden", 1)) == "accept"
    clock.advance(190)  # day 200: obama checks in for an exam
    assert _verify(g, sface, kiosk, "S-obama", _photo(photos, "obama", 1)) == "accept"
    assert _verify(g, sface, kiosk, "S-obama", _photo(photos, "biden", 1)) == "reject"  # an impostor claims obama
    clock.advance(200)  # day 400: biden's last check-in was 390 days ago, kit never came after enrolling
    templates = {s: g.template(s, sface.version).astype(np.float32).tobytes() for s in PEOPLE}
    with sqlite3.connect(db) as conn:
        sealed = {s: [bytes(r[0]) for r in conn.execute("SELECT ciphertext FROM crops WHERE student_id = ?", (s,))]
                  for s in PEOPLE}  # fmt: skip

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in (db, tmp_path / "g.db-wal") if p.exists())

    policy = RetentionSettings()  # the defaults: 365 days for both
    plan = plan_purge(g, policy)
    assert sorted((s["student_id"], s["reason"]) for s in plan.students) == [
        ("S-biden", "inactive"),
        ("S-kit", "inactive"),
    ]
    assert plan.audit_rows == 4  # three enrollments (day 0) and biden's check-in (day 10); obama's are 200 days old
    before = g.counts()
    assert before == {"students": 3, "crops": 3, "templates": 3, "audit": 6}
    for sid in ("S-biden", "S-kit"):  # the byte search finds them before the purge, so it can fail after it
        assert templates[sid] in on_disk() and sid.encode() in on_disk()

    done = purge(g, policy)
    assert done.summary() == plan.summary()
    assert [s["student_id"] for s in g.students()] == ["S-obama"]
    after = on_disk()
    for sid in ("S-biden", "S-kit"):
        assert templates[sid] not in after
        assert all(c[-64:] not in after for c in sealed[sid])
        assert sid.encode() not in after  # nor the id, in the students table or the stripped audit rows
    assert templates["S-obama"] in after and b"S-obama" in after
    audit = g.audit()
    assert audit[0]["action"] == "purge" and audit[0]["student_id"] == "*"
    assert audit[0]["detail"]["students"] == 2 and audit[0]["detail"]["audit_rows"] == 4
    assert [a["student_id"] for a in audit if a["action"] == "verify"] == ["S-obama", "S-obama", ""]
    assert sum(a["student_id"] == "" for a in audit) == 4  # stripped, not deleted: the counts stay for statistics
    _assert_audit_append_only(g)  # the guard is back after the purge
    # The student who stays is still verified with the same decisions.
    assert _verify(g, sface, kiosk, "S-obama", _photo(photos, "obama", 1)) == "accept"
    assert plan_purge(g, policy).students == []  # idempotent: nothing more is due

    # End of enrollment: everyone goes the day after, whatever their last check-in.
    ended = RetentionSettings(end_of_enrollment=(clock.at + timedelta(days=30)).date())
    assert plan_purge(g, ended, now=clock.at + timedelta(days=30)).students == []
    gone = purge(g, ended, now=clock.at + timedelta(days=31))
    assert [(s["student_id"], s["reason"]) for s in gone.students] == [("S-obama", "end_of_enrollment")]
    assert g.counts()["students"] == 0 and g.counts()["templates"] == 0 and g.counts()["crops"] == 0
    assert templates["S-obama"] not in on_disk()


def test_purge_on_postgresql_deletes_old_audit_rows(pg_database, photos, sface, kiosk):
    """audit_mode=delete on the cluster's database: the trigger is lifted only inside the purge's transaction."""
    from sqlalchemy import text

    clock = Clock(T0)
    g = Gallery(pg_database, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")}), clock=clock)
    _enroll_three(g, photos, sface, kiosk)
    clock.advance(300)
    assert _verify(g, sface, kiosk, "S-kit", _photo(photos, "kit_harington", 1)) == "accept"
    clock.advance(100)
    policy = RetentionSettings(audit_mode="delete")
    plan = purge(g, policy)
    assert sorted(s["student_id"] for s in plan.students) == ["S-biden", "S-obama"]
    assert [s["student_id"] for s in g.students()] == ["S-kit"]
    assert [a["action"] for a in g.audit()] == ["purge", "verify"]  # the three enrollments (day 0) are gone
    with g.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM crops WHERE student_id IN ('S-biden', 'S-obama')")).scalar()
    assert left == 0
    _assert_audit_append_only(g)
    g.engine.dispose()


def test_purge_cli_dry_run_then_real_run(photos, tmp_path, sface, kiosk):
    from typer.testing import CliRunner

    from facegate.cli import app

    key = KeyRing.generate("k1")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    g = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": key}), clock=Clock(T0))
    _enroll_three(g, photos, sface, kiosk)
    env = {
        "FACEGATE_GALLERY_KEYS": key,
        "FACEGATE_RETENTION__INACTIVE_DAYS": "30",
        "FACEGATE_RETENTION__AUDIT_DAYS": "30",
    }
    runner = CliRunner()
    later = (T0 + timedelta(days=31)).isoformat()
    dry = runner.invoke(app, ["gallery", "purge", "--dry-run", "--now", later, "--db", url], env=env)
    assert dry.exit_code == 0, dry.output
    listed = json.loads(dry.stdout)
    assert sorted(s["student_id"] for s in listed["students"]) == sorted(PEOPLE)
    assert listed["audit_rows"] == 3 and g.counts()["students"] == 3  # a dry run changes nothing
    early = runner.invoke(
        app, ["gallery", "purge", "--now", (T0 + timedelta(days=29)).isoformat(), "--db", url], env=env
    )
    assert early.exit_code == 0 and json.loads(early.stdout)["students"] == 0 and g.counts()["students"] == 3
    real = runner.invoke(app, ["gallery", "purge", "--now", later, "--db", url], env=env)
    assert real.exit_code == 0, real.output
    assert json.loads(real.stdout)["students"] == 3 and g.counts()["students"] == 0
    assert [a["action"] for a in g.audit(2)] == ["purge", "purge"]
    assert key.split(":", 1)[1] not in dry.output + real.output
    bad = runner.invoke(app, ["gallery", "purge", "--now", "yesterday", "--db", url], env=env)
    assert bad.exit_code != 0 and "--now" in bad.output


def test_retention_settings_guard_the_audit_and_bipa():
    with pytest.raises(ValueError, match="audit_days must be at least inactive_days"):
        RetentionSettings(inactive_days=365, audit_days=90)
    with pytest.raises(ValueError):
        RetentionSettings(inactive_days=3 * 365 + 1, audit_days=4 * 365)  # BIPA: three years at most
    assert RetentionSettings(end_of_enrollment=date(2027, 6, 30)).end_of_enrollment == date(2027, 6, 30)
