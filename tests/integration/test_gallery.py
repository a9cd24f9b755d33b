"""The enrollment gallery on real photos: enroll, verify, delete, reindex, rotate keys, crash safety."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from facegate.data.imageio import read_image
from facegate.faces.pipeline import FaceAligner
from facegate.faces.quality import FacePolicy
from facegate.serve.gallery import Gallery, GalleryError, KeyRing

pytestmark = pytest.mark.integration


@pytest.fixture
def keys():
    return KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")})


@pytest.fixture
def kiosk(aligner):
    return FaceAligner(aligner.detector, FacePolicy(multiple="reject"))


def _score(gallery, sface, kiosk, student, path):
    face = kiosk.prepare(read_image(path)).face
    return float(np.dot(sface.embed(face)[0], gallery.template(student, sface.version)))


def test_enroll_verify_delete(photos, tmp_path, keys, sface, kiosk):
    g = Gallery(f"sqlite:///{tmp_path / 'g.db'}", keys)
    train = photos / "train"
    res = g.enroll(
        "S-obama",
        [(train / "obama" / "obama.jpg").read_bytes(), (photos / "two_people.jpg").read_bytes(), b"not an image"],
        sface,
        kiosk,
    )
    assert res.accepted == 1
    assert sorted(r["reason"] for r in res.rejected) == ["multiple_faces", "not_an_image"]
    assert _score(g, sface, kiosk, "S-obama", train / "obama" / "obama2.jpg") >= sface.default_threshold
    assert _score(g, sface, kiosk, "S-obama", train / "biden" / "biden.jpg") < sface.default_threshold
    g.enroll("S-biden", [(train / "biden" / "biden.jpg").read_bytes()], sface, kiosk)
    # No raw photo and no plaintext crop in the database file.
    raw = (tmp_path / "g.db").read_bytes() + (tmp_path / "g.db-wal").read_bytes()
    assert b"\xff\xd8\xff" not in raw  # no JPEG in clear
    with pytest.raises(GalleryError, match="no usable photo"):
        g.enroll("S-nobody", [(photos / "two_people.jpg").read_bytes()], sface, kiosk)
    crop = kiosk.prepare(read_image(train / "obama" / "obama.jpg")).face
    assert crop.tobytes()[:4096] not in raw  # nor as raw pixels
    # Deleting leaves neither the template nor the encrypted crops anywhere in the files (secure_delete + a WAL
    # checkpoint); the same search finds them before the delete, so it can fail.
    template = g.template("S-obama", sface.version).astype(np.float32).tobytes()
    with sqlite3.connect(tmp_path / "g.db") as conn:
        sealed = [bytes(r[0]) for r in conn.execute("SELECT ciphertext FROM crops WHERE student_id = 'S-obama'")]
    files = ("g.db", "g.db-wal")

    def on_disk() -> bytes:
        return b"".join((tmp_path / f).read_bytes() for f in files if (tmp_path / f).exists())

    assert template in on_disk()
    assert g.delete("S-obama")
    after = on_disk()
    assert template not in after
    assert sealed and all(c[-64:] not in after for c in sealed)
    _assert_audit_append_only(g)
    counts = g.counts()
    assert counts["students"] == 1
    assert counts["crops"] == 1
    assert counts["templates"] == 1
    con = sqlite3.connect(tmp_path / "g.db")
    for table in ("students", "crops", "templates"):
        assert (
            con.execute(
                f"select count(*) from {table} where {'id' if table == 'students' else 'student_id'} = 'S-obama'"
            ).fetchone()[0]
            == 0
        )
    assert [a["action"] for a in g.audit()][:1] == ["delete"]
    assert not g.delete("S-obama")


def test_reindex_and_rotate_keys(photos, tmp_path, sface, kiosk):
    k1, k2 = KeyRing.generate("k1"), KeyRing.generate("k2")
    g = Gallery(f"sqlite:///{tmp_path / 'g.db'}", KeyRing.from_env({"FACEGATE_GALLERY_KEYS": k1}))
    g.enroll("s", [(photos / "train" / "rose_leslie" / "img1.jpg").read_bytes()], sface, kiosk)
    before = g.template("s", sface.version)

    class Renamed:  # the same network under a new version name, as a new model would be
        name, embedding_size, version, default_threshold = "sface", 128, "v2", 0.36

        def embed(self, faces, **kw):
            return sface.embed(faces, **kw)

    assert g.reindex(Renamed()) == 1
    after = g.template("s", "v2")
    assert float(np.dot(before, after)) > 0.99  # rebuilt from the stored (decrypted, JPEG) crop
    g2 = Gallery(f"sqlite:///{tmp_path / 'g.db'}", KeyRing.from_env({"FACEGATE_GALLERY_KEYS": f"{k2},{k1}"}))
    assert g2.rotate_keys() == 1
    g3 = Gallery(f"sqlite:///{tmp_path / 'g.db'}", KeyRing.from_env({"FACEGATE_GALLERY_KEYS": k2}))
    assert g3.reindex(Renamed()) == 1  # the old key is no longer needed


CHILD = textwrap.dedent(
    """
    import sys, time
    from sqlalchemy import event
    from sqlalchemy.orm import Session
    from facegate.faces.pipeline import FaceAligner
    from facegate.models import create_embedder
    from facegate.serve.gallery import Gallery, KeyRing

    @event.listens_for(Session, "after_flush")
    def _stall(session, ctx):
        print("FLUSHED", flush=True)
        time.sleep(60)

    g = Gallery(sys.argv[1], KeyRing.from_env())
    photos = [open(p, "rb").read() for p in sys.argv[2:]]
    g.enroll("s1", photos, create_embedder("sface"), FaceAligner())
    """
)


def test_sigkill_during_enrollment_leaves_gallery_consistent(photos, tmp_path, sface, kiosk):
    key = KeyRing.generate("k1")
    url = f"sqlite:///{tmp_path / 'g.db'}"
    g = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": key}))
    g.enroll("s1", [(photos / "train" / "obama" / "obama.jpg").read_bytes()], sface, kiosk)
    old = g.template("s1", sface.version)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    new_photos = [str(photos / "train" / "biden" / n) for n in ("biden.jpg", "biden2.jpg")]
    proc = subprocess.Popen(
        [sys.executable, str(script), url, *new_photos],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "FACEGATE_GALLERY_KEYS": key},
    )
    try:
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and "FLUSHED" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "FLUSHED" in line, "the child never reached the middle of its transaction"
        proc.send_signal(signal.SIGKILL)  # the rows are written but not committed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    g2 = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": key}))
    assert sqlite3.connect(tmp_path / "g.db").execute("pragma integrity_check").fetchone()[0] == "ok"
    assert g2.counts()["crops"] == 1  # the old enrollment, whole
    np.testing.assert_array_equal(g2.template("s1", sface.version), old)


def test_gallery_on_postgresql(postgres_url, photos, keys, sface, kiosk):
    """The cluster's database: enroll, re-enroll (replaces crops and templates), verify, keys, delete cascades."""
    from sqlalchemy import text

    from facegate.serve.auth import ApiKeyStore

    g = Gallery(postgres_url, keys)
    train = photos / "train"
    obama = [(train / "obama" / n).read_bytes() for n in ("obama.jpg", "obama2.jpg")]
    assert g.enroll("S-pg", obama[:1], sface, kiosk).accepted == 1
    first = g.template("S-pg", sface.version)
    res = g.enroll("S-pg", obama, sface, kiosk, admin="ops")  # re-enroll from two photos
    assert res.accepted == 2
    assert g.counts()["crops"] == 2 and g.counts()["templates"] == 1
    second = g.template("S-pg", sface.version)
    assert second is not None and first is not None and not np.allclose(first, second)
    assert _score(g, sface, kiosk, "S-pg", train / "obama" / "obama2.jpg") >= sface.default_threshold
    assert _score(g, sface, kiosk, "S-pg", train / "biden" / "biden.jpg") < sface.default_threshold
    # An id that looks like SQL is only ever a bound parameter.
    sql = "S'; DROP TABLE students; --"
    g.enroll(sql, obama[:1], sface, kiosk)
    assert sorted(s["student_id"] for s in g.students()) == ["S'; DROP TABLE students; --", "S-pg"]
    assert g.delete(sql)
    store = ApiKeyStore(g.engine, env={})
    key = store.create("kiosk-pg")
    assert store.authenticate(key).name == "kiosk-pg"
    assert g.delete("S-pg", admin="ops")
    with g.engine.connect() as conn:
        left = {t: conn.execute(text(f"SELECT count(*) FROM {t} WHERE student_id = 'S-pg'")).scalar() for t in (
            "crops", "templates")}  # fmt: skip
        assert conn.execute(text("SELECT count(*) FROM students")).scalar() == 0
    assert left == {"crops": 0, "templates": 0}
    _assert_audit_append_only(g)
    Gallery(postgres_url, keys).engine.dispose()  # reopening an existing gallery (triggers already there) works
    g.engine.dispose()


def _assert_audit_append_only(g: Gallery) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    for statement in ("UPDATE audit SET decision = 'accept'", "DELETE FROM audit"):
        with pytest.raises(DatabaseError, match="append-only"), g.engine.begin() as conn:
            conn.execute(text(statement))
    assert g.counts()["audit"] > 0


def test_gallery_cli_enroll_list_reindex_delete(photos, tmp_path):
    import json

    from typer.testing import CliRunner

    from facegate.cli import app

    runner = CliRunner()
    key = runner.invoke(app, ["gallery", "new-key", "k9"]).stdout.strip()
    env = {"FACEGATE_GALLERY_KEYS": key}
    db = ["--db", f"sqlite:///{tmp_path / 'cli.db'}"]
    train = photos / "train" / "obama"
    out = runner.invoke(
        app, ["gallery", "enroll", "S-cli", str(train / "obama.jpg"), str(photos / "two_people.jpg"), *db], env=env
    )
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["accepted"] == 1 and [r["reason"] for r in res["rejected"]] == ["multiple_faces"]
    listed = json.loads(runner.invoke(app, ["gallery", "list", *db], env=env).stdout)
    assert [s["student_id"] for s in listed] == ["S-cli"] and listed[0]["photos"] == 1
    reindexed = runner.invoke(app, ["gallery", "reindex", "--model", "sface", *db], env=env)
    assert reindexed.exit_code == 0 and "indexed 1 students" in reindexed.stdout
    assert runner.invoke(app, ["gallery", "delete", "S-cli", *db], env=env).exit_code == 0
    again = runner.invoke(app, ["gallery", "delete", "S-cli", *db], env=env)
    assert again.exit_code != 0 and "unknown_student" in again.output
    # Without the encryption key the gallery refuses to open rather than store crops in clear.
    nokey = runner.invoke(app, ["gallery", "list", *db], env={"FACEGATE_GALLERY_KEYS": ""})
    assert nokey.exit_code != 0 and "FACEGATE_GALLERY_KEYS" in nokey.output
    assert key.split(":", 1)[1] not in out.output + reindexed.output + nokey.output
