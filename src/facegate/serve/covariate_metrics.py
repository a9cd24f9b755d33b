"""Decisions per image-covariate bin: does the verifier refuse or send back some kinds of photo more than others?

Every check-in's photo is measured (:mod:`facegate.faces.covariates`: illumination, face size, pose, sharpness) and
its decision counted once per covariate, in ``facegate_covariate_decisions_total{covariate, bin, decision, reason}``.
The label sets are small and fixed: four covariates, at most six bins each, three decisions, the verifier's own
reason codes. Never a student, a kiosk or an image: a bin is a property of a photo, not of a person.

The PrometheusRule ``FacegateCovariateBinDeparts`` (helm/facegate/templates/monitoring.yaml) alerts when one bin's
retry + reject rate departs from the other bins' of the same covariate; :func:`snapshot` feeds the proctor
console's small view of the same counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import REGISTRY, Counter

from facegate.faces.covariates import BINS, UNKNOWN, bin_covariates, measure_covariates
from facegate.serve.metrics import DECISION_VALUES, child

__all__ = ["COVARIATE_DECISIONS", "DECISIONS", "REASONS", "measure_request", "record", "snapshot"]

DECISIONS = DECISION_VALUES
#: The verifier's reason codes; anything else is counted as ``other`` so the label set stays bounded.
REASONS = (
    "match",
    "mismatch",
    "no_face",
    "multiple_faces",
    "face_too_small",
    "low_quality",
    "blurry",
    "presentation_attack",
    "other",
)

COVARIATE_DECISIONS = Counter(
    "facegate_covariate_decisions",
    "Verification decisions per image-covariate bin (illumination, face_size, pose, sharpness) of the check-in photo.",
    ["covariate", "bin", "decision", "reason"],
)


def measure_request(image: np.ndarray, crop: Any | None) -> dict[str, str]:
    """The bins of one check-in photo (``crop``: the :class:`~facegate.faces.pipeline.FaceCrop`, or None).

    Never raises: a measurement problem must not fail a check-in; its covariates are then ``unknown``.
    """
    try:
        det = getattr(crop, "detection", None)
        cov = measure_covariates(
            image,
            box=None if det is None else det.box,
            landmarks=None if det is None else det.landmarks,
            crop=None if crop is None else crop.face,
        )
        return bin_covariates(cov)
    except Exception:  # monitoring must never fail a check-in
        return dict.fromkeys(BINS, UNKNOWN)


def record(bins: dict[str, str], decision: str, reason: str) -> None:
    """Count one decision in every covariate's bin (labels outside the fixed sets are clamped)."""
    if not bins:
        return
    decision = decision if decision in DECISIONS else "reject"
    reason = reason if reason in REASONS else "other"
    for covariate, allowed in BINS.items():
        label = bins.get(covariate, UNKNOWN)
        child(COVARIATE_DECISIONS, covariate, label if label in allowed else UNKNOWN, decision, reason).inc()


def snapshot(registry: Any = REGISTRY) -> dict[str, Any]:
    """Counts per covariate and bin since the process started: ``{covariate: {bin: {decision: n}}}`` plus rates.

    Each bin also gets ``total`` and ``refused`` (retry + reject as a fraction), and each covariate the rate of its
    other bins (``others_refused``) so a view can show which bin departs.
    """
    counts: dict[str, dict[str, dict[str, float]]] = {c: {} for c in BINS}
    for metric in registry.collect():
        if metric.name != "facegate_covariate_decisions":
            continue
        for s in metric.samples:
            if not s.name.endswith("_total"):
                continue
            cov, b, d = s.labels["covariate"], s.labels["bin"], s.labels["decision"]
            row = counts.setdefault(cov, {}).setdefault(b, dict.fromkeys(DECISIONS, 0.0))
            row[d] = row.get(d, 0.0) + s.value
    out: dict[str, Any] = {}
    for cov, bins in counts.items():
        totals = {b: sum(r.values()) for b, r in bins.items()}
        bad = {b: r.get("retry", 0.0) + r.get("reject", 0.0) for b, r in bins.items()}
        all_total, all_bad = sum(totals.values()), sum(bad.values())
        out[cov] = {}
        for b, row in sorted(bins.items()):
            rest = all_total - totals[b]
            out[cov][b] = {
                **{k: int(v) for k, v in row.items()},
                "total": int(totals[b]),
                "refused": bad[b] / totals[b] if totals[b] else None,
                "others_refused": (all_bad - bad[b]) / rest if rest else None,
            }
    return out
