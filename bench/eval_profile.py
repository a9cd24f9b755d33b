"""Where a cold ``facegate evaluate --model sface`` spends its time, stage by stage, in one process.

Stages, each timed alone (wall and CPU seconds): interpreter start-up is measured by ``eval_bench.py``'s CLI runs;
here ``imports`` (what the CLI imports), ``model`` (construct SFace, fold or read the cached fold, compile),
``decode`` (read and prepare every image on the thread pool, nothing else), ``forward`` (the network on the decoded
faces, batches of 64), ``pipelined`` (``embed_keys``: decode and forward overlapped, as the CLI runs them), ``score``,
``metrics`` and ``report`` (metrics.json, scores.csv and the two plots). Prints one JSON object. Usage::

    python bench/eval_profile.py --limit 600             # f32, the default
    python bench/eval_profile.py --limit 600 --precision bf16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from _common import SHARED, emit, loadavg, require

from facegate.data.imageio import DEFAULT_LIMITS

T = TypeVar("T")
STAGES: dict[str, dict[str, float]] = {}


def stage(name: str, fn: Callable[[], T]) -> T:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    STAGES[name] = {"wall_s": round(time.perf_counter() - w, 3), "cpu_s": round(time.process_time() - c, 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=600, help="pairs, spread over all folds (0 = all 6,000)")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--runtime", default=None, help="openvino | opencv (default: SFace's own choice)")
    args = ap.parse_args()
    load_before = loadavg()

    def imports() -> None:
        import facegate.cli
        import facegate.evaluate.runner
        import facegate.evaluate.scoring
        import facegate.models.sface  # noqa: F401

    stage("imports", imports)
    from eval_bench import spread

    from facegate.data.pairs import load_pairs
    from facegate.evaluate.metrics import compute_metrics
    from facegate.evaluate.runner import EvalResult, write_report
    from facegate.evaluate.scoring import _prepare_one as prepare
    from facegate.evaluate.scoring import embed_keys
    from facegate.faces.pipeline import FaceAligner

    lfw = require(SHARED / "data" / "lfw-aligned")
    full = load_pairs(lfw / "pairs.txt", lfw)
    pairs = spread(full, args.limit) if 0 < args.limit < len(full) else full
    keys = pairs.image_keys()

    def model() -> Any:
        from facegate.models import create_embedder

        emb = create_embedder("sface", precision=args.precision, runtime=args.runtime)
        emb.embed(np.zeros((1, 112, 112, 3), np.uint8))  # the first pass compiles
        return emb

    emb = stage("model", model)
    aligner = FaceAligner()

    def decode() -> np.ndarray:
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda k: prepare(pairs.source, k, aligner, "auto", DEFAULT_LIMITS), keys))
        return np.stack([f for _, f, _ in done if f is not None])

    faces = stage("decode", decode)
    stage("forward", lambda: emb.embed(faces, batch_size=64))

    def pipelined() -> dict[str, np.ndarray]:
        return embed_keys(pairs.source, keys, emb, aligner, progress=False)[0]

    embs = stage("pipelined", pipelined)

    def score() -> np.ndarray:
        return np.array([float(np.dot(embs[a], embs[b])) for a, b in zip(pairs.left, pairs.right, strict=True)])

    scores = stage("score", score)
    m = stage("metrics", lambda: compute_metrics(pairs.same, scores, pairs.folds))
    m.update({"model": "sface", "pairs": pairs.name})
    with tempfile.TemporaryDirectory() as tmp:
        stage("report", lambda: write_report(EvalResult(metrics=m, scores=scores, same=pairs.same), pairs, Path(tmp)))
    n = len(keys)
    emit(
        {
            "benchmark": "stages of a cold `facegate evaluate --model sface`",
            "pairs": len(pairs),
            "images": n,
            "precision": emb.precision,
            "runtime": getattr(emb, "runtime", None),
            "stages": STAGES,
            "ms_per_image": {k: round(STAGES[k]["wall_s"] / n * 1e3, 3) for k in ("decode", "forward", "pipelined")},
            "accuracy": m["accuracy"],
        },
        load_before,
    )


if __name__ == "__main__":
    main()
