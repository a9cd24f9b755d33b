"""Score drift: the population stability index (PSI) and the two-sample KS test, and the drift report.

PSI and KS are the one implementation shared by the canary analysis (over ``facegate_score`` histogram buckets)
and the scheduled drift report (over raw check-in scores). PSI measures how much a distribution moved
(conventionally < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant) but knows nothing of sample size: with a few
dozen scores, one cluster crossing a bin edge gives PSI > 1. The KS test says whether a shift is more than
sampling noise, so a shift counts only when both agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "PSI_FLOOR",
    "DriftPolicy",
    "drift_report",
    "ks_binned",
    "ks_pvalue",
    "ks_samples",
    "psi",
    "psi_samples",
    "quantile_edges",
    "read_scores",
    "report_markdown",
]

#: Share given to an empty bin, so a bin empty on one side adds a large but finite term instead of infinity.
PSI_FLOOR = 1e-4


def psi(reference: ArrayLike, recent: ArrayLike, *, floor: float = PSI_FLOOR) -> float:
    """Population stability index between two histograms over the same bins.

    Args:
        reference: Counts (or weights) per bin of the reference distribution.
        recent: Counts per bin of the distribution compared with it, same bins.
        floor: Minimum share of a bin on either side.

    Returns:
        ``sum((q - p) * ln(q / p))`` over bins, with ``p``, ``q`` the shares; ``nan`` when either side is empty.

    Raises:
        ValueError: If the bin counts differ or a count is negative.
    """
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(recent, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"PSI needs two histograms over the same bins, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("PSI bin counts must be >= 0")
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p = np.maximum(p / p.sum(), floor)
    q = np.maximum(q / q.sum(), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def quantile_edges(reference: Sequence[float], bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (equal-population bins; ties merged)."""
    qs = np.quantile(np.asarray(reference, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def psi_samples(reference: Sequence[float], recent: Sequence[float], bins: int = 10) -> float:
    """PSI of raw samples, binned by the reference's deciles (or ``bins`` quantiles)."""
    if len(reference) == 0 or len(recent) == 0:
        return math.nan
    edges = quantile_edges(reference, bins)
    count = len(edges) + 1
    p = np.bincount(np.searchsorted(edges, np.asarray(reference, dtype=np.float64), side="right"), minlength=count)
    q = np.bincount(np.searchsorted(edges, np.asarray(recent, dtype=np.float64), side="right"), minlength=count)
    return psi(p, q)


def ks_pvalue(d: float, n1: float, n2: float) -> float:
    """Asymptotic p-value of the two-sample Kolmogorov-Smirnov statistic ``d`` for sample sizes ``n1``, ``n2``.

    Uses the Kolmogorov distribution with Stephens' small-sample correction,
    ``Q((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * d)`` with ``ne = n1 n2 / (n1 + n2)``.
    """
    if n1 <= 0 or n2 <= 0:
        return math.nan
    ne = n1 * n2 / (n1 + n2)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 0.2:  # the series converges slowly there, and Q is 1 to 10 digits
        return 1.0
    total = sum(float((-1) ** (k - 1)) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, 2.0 * total))


def ks_binned(reference: ArrayLike, recent: ArrayLike) -> tuple[float, float]:
    """``(D, p)`` of the KS test on two histograms over the same bins (D measured at the bin edges).

    Binning can only hide differences inside a bin, so the test is conservative: it never reports a shift the
    raw samples would not show.
    """
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(recent, dtype=np.float64)
    n1, n2 = float(p.sum()), float(q.sum())
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan
    d = float(np.max(np.abs(np.cumsum(p) / n1 - np.cumsum(q) / n2)))
    return d, ks_pvalue(d, n1, n2)


def ks_samples(reference: ArrayLike, recent: ArrayLike) -> tuple[float, float]:
    """``(D, p)`` of the two-sample KS test on raw samples."""
    a = np.sort(np.asarray(reference, dtype=np.float64))
    b = np.sort(np.asarray(recent, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    grid = np.concatenate([a, b])
    d = float(
        np.max(
            np.abs(np.searchsorted(a, grid, side="right") / a.size - np.searchsorted(b, grid, side="right") / b.size)
        )
    )
    return d, ks_pvalue(d, a.size, b.size)


# -- the drift report ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftPolicy:
    """When the champion counts as drifted on the new pairs.

    Attributes:
        max_psi: A score distribution (genuine or impostor pairs) moved more than this PSI ...
        alpha: ... and the KS test rejects "same distribution" at this level.
        max_tar_drop: Genuine pairs accepted at the serving threshold fell by more than this (absolute).
        max_far_rise: Impostor pairs accepted at the serving threshold rose by more than this (absolute).
    """

    max_psi: float = 0.25
    alpha: float = 0.01
    max_tar_drop: float = 0.05
    max_far_rise: float = 0.01


def read_scores(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(same, scores)`` from an evaluation's ``scores.csv``; pairs whose images failed are left out.

    Raises:
        DataError: If the file lacks the ``same`` and ``score`` columns.
    """
    import csv

    from facegate.errors import DataError

    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"same", "score"} <= set(rows[0]):
        raise DataError(f"{path}: expected the columns same and score (an evaluation's scores.csv)")
    kept = [r for r in rows if r.get("failed", "0") != "1"]
    return (np.array([r["same"] == "1" for r in kept], dtype=bool), np.array([float(r["score"]) for r in kept]))


def _at_threshold(same: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    accepted = scores >= threshold
    return {
        "accuracy": float(np.mean(accepted == same)) if same.size else None,
        "tar": float(np.mean(accepted[same])) if same.any() else None,
        "far": float(np.mean(accepted[~same])) if (~same).any() else None,
    }


def drift_report(
    recent: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    threshold: float,
    *,
    policy: DriftPolicy | None = None,
    recent_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare the champion's scores on newly labelled check-in pairs with its reference scores.

    Genuine and impostor pairs are compared separately (a shift of either moves the error rates at the fixed
    serving threshold): PSI and KS per class, then accuracy, TAR and FAR at ``threshold`` on both sets.

    Args:
        recent: ``(same, scores)`` of the champion on the new pairs (:func:`read_scores`).
        reference: ``(same, scores)`` of the champion on its reference pairs (its registration evaluation).
        threshold: The serving threshold (the bundle's).
        policy: What counts as drift.
        recent_metrics: The new evaluation's ``metrics.json`` (accuracy, TAR at the target FAR), reported as is.

    Returns:
        A JSON-ready report whose ``drifted`` says whether any check failed, and ``reasons`` which.
    """
    p = policy or DriftPolicy()
    reasons: list[str] = []
    classes: dict[str, Any] = {}
    for name, want in (("genuine", True), ("impostor", False)):
        a, b = reference[1][reference[0] == want], recent[1][recent[0] == want]
        value, (d, pv) = psi_samples(a, b), ks_samples(a, b)
        shifted = not math.isnan(value) and value > p.max_psi and pv < p.alpha
        classes[name] = {
            "n_reference": int(a.size),
            "n_recent": int(b.size),
            "mean_reference": float(a.mean()) if a.size else None,
            "mean_recent": float(b.mean()) if b.size else None,
            "psi": None if math.isnan(value) else value,
            "ks_d": None if math.isnan(d) else d,
            "ks_p": None if math.isnan(pv) else pv,
            "shifted": shifted,
        }
        if shifted:
            reasons.append(f"{name} scores shifted: PSI {value:.3f} > {p.max_psi}, KS p {pv:.2g} < {p.alpha}")
    ref_at, new_at = _at_threshold(*reference, threshold), _at_threshold(*recent, threshold)
    if ref_at["tar"] is not None and new_at["tar"] is not None and ref_at["tar"] - new_at["tar"] > p.max_tar_drop:
        reasons.append(f"TAR at threshold {threshold:.3f} fell from {ref_at['tar']:.3f} to {new_at['tar']:.3f}")
    if ref_at["far"] is not None and new_at["far"] is not None and new_at["far"] - ref_at["far"] > p.max_far_rise:
        reasons.append(f"FAR at threshold {threshold:.3f} rose from {ref_at['far']:.4f} to {new_at['far']:.4f}")
    keep = ("accuracy", "accuracy_std", "tar_at_far", "target_far", "auc", "eer", "n_pairs", "n_failed_pairs")
    return {
        "drifted": bool(reasons),
        "reasons": reasons,
        "threshold": threshold,
        "policy": asdict(p),
        "classes": classes,
        "at_threshold": {"reference": ref_at, "recent": new_at},
        "recent_evaluation": {k: recent_metrics.get(k) for k in keep} if recent_metrics else None,
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The drift report as Markdown (the CronWorkflow's output)."""
    lines = [
        f"## Drift report: {'DRIFTED' if report['drifted'] else 'no drift'}",
        "",
        *[f"- {r}" for r in report["reasons"]],
        "",
        "| pairs | n ref | n new | mean ref | mean new | PSI | KS D | KS p | shifted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["classes"].items():
        cells = [c["n_reference"], c["n_recent"], c["mean_reference"], c["mean_recent"], c["psi"], c["ks_d"], c["ks_p"]]
        text = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in cells]
        lines.append(f"| {name} | " + " | ".join(text) + f" | {'yes' if c['shifted'] else 'no'} |")
    ref, new = report["at_threshold"]["reference"], report["at_threshold"]["recent"]
    lines += [
        "",
        f"At the serving threshold {report['threshold']:.3f}:",
        "",
        "| | accuracy | TAR | FAR |",
        "|---|---|---|---|",
    ]
    for label, m in (("reference", ref), ("new pairs", new)):
        lines.append(
            f"| {label} | "
            + " | ".join("-" if m[k] is None else f"{m[k]:.4f}" for k in ("accuracy", "tar", "far"))
            + " |"
        )
    return "\n".join(lines) + "\n"
