"""Evaluation speed of the SFace baseline on LFW: pairs/s at batch 64 vs one face per forward pass.

One face per pass is how ``cv2.FaceRecognizerSF`` runs; both use the same pairs, in one run.

Prints one JSON object. Usage: ``python bench/eval_bench.py [--folds K]`` (the first K of LFW's 10 folds).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _common import SHARED, machine, require

from facegate.data.pairs import PairSet, load_pairs
from facegate.evaluate.runner import evaluate_pairs
from facegate.models import create_embedder


def subset(ps: PairSet, folds: int) -> PairSet:
    keep = ps.folds < folds
    idx = np.nonzero(keep)[0]
    return PairSet(
        ps.name, [ps.left[i] for i in idx], [ps.right[i] for i in idx], ps.same[keep], ps.folds[keep], ps.source
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folds", type=int, default=3, help="how many of LFW's 10 folds to use (10 = all 6000 pairs)")
    args = ap.parse_args()
    lfw = require(SHARED / "data" / "lfw-aligned")
    pairs = subset(load_pairs(lfw / "pairs.txt", lfw), args.folds)
    model = create_embedder("sface")
    runs = {}
    for label, batch in (("batch_64", 64), ("batch_1", 1)):
        m = evaluate_pairs(model, pairs, batch_size=batch, progress=False).metrics
        runs[label] = {"pairs_per_s": m["pairs_per_second"], "seconds": m["seconds"], "accuracy": m["accuracy"]}
    print(
        json.dumps(
            {
                "benchmark": "evaluate sface on LFW (decode + embed + score), 2 decode threads",
                "pairs": len(pairs),
                "images": len(pairs.image_keys()),
                **runs,
                "speedup_batch_64_vs_1": round(runs["batch_64"]["pairs_per_s"] / runs["batch_1"]["pairs_per_s"], 2),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
