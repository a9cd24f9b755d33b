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

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["PSI_FLOOR", "ks_binned", "ks_pvalue", "ks_samples", "psi", "psi_samples", "quantile_edges"]

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
