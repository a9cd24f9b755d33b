"""What SFace's precision and flip TTA do to the LFW protocol: every pair scored each way, compared with f32.

Configurations (each embeds every image of the pair set once, no cache): ``f32`` (OpenVINO, the default),
``f32-opencv`` (the folded graph on OpenCV, the runtime before issue 19), ``bf16`` (OpenVINO), ``f32-flip`` (flip
TTA). For each: accuracy (10-fold, mean and std), the accuracy-optimal threshold, TAR@FAR, and against ``f32``: the
max and mean |score difference| and how many pairs change side of the f32 threshold. Prints one JSON object::

    python bench/eval_precision.py            # all 6,000 pairs (~2 min quiet)
    python bench/eval_precision.py --limit 600
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import SHARED, emit, loadavg, require
from eval_bench import spread

from facegate.data.pairs import load_pairs
from facegate.evaluate.metrics import compute_metrics
from facegate.evaluate.scoring import score_pairs
from facegate.faces.pipeline import FaceAligner
from facegate.models import create_embedder

CONFIGS: dict[str, dict[str, Any]] = {
    "f32": {"precision": "f32", "runtime": "openvino", "flip": False},
    "f32-opencv": {"precision": "f32", "runtime": "opencv", "flip": False},
    "bf16": {"precision": "bf16", "runtime": "openvino", "flip": False},
    "f32-flip": {"precision": "f32", "runtime": "openvino", "flip": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="pairs, spread over all folds (0 = all 6,000)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, from: " + ", ".join(CONFIGS))
    args = ap.parse_args()
    lfw = require(SHARED / "data" / "lfw-aligned")
    full = load_pairs(lfw / "pairs.txt", lfw)
    pairs = spread(full, args.limit) if 0 < args.limit < len(full) else full
    load_before = loadavg()
    aligner = FaceAligner()
    out: dict[str, Any] = {}
    scores: dict[str, np.ndarray] = {}
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        emb = create_embedder("sface", precision=cfg["precision"], runtime=cfg["runtime"])
        t0 = time.perf_counter()
        res = score_pairs(emb, pairs, aligner=aligner, flip=cfg["flip"], progress=False)
        seconds = time.perf_counter() - t0
        m = compute_metrics(pairs.same, res.scores, pairs.folds)
        scores[name] = res.scores
        out[name] = {
            **cfg,
            "seconds": round(seconds, 2),
            "n_failed_pairs": len(res.failed_pairs),
            **{k: m[k] for k in ("accuracy", "accuracy_std", "threshold", "auc", "eer", "tar_at_far")},
        }
    if "f32" in scores:
        ref, thr = scores["f32"], out["f32"]["threshold"]
        for name, s in scores.items():
            d = np.abs(s - ref)
            out[name]["vs_f32"] = {
                "max_abs_score_diff": float(d.max()),
                "mean_abs_score_diff": float(d.mean()),
                "pairs_changing_side_of_f32_threshold": int(((s >= thr) != (ref >= thr)).sum()),
            }
    emit(
        {
            "benchmark": "SFace on LFW by precision, runtime and flip TTA",
            "pairs": len(pairs),
            "images": len(pairs.image_keys()),
            "configs": out,
        },
        load_before,
    )


if __name__ == "__main__":
    main()
