"""Plots people would rather look at than read: the ROC (log-FAR axis) and genuine vs impostor score histograms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facegate.evaluate.metrics import roc_curve

__all__ = ["plot_roc", "plot_scores"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: CI, kiosks and cluster pods have no display
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    same: np.ndarray,
    scores: np.ndarray,
    path: str | Path,
    *,
    title: str,
    tar_at_far: dict[str, float | None] | None = None,
    auc_value: float | None = None,
) -> None:
    """ROC with a logarithmic FAR axis (the operating region of a verifier is FAR <= 1e-2)."""
    plt = _pyplot()
    roc = roc_curve(same, scores)
    n_neg = int((~np.asarray(same, dtype=bool)).sum())
    floor = 1.0 / max(n_neg, 1)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.plot(np.maximum(roc.fpr, floor / 2), roc.tpr, lw=2, label=f"ROC (AUC {auc_value:.4f})" if auc_value else "ROC")
    for key, tar in (tar_at_far or {}).items():
        if tar is not None:
            ax.scatter([float(key)], [tar], zorder=3)
            ax.annotate(
                f"TAR {tar:.3f} @ FAR {key}", (float(key), tar), textcoords="offset points", xytext=(6, -12), fontsize=8
            )
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1.0)
    # Zoom on the curve from FAR = one impostor pair upwards; the (0, 0) corner carries no information.
    visible = roc.tpr[roc.fpr >= floor]
    ax.set_ylim(max(0.0, float(visible.min(initial=0.0)) - 0.02), 1.005)
    ax.set_xlabel(f"false accept rate (log; 1 impostor pair = {floor:.1e})")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scores(
    same: np.ndarray,
    scores: np.ndarray,
    path: str | Path,
    *,
    title: str,
    threshold: float,
    threshold_far: float | None = None,
    target_far: float | None = None,
) -> None:
    """Genuine vs impostor cosine-score histograms with the thresholds marked."""
    plt = _pyplot()
    y = np.asarray(same, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    bins = np.linspace(min(-0.2, float(s.min())), max(1.0, float(s.max())), 60)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.hist(s[~y], bins=bins, alpha=0.6, label=f"impostor ({int((~y).sum())})", color="tab:red")
    ax.hist(s[y], bins=bins, alpha=0.6, label=f"genuine ({int(y.sum())})", color="tab:green")
    ax.axvline(threshold, color="k", ls="--", label=f"best-accuracy threshold {threshold:.3f}")
    if threshold_far is not None and target_far is not None:
        ax.axvline(
            threshold_far, color="tab:blue", ls=":", label=f"threshold @ FAR {target_far:g}: {threshold_far:.3f}"
        )
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
