"""Real-data run: a small iResNet trained on LFW identities outside pairs folds 9-10, evaluated on those folds.

It is compared, in one run, with the same network untrained and with the SFace baseline.

Prints one JSON object. Usage:
``python bench/lfw_small_train.py [--epochs N] [--backbone B] [--width W] [--embedding-size D] [--out DIR]
[--bundle DIR] [--export DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import SHARED, machine, require

from facegate.bundles import load_embedder
from facegate.data.pairs import PairSet, load_pairs
from facegate.evaluate.runner import evaluate_pairs
from facegate.models import create_embedder
from facegate.models.torch_embedder import calibrate_batchnorm
from facegate.train.config import load_train_config
from facegate.train.data import build_source
from facegate.train.run import run_training


def held_out(pairs: PairSet, folds: tuple[int, ...]) -> tuple[PairSet, set[str]]:
    keep = np.isin(pairs.folds, folds)
    idx = np.nonzero(keep)[0]
    sub = PairSet(
        "lfw-folds-9-10",
        [pairs.left[i] for i in idx],
        [pairs.right[i] for i in idx],
        pairs.same[keep],
        pairs.folds[keep],
        pairs.source,
    )
    names = {k.split("/")[0] for k in sub.image_keys()}
    return sub, names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--backbone", default="iresnet18")
    ap.add_argument("--embedding-size", type=int, default=None, help="embedding width (the config's 128 unless set)")
    ap.add_argument("--out", default=".facegate/runs/lfw_small")
    ap.add_argument("--track", action="store_true", help="also log the run to MLflow")
    ap.add_argument(
        "--resume", action="store_true", help="continue the run in --out (e.g. for more --epochs) instead of restarting"
    )
    ap.add_argument("--bundle", type=Path, default=None, help="evaluate this trained bundle instead of training")
    ap.add_argument("--teacher", default=None, help="distil this model into the student (e.g. sface)")
    ap.add_argument(
        "--export",
        type=Path,
        default=None,
        help="also export the trained bundle here (ONNX, OpenVINO FP32/FP16/INT8) gated on folds 9-10",
    )
    args = ap.parse_args()
    lfw = require(SHARED / "data" / "lfw-aligned")
    test, names = held_out(load_pairs(lfw / "pairs.txt", lfw), (8, 9))
    cfg = load_train_config(
        Path(__file__).parents[1] / "configs" / "lfw_small.yaml",
        [
            f"data.path={lfw}",
            f"epochs={args.epochs}",
            f"model.width={args.width}",
            f"model.backbone={args.backbone}",
            f"output={args.out}",
            *([f"model.embedding_size={args.embedding_size}"] if args.embedding_size else []),
            *([f"teacher={args.teacher}"] if args.teacher else []),
        ],
    )
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"exclude_identities": sorted(names)})})
    t0 = time.perf_counter()
    if args.bundle is None:
        result, _ = run_training(cfg, track=args.track, resume=args.resume, progress=True)
        assert result.bundle is not None
        bundle, steps, sps = result.bundle, result.steps, result.samples_per_second
    else:
        bundle, steps, sps = args.bundle, 0, 0.0
    train_s = time.perf_counter() - t0
    untrained = create_embedder(cfg.model.backbone, embedding_size=cfg.model.embedding_size, width=cfg.model.width)
    # Fair baseline: same shape, random weights, BatchNorm statistics measured on 2,048 training faces.
    source = build_source(cfg)
    pick = np.random.default_rng(0).choice(len(source), size=min(2048, len(source)), replace=False)
    calibrate_batchnorm(untrained.model, np.stack([source.image(int(i)) for i in pick]))  # type: ignore[attr-defined]
    untrained.model.eval()  # type: ignore[attr-defined]
    rows = {}
    for label, model in (
        ("trained", load_embedder(bundle)),
        ("untrained_same_shape", untrained),
        ("sface_baseline", create_embedder("sface")),
    ):
        m = evaluate_pairs(model, test, mode="never", progress=False).metrics
        rows[label] = {
            "accuracy": round(m["accuracy"], 4),
            "accuracy_std": round(m["accuracy_std"], 4),
            "auc": round(m["auc"], 4),
            "eer": round(m["eer"], 4),
        }
    exported = None
    if args.export is not None:
        from facegate.export.convert import ExportGateError, export_model

        # Calibration and parity use training faces only; the accuracy gate uses the held-out folds.
        faces = np.stack([source.image(int(i)) for i in pick[:400]])
        try:
            export_model(bundle, args.export, faces, pairs=test)
        except ExportGateError as exc:  # a failed gate is a result to report, not a crash
            print(f"gate failed: {exc}", file=sys.stderr)
        formats = json.loads((args.export / "export_report.json").read_text())["formats"]
        exported = {
            fmt: {
                "passed": e["passed"],
                "cosine_mean": round(e["parity"]["cosine_mean"], 5),
                "cosine_min": round(e["parity"]["cosine_min"], 5),
                "accuracy": e["evaluation"]["accuracy"] if e.get("evaluation") else None,
            }
            for fmt, e in formats.items()
        }
    print(
        json.dumps(
            {
                "benchmark": "train on LFW identities outside pairs folds 9-10, evaluate on folds 9-10 (1,200 pairs)",
                "train_images": len(source),
                "train_identities": source.num_classes,
                "excluded_identities": len(names),
                "train_steps": steps,
                "config": {
                    "backbone": cfg.model.backbone,
                    "width": cfg.model.width,
                    "epochs": args.epochs,
                    "embedding_size": cfg.model.embedding_size,
                    "teacher": cfg.teacher,
                },
                "train_seconds": round(train_s, 1),
                "samples_per_second": round(sps, 1),
                **rows,
                "trained_minus_untrained": round(
                    rows["trained"]["accuracy"] - rows["untrained_same_shape"]["accuracy"], 4
                ),
                "export": exported,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
