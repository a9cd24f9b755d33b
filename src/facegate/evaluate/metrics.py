"""Verification metrics on cosine scores (higher = more alike; a pair matches when ``score >= threshold``).

Everything here is exact, vectorised numpy: the ROC has one point per distinct score (scikit-learn's
``roc_curve(..., drop_intermediate=False)``), the accuracy-optimal threshold is searched over every distinct score
rather than a fixed grid, and the 10-fold protocol chooses each fold's threshold on the other nine folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "STANDARD_FARS",
    "RocCurve",
    "auc",
    "best_accuracy_threshold",
    "compute_metrics",
    "eer",
    "kfold_accuracy",
    "roc_curve",
    "tar_at_far",
]

# Always reported (as null where the impostor count cannot resolve them); lower FARs only where it can.
STANDARD_FARS = (1e-1, 1e-2, 1e-3)
_LOWER_FARS = (1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class RocCurve:
    """ROC points: ``fpr[i]``, ``tpr[i]`` when matching pairs with ``score >= thresholds[i]``."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    if y.all() or not y.any():
        raise ValueError("need both genuine (same) and impostor (different) pairs")
    return y, s


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> RocCurve:
    """ROC with one point per distinct score, starting at (0, 0) with threshold +inf.

    Args:
        labels: Truthy for genuine pairs.
        scores: Similarity scores.

    Returns:
        The curve; thresholds decrease, fpr and tpr increase.
    """
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last index of each run of equal scores: ties move together.
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (~y).sum()]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal; equals the Mann-Whitney statistic with ties counted half)."""
    roc = roc_curve(labels, scores)
    return float(np.trapezoid(roc.tpr, roc.fpr))


def eer(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where false accepts equal false rejects.

    The crossing of FPR and FNR = 1 - TPR is linearly interpolated between the two ROC points around it.

    Returns:
        ``(eer, threshold)``.
    """
    roc = roc_curve(labels, scores)
    fnr = 1.0 - roc.tpr
    diff = roc.fpr - fnr  # increases from -1 to +1 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0:
        return float(roc.fpr[0]), float(roc.thresholds[1])
    d0, d1 = diff[i - 1], diff[i]
    w = 0.0 if d1 == d0 else float(-d0 / (d1 - d0))
    rate = float(roc.fpr[i - 1] + w * (roc.fpr[i] - roc.fpr[i - 1]))
    t0 = roc.thresholds[i - 1] if np.isfinite(roc.thresholds[i - 1]) else roc.thresholds[i]
    thr = float(t0 + w * (roc.thresholds[i] - t0))
    return rate, thr


def tar_at_far(labels: np.ndarray, scores: np.ndarray, far: float) -> tuple[float, float] | None:
    """True accept rate at a target false accept rate.

    Args:
        labels: Truthy for genuine pairs.
        scores: Similarity scores.
        far: Target FAR in (0, 1).

    Returns:
        ``(tar, threshold)`` for the loosest threshold whose FAR is <= ``far``; ``None`` when the impostor count
        cannot resolve that FAR (fewer than ``1 / far`` impostor pairs).
    """
    y, _ = _check(labels, scores)
    n_neg = int((~y).sum())
    if n_neg * far < 1.0:
        return None
    roc = roc_curve(labels, scores)
    ok = np.nonzero(roc.fpr <= far + 1e-12)[0]
    i = int(ok[-1])
    thr = roc.thresholds[i]
    if not np.isfinite(thr):
        # No finite threshold reaches the target: matching nothing is the only way; report just above the top score.
        thr = float(np.max(scores)) + 1e-6
    return float(roc.tpr[i]), float(thr)


def best_accuracy_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy, searched over every distinct score.

    The returned threshold is the midpoint between the optimal score and the next lower one, so held-out pairs
    are judged by a boundary between observed scores rather than on one.

    Returns:
        ``(threshold, accuracy)``.
    """
    y, s = _check(labels, scores)
    roc = roc_curve(y, s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    correct = roc.tpr * n_pos + (1.0 - roc.fpr) * n_neg
    i = int(np.argmax(correct))
    acc = float(correct[i] / y.size)
    thresholds = roc.thresholds
    if i == 0:
        thr = float(thresholds[1]) + 1e-6
    elif i + 1 < thresholds.size:
        thr = float((thresholds[i] + thresholds[i + 1]) / 2.0)
    else:
        thr = float(thresholds[i]) - 1e-6
    return thr, acc


def kfold_accuracy(labels: np.ndarray, scores: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """The LFW protocol: per fold, choose the threshold on the other folds, measure accuracy on the fold.

    Args:
        labels: Truthy for genuine pairs.
        scores: Similarity scores.
        folds: Integer fold id per pair.

    Returns:
        ``{"accuracy", "accuracy_std", "fold_accuracies", "fold_thresholds"}``; std is the population std over
        folds, as insightface and the LFW results page report it.
    """
    y, s = _check(labels, scores)
    f = np.asarray(folds).ravel()
    if f.shape != y.shape:
        raise ValueError("folds must have one entry per pair")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError("need at least 2 folds")
    accs: list[float] = []
    thrs: list[float] = []
    for k in ids:
        test = f == k
        thr, _ = best_accuracy_threshold(y[~test], s[~test])
        accs.append(float(((s[test] >= thr) == y[test]).mean()))
        thrs.append(thr)
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "fold_thresholds": thrs,
    }


def compute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    folds: np.ndarray,
    *,
    target_far: float = 1e-3,
) -> dict[str, Any]:
    """Every verification metric facegate reports.

    Args:
        labels: Truthy for genuine pairs.
        scores: Similarity scores.
        folds: Integer fold id per pair.
        target_far: FAR at which the deployment threshold is chosen.

    Returns:
        A JSON-ready dict: ``accuracy``, ``accuracy_std``, ``auc``, ``eer``, ``eer_threshold``, ``tar_at_far``,
        ``threshold_at_far``, ``threshold`` (accuracy-optimal on all pairs), ``threshold_target_far`` (for
        ``target_far``; null where unresolvable), ``n_pairs``, ``n_genuine``, ``n_impostor``, per-fold figures.
    """
    y, s = _check(labels, scores)
    kfold = kfold_accuracy(y, s, folds)
    rate, eer_thr = eer(y, s)
    n_neg = int((~y).sum())
    fars = list(STANDARD_FARS) + [f for f in _LOWER_FARS if n_neg * f >= 1.0]
    tar: dict[str, float | None] = {}
    tar_thr: dict[str, float | None] = {}
    for far in fars:
        res = tar_at_far(y, s, far)
        key = f"{far:g}"
        tar[key] = None if res is None else res[0]
        tar_thr[key] = None if res is None else res[1]
    target = tar_at_far(y, s, target_far)
    best_thr, best_acc = best_accuracy_threshold(y, s)
    return {
        "accuracy": kfold["accuracy"],
        "accuracy_std": kfold["accuracy_std"],
        "auc": auc(y, s),
        "eer": rate,
        "eer_threshold": eer_thr,
        "tar_at_far": tar,
        "threshold_at_far": tar_thr,
        "threshold": best_thr,
        "best_accuracy_all_pairs": best_acc,
        "target_far": target_far,
        "threshold_target_far": None if target is None else target[1],
        "n_pairs": int(y.size),
        "n_genuine": int(y.sum()),
        "n_impostor": n_neg,
        "fold_accuracies": kfold["fold_accuracies"],
        "fold_thresholds": kfold["fold_thresholds"],
    }
