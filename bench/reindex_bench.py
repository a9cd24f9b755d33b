"""`facegate gallery reindex` throughput in photos/s: 1 worker against 2, same gallery, same run.

A temporary SQLite gallery gets ``--students`` students with 3 real aligned LFW faces each (encrypted like an
enrollment's crops; inserted directly, since enrollment itself is not what is measured). Then the CLI, as an operator
runs it, builds SFace templates with ``--workers 1``, the templates are dropped, and again with ``--workers 2``
(runs alternate ``--repeat`` times). Wall time includes process start-up and model loading.

The estimate for a university (150,000 photos) divides by the measured per-shard rate: each pipeline reindex pod is
one shard in one process on 2 CPUs, like ``--workers 1`` on this 2-core machine.

Prints one JSON object. Usage::

    python bench/reindex_bench.py                   # 300 students, 900 photos
    python bench/reindex_bench.py --students 100    # a quick ratio on a loaded machine
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, SHARED, loadavg, machine, require
from sqlalchemy.orm import Session

from facegate.faces.detect import SFACE_SHA256
from facegate.serve.gallery import Crop, Gallery, KeyRing, Student
from facegate.serve.reindex import drop_templates

PHOTOS_PER_STUDENT = 3
UNIVERSITY_PHOTOS = 150_000
#: Shards the training pipeline runs (pipelines/training.py REINDEX_SHARDS) and larger fan-outs for comparison.
SHARD_COUNTS = (1, 3, 6, 12)


def build_gallery(url: str, ring: KeyRing, lfw: Path, students: int) -> int:
    files = sorted(lfw.glob("*/*.jpg"))[: students * PHOTOS_PER_STUDENT]
    g = Gallery(url, ring)
    with Session(g.engine) as session, session.begin():
        for i in range(0, len(files) - PHOTOS_PER_STUDENT + 1, PHOTOS_PER_STUDENT):
            sid = f"S{i // PHOTOS_PER_STUDENT:06d}"
            s = Student(id=sid)
            for f in files[i : i + PHOTOS_PER_STUDENT]:
                kid, nonce, ct = ring.encrypt(f.read_bytes(), sid.encode())
                s.crops.append(Crop(key_id=kid, nonce=nonce, ciphertext=ct))
            session.add(s)
    return len(files) // PHOTOS_PER_STUDENT * PHOTOS_PER_STUDENT


def run(url: str, env: dict[str, str], workers: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "facegate", "-q", "gallery", "reindex", "--model", "sface", "--db", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [*cmd, "--workers", str(workers)], check=True, env=env, cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    inner = float(out.stdout.rsplit("photos, ", 1)[1].split(" photos/s")[0])
    # CPU seconds per wall second: above 1 means the run kept more than one core busy.
    return {"seconds": round(seconds, 2), "photos_per_s_inside": inner, "cores_busy": round(cpu / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=300, help="students, 3 photos each")
    ap.add_argument("--repeat", type=int, default=1, help="alternating 1-worker/2-worker rounds")
    args = ap.parse_args()
    lfw = require(SHARED / "data" / "lfw-aligned")
    key = os.urandom(32)
    ring = KeyRing([("bench", key)])
    env = {**os.environ, "FACEGATE_GALLERY_KEYS": "bench:" + base64.b64encode(key).decode()}
    load_before = loadavg()
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="facegate-reindex-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'gallery.db'}"
        photos = build_gallery(url, ring, lfw, args.students)
        version = f"opencv-zoo-2021dec-int8bq-{SFACE_SHA256[:8]}"
        for _ in range(args.repeat):
            for workers in (1, 2):
                runs[workers].append(run(url, env, workers))
                drop_templates(Gallery(url, ring), version)
    best = {w: min(r["seconds"] for r in rs) for w, rs in runs.items()}
    rate = {w: photos / s for w, s in best.items()}
    print(
        json.dumps(
            {
                "benchmark": "`facegate gallery reindex --model sface` (SQLite, 3 photos per student), wall time",
                "students": photos // PHOTOS_PER_STUDENT,
                "photos": photos,
                "runs": runs,
                "photos_per_s_1_worker": round(rate[1], 1),
                "photos_per_s_2_workers": round(rate[2], 1),
                "scaling_2_over_1": round(rate[2] / rate[1], 2),
                "estimate_150k_photos_minutes_by_shards": {
                    str(n): round(UNIVERSITY_PHOTOS / (rate[1] * n) / 60, 1) for n in SHARD_COUNTS
                },
                "estimate_basis": "each shard = one 2-CPU pod running one process, like --workers 1 on these 2 cores",
                "loadavg_before": load_before,
                "loadavg_after": loadavg(),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
