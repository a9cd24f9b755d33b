"""Image-derived covariates of a face photo, and the fixed bins evaluation and serving both report them in.

Where no demographic labels exist, the photo itself still says something about who a verifier fails: under-exposed
faces (often darker-skinned ones under kiosk lighting) are exactly where detectors give up. Four covariates:

- **illumination**: mean luma (BT.601, 0-255) of the face box, or of the image's central half when no face was found
  (so failures to acquire still fall in an illumination bin);
- **face size**: the shorter side of the face box in the original photo, in pixels (``aligned`` when the input was
  already an aligned crop, whose original size is unknown);
- **pose**: a yaw proxy from the five landmarks: the nose's horizontal offset from the eyes' midpoint, in units of
  the inter-ocular distance, measured along the eye line (0 frontal, ~0.5 a strong profile);
- **sharpness**: variance of the Laplacian of the aligned 112x112 crop (the quality policy's own measure).

The bins are fixed (not quantiles of one data set) so that an evaluation report and the serving counters speak
of the same bins, and their label sets are small and bounded (Prometheus labels must be).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BINS", "UNKNOWN", "Covariates", "bin_covariates", "luma", "measure_covariates", "yaw_proxy"]

UNKNOWN = "unknown"
#: Covariate -> ((upper edge, bin name), ...) in increasing order; the last bin has no upper edge.
_EDGES: dict[str, tuple[tuple[float, str], ...]] = {
    "illumination": ((60.0, "dark"), (100.0, "dim"), (170.0, "normal"), (float("inf"), "bright")),
    "face_size": ((64.0, "small"), (128.0, "medium"), (float("inf"), "large")),
    "pose": ((0.08, "frontal"), (0.2, "turned"), (float("inf"), "profile")),
    "sharpness": ((30.0, "soft"), (80.0, "medium"), (float("inf"), "sharp")),
}
#: Every label a covariate can take (bins, ``unknown``, and ``aligned`` for face size).
BINS: dict[str, tuple[str, ...]] = {
    k: tuple(name for _, name in v) + ((UNKNOWN, "aligned") if k == "face_size" else (UNKNOWN,))
    for k, v in _EDGES.items()
}


@dataclass(frozen=True)
class Covariates:
    """What one photo measures (``None`` where it could not be measured)."""

    illumination: float | None
    face_size: float | None
    pose: float | None
    sharpness: float | None
    aligned_input: bool = False


def luma(image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> float:
    """Mean BT.601 luma of an RGB image inside ``box`` (x, y, w, h), or of its central half without one."""
    h, w = image.shape[:2]
    if box is None:
        x0, y0, x1, y1 = w // 4, h // 4, w - w // 4, h - h // 4
    else:
        x, y, bw, bh = box
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
        if x1 <= x0 or y1 <= y0:
            x0, y0, x1, y1 = 0, 0, w, h
    region = image[y0:y1, x0:x1]
    # Luma is linear in the channels, so the mean of luma is luma of the channel means: OpenCV's per-channel means
    # (in double) give it without a float copy of the region (10 against 57 us per check-in's face box).
    means = cv2.mean(region)
    if region.ndim == 2:
        return float(means[0])
    return float(0.299 * means[0] + 0.587 * means[1] + 0.114 * means[2])


def yaw_proxy(landmarks: np.ndarray) -> float | None:
    """``|nose offset from the eye midpoint| / inter-ocular distance`` along the eye line; None if degenerate."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left, right, nose = pts[0], pts[1], pts[2]
    axis = right - left
    iod = float(np.hypot(*axis))
    if iod < 1e-6:
        return None
    offset = nose - (left + right) / 2.0
    return abs(float(offset @ axis) / iod) / iod


def measure_covariates(
    image: np.ndarray,
    *,
    box: tuple[float, float, float, float] | None = None,
    landmarks: np.ndarray | None = None,
    crop: np.ndarray | None = None,
    aligned_input: bool = False,
) -> Covariates:
    """Measure one photo.

    Args:
        image: The RGB photo as decoded (or the aligned crop itself when ``aligned_input``).
        box: The chosen face box in ``image`` (None when no face was found or the input was aligned).
        landmarks: Its five landmarks.
        crop: The aligned 112x112 face (None when none was made).
        aligned_input: Whether ``image`` was already an aligned crop (its face size in the photo is unknown).
    """
    from facegate.faces.quality import sharpness

    # The face fills an aligned crop: its central region is the face.
    illumination = luma(image[16:104, 16:96]) if aligned_input else luma(image, box)
    return Covariates(
        illumination=illumination,
        face_size=None if box is None or aligned_input else float(min(box[2], box[3])),
        pose=None if landmarks is None else yaw_proxy(landmarks),
        sharpness=None if crop is None else sharpness(crop),
        aligned_input=aligned_input,
    )


def _bin(name: str, value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return UNKNOWN
    for edge, label in _EDGES[name]:
        if value < edge:
            return label
    return _EDGES[name][-1][1]


def bin_covariates(cov: Covariates) -> dict[str, str]:
    """The bin of every covariate (labels from :data:`BINS`)."""
    out = {k: _bin(k, getattr(cov, k)) for k in _EDGES}
    if cov.aligned_input:
        out["face_size"] = "aligned"
    return out
