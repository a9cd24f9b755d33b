"""The backup drill, for real: enroll, back up, lose the database, restore, verify the same students the same way."""

import json

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from facegate.data.imageio import read_image
from facegate.data.storage import LocalStorage
from facegate.faces.pipeline import FaceAligner
from facegate.faces.quality import FacePolicy
from facegate.serve.backup import BackupError, backup_gallery, list_backups, restore_gallery
from facegate.serve.gallery import Gallery, KeyRing
from tests.integration.test_gallery import _assert_audit_append_only

pytestmark = pytest.mark.integration

PEOPLE = {"S-obama": "obama", "S-biden": "biden", "S-kit": "kit_harington"}
PREFIX = "backups/gallery"


@pytest.fixture
def kiosk(aligner):
    return FaceAligner(aligner.detector, FacePolicy(multiple="reject"))


def _photos(photos, person):
    return sorted((photos / "train" / person).glob("*.jp*g"))


def _enroll(g, photos, sface, kiosk):
    for sid, person in PEOPLE.items():
        assert g.enroll(sid, [_photos(photos, person)[0].read_bytes()], sface, kiosk).accepted == 1


def _decisions(g, photos, sface, kiosk):
    """Every probe photo (each person's second) against every enrolled student: the gallery's decisions."""
    out = {}
    for person in PEOPLE.values():
        face = sface.embed(kiosk.prepare(read_image(_photos(photos, person)[1])).face)[0]
        for sid in PEOPLE:
            score = float(np.dot(face, g.template(sid, sface.version)))
            out[(person, sid)] = "accept" if score >= sface.default_threshold else "reject"
    return out


def _cli(args, env):
    from typer.testing import CliRunner

    from facegate.cli import app

    out = CliRunner().invoke(app, ["gallery", *args], env=env)
    return out.exit_code, out.output


def test_backup_drop_restore_verify_on_postgresql(pg_database, postgres_url, photos, tmp_path, sface, kiosk):
    key = KeyRing.generate("k1")
    keys = KeyRing.from_env({"FACEGATE_GALLERY_KEYS": key})
    env = {"FACEGATE_GALLERY_KEYS": key}
    g = Gallery(pg_database, keys)
    _enroll(g, photos, sface, kiosk)
    decisions = _decisions(g, photos, sface, kiosk)
    assert sorted(v for (p, s), v in decisions.items() if PEOPLE[s] == p) == ["accept"] * 3  # it can tell them apart
    assert list(decisions.values()).count("reject") == 6
    templates = {s: g.template(s, sface.version) for s in PEOPLE}
    g.engine.dispose()
    store = tmp_path / "store"
    code, out = _cli(["backup", "--to", str(store), "--db", pg_database], env)
    assert code == 0, out
    made = json.loads(out)
    assert made["dialect"] == "postgresql" and made["removed"] == []
    sealed = (store / made["key"]).read_bytes()
    for sid in PEOPLE:  # ciphertext only: neither the ids nor the templates are in the object
        assert sid.encode() not in sealed and templates[sid].tobytes()[:64] not in sealed
    assert key.split(":", 1)[1] not in out

    name = make_url(pg_database).database
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # the database is lost, and a new empty one takes its name
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()

    wrong = {"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")}
    code, out = _cli(["restore", "--from", str(store), "--db", pg_database], wrong)
    assert code != 0 and "bad_backup" in out  # a key with the same id but other bytes opens nothing
    code, out = _cli(
        ["restore", "--from", str(store), "--db", pg_database], {"FACEGATE_GALLERY_KEYS": KeyRing.generate("k7")}
    )
    assert code != 0 and "no_key" in out and "gallery keys" in out
    Gallery(pg_database, keys).engine.dispose()  # a server started on the new database first: empty tables
    code, out = _cli(["restore", "--from", str(store), "--db", pg_database], env)
    assert code == 0, out
    restored = json.loads(out)
    assert restored["rows"]["students"] == 3 and restored["missing_keys"] == []

    g2 = Gallery(pg_database, keys)
    assert sorted(s["student_id"] for s in g2.students()) == sorted(PEOPLE)
    for sid in PEOPLE:
        np.testing.assert_array_equal(g2.template(sid, sface.version), templates[sid])
    assert _decisions(g2, photos, sface, kiosk) == decisions
    assert g2.reindex(sface) == 3  # the crops decrypt with the same keys
    _assert_audit_append_only(g2)  # the guard came back with the dump
    code, out = _cli(["restore", "--from", str(store), "--db", pg_database], env)
    assert code != 0 and "not_empty" in out and "students: 3" in out  # never over a live gallery
    g2.engine.dispose()


def test_backup_drop_restore_verify_on_sqlite(photos, tmp_path, sface, kiosk):
    keys = KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")})
    db = tmp_path / "live" / "gallery.db"
    g = Gallery(f"sqlite:///{db}", keys)
    _enroll(g, photos, sface, kiosk)
    decisions = _decisions(g, photos, sface, kiosk)
    store = LocalStorage(tmp_path / "store")
    made = [backup_gallery(f"sqlite:///{db}", store, keys, prefix=PREFIX, keep=2) for _ in range(3)]
    assert list_backups(store, PREFIX) == [m.key for m in made[1:]]  # the last K=2 kept
    assert made[2].removed == [made[0].key]
    g.engine.dispose()
    for f in db.parent.iterdir():
        f.unlink()  # the gallery is lost

    res = restore_gallery(f"sqlite:///{db}", store, keys, prefix=PREFIX)
    assert res["key"] == made[2].key and res["rows"]["crops"] == 3
    g2 = Gallery(f"sqlite:///{db}", keys)
    assert _decisions(g2, photos, sface, kiosk) == decisions
    assert db.stat().st_mode & 0o077 == 0  # the restored file is the owner's only, like a new gallery
    with pytest.raises(BackupError, match="not empty") as e:
        restore_gallery(f"sqlite:///{db}", store, keys, prefix=PREFIX)
    assert e.value.code == "not_empty"
    # A damaged object fails authentication rather than restoring something else.
    obj = tmp_path / "store" / made[2].key
    data = bytearray(obj.read_bytes())
    data[-100] ^= 1
    obj.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="failed authentication"):
        restore_gallery(f"sqlite:///{tmp_path / 'other.db'}", store, keys, prefix=PREFIX)
    with pytest.raises(BackupError, match="postgresql"):  # a SQLite backup does not go into PostgreSQL
        restore_gallery("postgresql+psycopg:///nowhere?host=/nonexistent", store, keys, prefix=PREFIX, name=made[1].key)
