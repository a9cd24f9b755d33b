"""LFW evaluation as the CLI runs it, against one-at-a-time OpenCV SFace on the same faces, in the same run.

- **facegate**: ``facegate evaluate --model sface`` in a subprocess (start-up, model load, decode, embed, score,
  metrics and plots all counted), first with an empty embedding cache (*cold*), then again (*warm*: a repeated gate).
- **peer**: OpenCV's classic DNN engine on the packaged (sha256-checked) SFace ONNX, one face per ``forward`` with the
  same 112x112 blob, each image read and prepared by the same code, then the same cosine scores. This is what
  ``cv2.FaceRecognizerSF`` does (OpenCV 5's new engine refuses this model inside that wrapper).

The ratio ``peer_seconds / facegate_cold_seconds`` is the bar (at least 5). Both sides run in this one process tree
on the same machine minutes apart; the load average is recorded before and after.

Prints one JSON object. Usage::

    python bench/eval_bench.py              # all 6,000 pairs (the README figure; ~4 min on a quiet 2-core box)
    python bench/eval_bench.py --limit 600  # 600 pairs spread over all ten folds (a quick ratio)
    python bench/eval_bench.py --bf16       # and a cold run with --precision bf16 (reported beside, not the bar)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import REPO, SHARED, emit, loadavg, require

from facegate.data.pairs import PairSet, load_pairs
from facegate.evaluate.metrics import compute_metrics
from facegate.faces.detect import SFACE_FILE, SFACE_SHA256, packaged_model_path, verify_sha256
from facegate.faces.pipeline import FaceAligner


def spread(ps: PairSet, n: int) -> PairSet:
    """``n`` pairs spread evenly over the file, so every fold keeps both classes."""
    idx = np.unique(np.linspace(0, len(ps) - 1, n).round().astype(int))
    return PairSet(
        ps.name, [ps.left[i] for i in idx], [ps.right[i] for i in idx], ps.same[idx], ps.folds[idx], ps.source
    )


def run_cli(pairs: Path, images: Path, home: Path, out: Path, *extra: str) -> dict[str, object]:
    """``facegate evaluate --model sface`` as a user runs it; wall time and the metrics it wrote."""
    env = {**os.environ, "FACEGATE_HOME": str(home)}
    cmd = [sys.executable, "-m", "facegate", "-q", "evaluate", "--model", "sface"]
    cmd += ["--pairs", str(pairs), "--images", str(images), "--out", str(out), *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    keep = ("accuracy", "threshold", "precision", "n_images", "n_embedded", "n_cached", "n_failed_pairs")
    return {"seconds": round(seconds, 2), **{k: m[k] for k in keep}}


def bytecode_cached() -> bool:
    """Whether the CLI's modules load from cached bytecode (facegate's own and openvino's, as a sample)."""
    import importlib.util

    import openvino

    import facegate.cli

    files = [facegate.cli.__file__, openvino.__file__]
    return all(f is not None and Path(importlib.util.cache_from_source(f)).is_file() for f in files)


def run_peer(pairs: PairSet) -> dict[str, object]:
    """One face per forward pass on OpenCV's classic engine, the packaged file as shipped."""
    path = packaged_model_path(SFACE_FILE)
    verify_sha256(path, SFACE_SHA256)
    t0 = time.perf_counter()
    net = cv2.dnn.readNetFromONNX(str(path), engine=cv2.dnn.ENGINE_CLASSIC)
    aligner = FaceAligner()
    emb: dict[str, np.ndarray] = {}
    for key in pairs.image_keys():
        face = aligner.prepare(pairs.source.load(key), "auto").face
        net.setInput(cv2.dnn.blobFromImages([face], 1.0, (112, 112), (0, 0, 0), swapRB=False, crop=False), "data")
        e = np.asarray(net.forward(), dtype=np.float32).reshape(-1)
        emb[key] = e / max(float(np.linalg.norm(e)), 1e-12)
    scores = np.array([float(np.dot(emb[a], emb[b])) for a, b in zip(pairs.left, pairs.right, strict=True)])
    seconds = time.perf_counter() - t0
    m = compute_metrics(pairs.same, scores, pairs.folds)
    return {
        "seconds": round(seconds, 2),
        "ms_per_face": round(seconds / len(emb) * 1e3, 2),
        "accuracy": m["accuracy"],
        "threshold": m["threshold"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="pairs to use, spread over all folds (0 = all 6,000)")
    ap.add_argument("--bf16", action="store_true", help="also a cold run with --precision bf16 (not the bar)")
    args = ap.parse_args()
    lfw = require(SHARED / "data" / "lfw-aligned")
    full = load_pairs(lfw / "pairs.txt", lfw)
    pairs = spread(full, args.limit) if 0 < args.limit < len(full) else full
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="facegate-eval-bench-") as tmp:
        work = Path(tmp)
        pairs_file = lfw / "pairs.txt"
        if pairs is not full:
            pairs_file = work / "pairs.csv"
            rows = [f"{a},{b},{int(s)}" for a, b, s in zip(pairs.left, pairs.right, pairs.same, strict=True)]
            pairs_file.write_text("image_a,image_b,same\n" + "\n".join(rows) + "\n")
        cold = run_cli(pairs_file, lfw, work / "home", work / "cold")
        peer = run_peer(pairs)
        warm = run_cli(pairs_file, lfw, work / "home", work / "warm")
        bf16 = run_cli(pairs_file, lfw, work / "home-bf16", work / "bf16", "--precision", "bf16") if args.bf16 else None
    cold_s, warm_s, peer_s = float(cold["seconds"]), float(warm["seconds"]), float(peer["seconds"])  # type: ignore[arg-type]
    emit(
        {
            "benchmark": "LFW protocol: `facegate evaluate --model sface` vs one-at-a-time OpenCV SFace (classic)",
            "pairs": len(pairs),
            "images": len(pairs.image_keys()),
            "facegate_cold": cold,
            "facegate_warm_cache": warm,
            "peer_opencv_one_at_a_time": peer,
            "ratio_peer_over_facegate_cold": round(peer_s / cold_s, 2),
            "ratio_peer_over_facegate_warm": round(peer_s / warm_s, 2),
            "bar": "ratio_peer_over_facegate_cold >= 5",
            # Python compiles every module from source at each start where no bytecode is cached (this dev box sets
            # PYTHONDONTWRITEBYTECODE=1; the images precompile it): ~1 s of the CLI's start-up.
            "facegate_bytecode_cached": bytecode_cached(),
            **(
                {
                    "facegate_cold_bf16": bf16,
                    "ratio_peer_over_facegate_cold_bf16": round(peer_s / float(bf16["seconds"]), 2),  # type: ignore[arg-type]
                }
                if bf16
                else {}
            ),
        },
        load_before,
    )


if __name__ == "__main__":
    main()
