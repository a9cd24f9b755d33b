"""Evaluate an embedder on a pair set: load, (align), embed, score, measure, and write the report.

Embedding and scoring is :func:`facegate.evaluate.scoring.score_pairs` (decoding pipelined against inference, an
optional embedding cache); this module adds metrics, reports and bundle records. An image that is missing,
undecodable or without a face is reported by name and its pairs count as *failed*: they get the lowest possible
score (-1), i.e. they are judged "no match", which is how a kiosk would treat them. Nothing is skipped silently.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits
from facegate.data.pairs import PairSet
from facegate.errors import DataError
from facegate.evaluate.embed_cache import EmbeddingCache
from facegate.evaluate.metrics import compute_metrics
from facegate.evaluate.scoring import FAILED_SCORE, score_pairs
from facegate.faces.pipeline import AlignMode, FaceAligner
from facegate.models.base import Embedder

__all__ = ["FAILED_SCORE", "EvalResult", "evaluate_pairs", "record_in_bundle", "write_report"]


@dataclass
class EvalResult:
    """What an evaluation produced.

    Attributes:
        metrics: The JSON-ready metrics (see :func:`~facegate.evaluate.metrics.compute_metrics`) plus run details.
        scores: Score per pair (``FAILED_SCORE`` for failed pairs).
        same: Label per pair.
        failed_images: ``{image: "code: message"}`` for every image that could not be used.
        failed_pairs: Indices of pairs with a failed image.
        failed_keys: ``{image key: "code: message"}``, the same failures by key (per-group failure to acquire).
    """

    metrics: dict[str, Any]
    scores: np.ndarray
    same: np.ndarray
    failed_images: dict[str, str] = field(default_factory=dict)
    failed_pairs: list[int] = field(default_factory=list)
    failed_keys: dict[str, str] = field(default_factory=dict)


def evaluate_pairs(
    embedder: Embedder,
    pairset: PairSet,
    *,
    aligner: FaceAligner | None = None,
    mode: AlignMode = "auto",
    flip: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    target_far: float = 1e-3,
    limits: ImageLimits = DEFAULT_LIMITS,
    progress: bool = True,
    cache: EmbeddingCache | None = None,
) -> EvalResult:
    """Run the verification protocol for one model on one pair set.

    Args:
        embedder: The model.
        pairset: The pairs.
        aligner: Detection/alignment (YuNet by default, only loaded if an image needs aligning).
        mode: ``auto`` aligns images that are not already 112x112; ``always``; ``never``.
        flip: Flip test-time augmentation.
        batch_size: Faces per forward pass.
        workers: Threads decoding and aligning images.
        target_far: FAR for the deployment threshold.
        limits: Image limits.
        progress: Show a progress bar.
        cache: Embedding cache (images it holds for this model are not embedded again).

    Returns:
        The result; ``metrics`` also holds ``model``, ``model_version``, ``precision``, ``pairs``, ``flip``, ``align``,
        ``n_failed_pairs``, ``failed_images``, ``seconds``, ``pairs_per_second``, ``n_embedded`` and ``n_cached``.
    """
    keys = pairset.image_keys()
    t0 = time.perf_counter()
    scored = score_pairs(
        embedder,
        pairset,
        aligner=aligner,
        mode=mode,
        flip=flip,
        batch_size=batch_size,
        workers=workers,
        limits=limits,
        cache=cache,
        progress=progress,
    )
    scores, failures, failed_pairs = scored.scores, scored.failures, scored.failed_pairs
    elapsed = time.perf_counter() - t0
    try:
        metrics = compute_metrics(pairset.same, scores, pairset.folds, target_far=target_far)
    except ValueError as exc:  # one class only, or a fold whose complement lacks a class
        raise DataError(f"{pairset.name}: cannot evaluate these pairs: {exc}") from None
    failed_named = {pairset.source.describe(k): v for k, v in sorted(failures.items())}
    metrics.update(
        {
            "model": embedder.name,
            "model_version": embedder.version,
            "precision": embedder.precision,
            "embedding_size": embedder.embedding_size,
            "pairs": pairset.name,
            "flip": flip,
            "align": mode,
            "n_images": len(keys),
            "n_failed_pairs": len(failed_pairs),
            "failed_images": failed_named,
            "failed_pair_score": FAILED_SCORE,
            "seconds": round(elapsed, 3),
            "pairs_per_second": round(len(pairset) / elapsed, 2) if elapsed > 0 else None,
            "n_embedded": scored.stats.embedded,
            "n_cached": scored.stats.cached,
        }
    )
    return EvalResult(
        metrics=metrics,
        scores=scores,
        same=pairset.same,
        failed_images=failed_named,
        failed_pairs=failed_pairs,
        failed_keys=dict(sorted(failures.items())),
    )


def record_in_bundle(bundle: str | Path, metrics: dict[str, Any]) -> float:
    """Store an evaluation in a model bundle's ``facegate.json`` and make its threshold the bundle's own.

    The threshold is the one at the evaluation's target FAR, or the accuracy-optimal one where the pair set cannot
    resolve that FAR. Serving reads it from the bundle, so every model version verifies with its own threshold.

    Returns:
        The threshold recorded.
    """
    import json

    from facegate.models.base import BUNDLE_FILE
    from facegate.utils import atomic_write_text

    path = Path(bundle) / BUNDLE_FILE
    meta = json.loads(path.read_text())
    thr = metrics["threshold_target_far"] if metrics.get("threshold_target_far") is not None else metrics["threshold"]
    keep = (
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar_at_far",
        "threshold",
        "threshold_target_far",
        "target_far",
        "n_pairs",
        "n_failed_pairs",
    )
    meta.setdefault("evaluations", {})[metrics["pairs"]] = {k: metrics.get(k) for k in keep}
    meta["threshold"] = float(thr)
    meta["threshold_source"] = {
        "pairs": metrics["pairs"],
        "target_far": metrics["target_far"],
        "at_target_far": metrics.get("threshold_target_far") is not None,
    }
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
    return float(thr)


def write_report(result: EvalResult, pairset: PairSet, out_dir: str | Path) -> list[Path]:
    """Write ``metrics.json``, ``scores.csv``, ``roc.png`` and ``scores.png`` into ``out_dir``.

    Returns:
        The paths written.
    """
    from facegate.evaluate.plots import plot_roc, plot_scores
    from facegate.utils import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "scores.csv", out / "roc.png", out / "scores.png"]
    atomic_write_text(written[0], json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")
    failed = set(result.failed_pairs)
    rows = ["image_a,image_b,same,score,failed"]
    for i, (a, b) in enumerate(zip(pairset.left, pairset.right, strict=True)):
        rows.append(f"{_csv(a)},{_csv(b)},{int(result.same[i])},{result.scores[i]:.6f},{int(i in failed)}")
    atomic_write_text(written[1], "\n".join(rows) + "\n")
    m = result.metrics
    title = f"{m['model']} on {m['pairs']}"
    ok = np.ones(result.scores.size, dtype=bool)
    ok[list(failed)] = False
    # Plot the usable pairs; if failures removed a whole class, plot everything (failed pairs sit at -1).
    if not (result.same[ok].any() and (~result.same[ok]).any()):
        ok[:] = True
    same, scores = result.same[ok], result.scores[ok]
    plot_roc(same, scores, written[2], title=title, tar_at_far=m["tar_at_far"], auc_value=m["auc"])
    plot_scores(
        same,
        scores,
        written[3],
        title=title,
        threshold=m["threshold"],
        threshold_far=m.get("threshold_target_far"),
        target_far=m["target_far"],
    )
    return written


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value
