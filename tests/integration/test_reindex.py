"""Gallery reindex: sharded over processes, resumable after a real SIGKILL, old model's templates untouched."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from facegate.data.imageio import encode_jpeg
from facegate.models import create_embedder
from facegate.serve.gallery import Crop, Gallery, KeyRing, Student, Template
from facegate.serve.reindex import reindex, reindex_shard, shard_of

pytestmark = pytest.mark.integration

# A deterministic embedder that takes a while per batch, so a run can be killed in the middle.
SLOW = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from facegate.models.base import Embedder
    from facegate.serve.gallery import Gallery, KeyRing
    from facegate.serve.reindex import reindex_shard

    class Slow(Embedder):
        name, version, embedding_size = "slow", "slow-v2", 8

        def _forward(self, faces):
            time.sleep(0.15)
            return faces.reshape(len(faces), 8, -1).mean(axis=2).astype(np.float32) + 1.0

    url, key = sys.argv[1], sys.argv[2]
    gallery = Gallery(url, KeyRing([("k1", bytes.fromhex(key))]))
    reindex_shard(gallery, Slow(), chunk=2)
    """
)


def _gallery(path: Path, students: int, photos: int = 2) -> tuple[Gallery, bytes]:
    key = bytes(range(32))
    g = Gallery(f"sqlite:///{path}", KeyRing([("k1", key)]))
    rng = np.random.default_rng(0)
    with Session(g.engine) as session, session.begin():
        for i in range(students):
            sid = f"S{i:04d}"
            s = Student(id=sid)
            for _ in range(photos):
                face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
                kid, nonce, ct = g.keys.encrypt(encode_jpeg(face, quality=95), sid.encode())
                s.crops.append(Crop(key_id=kid, nonce=nonce, ciphertext=ct))
            s.templates.append(Template(model_version="old-v1", embedding=np.ones(4, np.float32).tobytes(), n_photos=1))
            session.add(s)
    return g, key


def _templates(g: Gallery, version: str) -> dict[str, tuple[bytes, object]]:
    with Session(g.engine) as session:
        rows = session.scalars(select(Template).where(Template.model_version == version))
        return {t.student_id: (t.embedding, t.created_at) for t in rows}


def test_killed_reindex_resumes_without_writing_a_template_twice(tmp_path):
    db = tmp_path / "g.db"
    g, key = _gallery(db, students=24)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW, f"sqlite:///{db}", key.hex()], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(_templates(g, "slow-v2")) < 6:  # a few chunks committed, most of the run still ahead
            assert proc.poll() is None, "the reindex ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = _templates(g, "slow-v2")
    assert 6 <= len(before) < 24, "killed halfway: some templates written, not all"
    ns: dict[str, object] = {}
    exec(SLOW.split("url, key =")[0], ns)  # the same Slow embedder, in this process
    written: list[str] = []
    rep = reindex_shard(g, ns["Slow"](), chunk=2, on_written=written.extend)  # type: ignore[operator]
    after = _templates(g, "slow-v2")
    assert not set(written) & set(before), "a template written before the kill was written again"
    assert sorted(set(written) | set(before)) == sorted(after) == [f"S{i:04d}" for i in range(24)]
    assert len(written) == len(set(written)) == rep.built == 24 - len(before) and rep.skipped == len(before)
    assert all(after[s] == before[s] for s in before), "templates from before the kill were rewritten"
    assert len(_templates(g, "old-v1")) == 24, "the serving model's templates must stay"


def test_two_worker_processes_cover_every_shard_once(tmp_path):
    """`reindex(workers=2)`: two spawned processes, one shard each, build exactly what one process builds."""
    g, key = _gallery(tmp_path / "g.db", students=10, photos=1)
    ring = KeyRing([("k1", key)])
    rep = reindex(f"sqlite:///{tmp_path / 'g.db'}", "sface", keys=ring, workers=2)
    assert (rep.built, rep.skipped, rep.photos) == (10, 0, 10)
    assert {shard_of(f"S{i:04d}", 2) for i in range(10)} == {0, 1}  # both workers had students
    two = _templates(g, rep.model_version)
    one_g, _ = _gallery(tmp_path / "one.db", students=10, photos=1)
    reindex_shard(one_g, create_embedder("sface"))
    one = _templates(one_g, rep.model_version)
    assert sorted(two) == sorted(one)
    for sid in one:
        np.testing.assert_allclose(
            np.frombuffer(two[sid][0], np.float32), np.frombuffer(one[sid][0], np.float32), atol=1e-5
        )
    again = reindex(f"sqlite:///{tmp_path / 'g.db'}", "sface", keys=ring, workers=1)
    assert (again.built, again.skipped) == (0, 10)  # nothing left to do
    assert len(_templates(g, "old-v1")) == 10
