"""5-point similarity alignment onto the standard ArcFace 112x112 template.

Landmark order everywhere in facegate: left eye, right eye, nose tip, left mouth corner, right mouth corner, "left"
as seen in the image (YuNet's and MTCNN's order). The template is insightface's ``arcface_dst``, the one every
ArcFace-family model (and OpenCV's SFace ``alignCrop``) was trained on, so one aligned crop serves every embedder.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ARCFACE_TEMPLATE", "FACE_SIZE", "align_face", "estimate_similarity", "transform_points"]

FACE_SIZE = 112

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's closed form, the same estimate as scikit-image's ``SimilarityTransform`` that insightface uses,
    without the dependency. A reflection is never returned: a mirrored face is a different face.

    Args:
        src: ``(N, 2)`` source points, N >= 2.
        dst: ``(N, 2)`` destination points.

    Returns:
        ``(2, 3)`` float64 affine matrix ``M`` with ``dst ~= M @ [x, y, 1]``.

    Raises:
        ValueError: If the shapes differ, fewer than 2 points are given, or the source points are degenerate.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = (src_c**2).sum() / n
    if src_var < 1e-12:
        raise ValueError("degenerate landmarks: all source points coincide")
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / src_var)
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points."""
    pts = np.asarray(pts, dtype=np.float64)
    out: np.ndarray = pts @ m[:, :2].T + m[:, 2]
    return out


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Warp a face onto the ArcFace template.

    Args:
        image: ``(H, W, 3)`` uint8 image (any channel order; it is preserved).
        landmarks: ``(5, 2)`` landmarks in image coordinates, in facegate's order.
        size: Output side; the template is scaled from 112 (112 is what every shipped model expects).

    Returns:
        ``(size, size, 3)`` uint8 aligned crop.
    """
    dst = ARCFACE_TEMPLATE * (size / FACE_SIZE)
    m = estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), dst)
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.ascontiguousarray(out)
