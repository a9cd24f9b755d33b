"""Ingest throughput (detect + align + encode) on real photos: 2 worker processes vs in-process, same images.

Prints one JSON object. Usage: ``python bench/ingest_bench.py [--copies N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from _common import SHARED, machine, require

from facegate.config import Settings
from facegate.faces.ingest import ingest


def build_raw(root: Path, copies: int) -> int:
    photos = require(SHARED / "data" / "photos")
    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    n = 0
    for k in range(copies):
        for f in files:
            ident = f.parent.name if f.parent != photos else "misc"
            dst = root / ident / f"{k:02d}_{f.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst)
            n += 1
    return n


def run(raw: Path, out: Path, workers: int) -> dict[str, float]:
    t0 = time.perf_counter()
    rep = ingest(raw, out, Settings(), workers=workers, resume=False, progress=False)
    dt = time.perf_counter() - t0
    return {
        "seconds": round(dt, 3),
        "images_per_s": round(rep.total / dt, 2),
        "aligned": rep.aligned,
        "failed": rep.failed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copies", type=int, default=20, help="copies of each photo (more = steadier figures)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        n = build_raw(raw, args.copies)
        # Warm-up: page cache and model files, so neither run pays for cold disk.
        run(raw, Path(tmp) / "warm", 0)
        single = run(raw, Path(tmp) / "w0", 0)
        parallel = run(raw, Path(tmp) / "w2", 2)
    print(
        json.dumps(
            {
                "benchmark": "ingest detect+align (YuNet int8, 640 px max side) on ../shared/data/photos",
                "images": n,
                "workers_2": parallel,
                "in_process": single,
                "speedup_2_workers_vs_in_process": round(parallel["images_per_s"] / single["images_per_s"], 2),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
