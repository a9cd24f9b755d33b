"""Image -> aligned face: the one path shared by ingest, evaluate, verify and serve.

``FaceAligner.prepare`` runs decode-checked RGB through detection, the selection policy, alignment and the
sharpness check, and returns a :class:`FaceCrop` or raises :class:`~facegate.errors.FaceError` with a reason code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from facegate.data.imageio import ImageLimits
from facegate.errors import FaceError
from facegate.faces.align import FACE_SIZE, align_face
from facegate.faces.detect import Detection, Detector, YuNetDetector, create_detector
from facegate.faces.quality import FacePolicy, select_face, sharpness

if TYPE_CHECKING:
    from facegate.config import Settings

__all__ = ["AlignMode", "FaceAligner", "FaceCrop", "aligner_from_settings", "is_aligned", "limits_from_settings"]

AlignMode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class FaceCrop:
    """An aligned face and how it was found.

    Attributes:
        face: ``(112, 112, 3)`` uint8 RGB on the ArcFace template.
        detection: The chosen detection (``None`` when the input was already aligned).
        sharpness: Variance of the Laplacian of the crop.
        n_faces: Number of faces the detector found.
    """

    face: np.ndarray
    detection: Detection | None
    sharpness: float
    n_faces: int = 1
    extra: dict[str, object] = field(default_factory=dict)


def is_aligned(image: np.ndarray) -> bool:
    """Whether an image already has the aligned-face shape (112x112x3)."""
    return image.shape[:2] == (FACE_SIZE, FACE_SIZE)


class FaceAligner:
    """Detect, select, align and quality-check faces.

    Args:
        detector: The detector (created lazily as YuNet when omitted, so aligned-only work never loads it).
        policy: Selection and quality policy.
    """

    def __init__(self, detector: Detector | None = None, policy: FacePolicy | None = None) -> None:
        self._detector = detector
        self.policy = policy or FacePolicy()

    @property
    def detector(self) -> Detector:
        """The detector, created on first use."""
        if self._detector is None:
            self._detector = create_detector("yunet")
        return self._detector

    def prepare(
        self, image: np.ndarray, mode: AlignMode = "always", timings: dict[str, float] | None = None
    ) -> FaceCrop:
        """Turn an RGB image into an aligned face crop.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            mode: ``always`` detects and aligns; ``never`` expects an already aligned 112x112 face; ``auto`` aligns
                only images that are not 112x112.
            timings: When given, receives the detector's seconds under ``"detect"`` (the server's stage timers).

        Raises:
            FaceError: ``no_face``, ``multiple_faces``, ``face_too_small``, ``blurry`` or ``not_aligned``.
        """
        if mode == "never" or (mode == "auto" and is_aligned(image)):
            if not is_aligned(image):
                raise FaceError(
                    f"image is {image.shape[1]}x{image.shape[0]}, not an aligned 112x112 face", code="not_aligned"
                )
            sharp = sharpness(image)
            if sharp < self.policy.min_sharpness:
                raise FaceError(
                    f"face is too blurry (sharpness {sharp:.1f} < {self.policy.min_sharpness:.1f})", code="blurry"
                )
            return FaceCrop(face=image, detection=None, sharpness=sharp, n_faces=1)
        t0 = time.perf_counter()
        detections = self.detector.detect(image)
        if timings is not None:
            timings["detect"] = time.perf_counter() - t0
        chosen = select_face(detections, image.shape, self.policy)
        face = align_face(image, chosen.landmarks)
        sharp = sharpness(face)
        if sharp < self.policy.min_sharpness:
            raise FaceError(
                f"face is too blurry (sharpness {sharp:.1f} < {self.policy.min_sharpness:.1f})", code="blurry"
            )
        return FaceCrop(face=face, detection=chosen, sharpness=sharp, n_faces=len(detections))


def aligner_from_settings(settings: Settings, **policy_overrides: Any) -> FaceAligner:
    """Build a :class:`FaceAligner` from resolved settings (the detector itself is created on first use)."""
    det = settings.detector
    fp = settings.face.model_dump()
    fp.update(policy_overrides)
    detector = (
        YuNetDetector(score_threshold=det.score_threshold, nms_threshold=det.nms_threshold, max_side=det.max_side)
        if det.name == "yunet"
        else None
    )
    return FaceAligner(detector, FacePolicy(**fp))


def limits_from_settings(settings: Settings) -> ImageLimits:
    """The image limits from resolved settings."""
    return ImageLimits(**settings.limits.model_dump())
