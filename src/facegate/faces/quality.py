"""The kiosk face-selection policy and quality checks.

A check-in photo should hold exactly one clear, large-enough face. The policy picks the subject (the largest face,
ties broken by closeness to the image centre) and says why a photo is unusable with a stable reason code:
``no_face``, ``multiple_faces``, ``face_too_small`` or ``blurry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from facegate.errors import FaceError
from facegate.faces.detect import Detection

__all__ = ["FacePolicy", "select_face", "sharpness"]


@dataclass(frozen=True)
class FacePolicy:
    """How to choose the subject's face and when to refuse a photo.

    Attributes:
        min_face_size: Smallest accepted shorter side of the face box, in pixels of the original image.
        min_sharpness: Smallest accepted variance of the Laplacian of the aligned 112x112 grey crop. LFW's aligned
            faces measure 15-200+ (0.5th percentile ~30); a 7x7 Gaussian blur brings a typical face below 10.
        multiple: ``"reject"`` refuses a photo with a second face at least ``second_face_ratio`` as large as the
            subject's (a kiosk must not guess who is checking in); ``"pick"`` takes the subject and goes on (datasets).
        second_face_ratio: Area ratio above which a second face counts as a competitor.
    """

    min_face_size: float = 32.0
    min_sharpness: float = 10.0
    multiple: Literal["reject", "pick"] = "pick"
    second_face_ratio: float = 0.35


def sharpness(face: np.ndarray) -> float:
    """Variance of the Laplacian of a face crop's grey image (higher = sharper)."""
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_64F))  # population variance, as numpy's var(), in one pass
    return float(std[0, 0]) ** 2


def select_face(detections: list[Detection], image_shape: tuple[int, ...], policy: FacePolicy) -> Detection:
    """Pick the subject's face among detections.

    Args:
        detections: The detector's output.
        image_shape: Shape of the image the detections refer to (H, W, ...).
        policy: Selection policy.

    Returns:
        The chosen detection.

    Raises:
        FaceError: ``no_face``, ``multiple_faces`` or ``face_too_small``.
    """
    if not detections:
        raise FaceError("no face found", code="no_face")
    h, w = image_shape[:2]
    cx, cy = w / 2.0, h / 2.0
    diag = float(np.hypot(w, h)) or 1.0

    def centre_distance(d: Detection) -> float:
        x, y, bw, bh = d.box
        return float(np.hypot(x + bw / 2 - cx, y + bh / 2 - cy)) / diag

    # The largest face is the subject; among faces within 10 % of its area, the most central one wins.
    top_area = max(d.area for d in detections)
    similar = [d for d in detections if d.area >= 0.9 * top_area]
    subject = min(similar, key=centre_distance)
    if policy.multiple == "reject":
        rivals = [d for d in detections if d is not subject and d.area >= policy.second_face_ratio * subject.area]
        if rivals:
            raise FaceError(f"{len(rivals) + 1} faces in the photo; exactly one is expected", code="multiple_faces")
    if subject.size < policy.min_face_size:
        raise FaceError(
            f"face is {subject.size:.0f} px, smaller than the {policy.min_face_size:.0f} px minimum",
            code="face_too_small",
        )
    return subject
