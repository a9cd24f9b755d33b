"""1:1 verification of two images: decode -> detect/align -> embed -> cosine score -> decision."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits, read_image
from facegate.errors import FaceError
from facegate.faces.pipeline import AlignMode, FaceAligner, FaceCrop
from facegate.models.base import Embedder

__all__ = ["prepare_image", "verify_pair"]


def prepare_image(
    path: str | Path, aligner: FaceAligner, *, mode: AlignMode = "auto", limits: ImageLimits = DEFAULT_LIMITS
) -> FaceCrop:
    """Decode an image file and return its aligned face.

    Raises:
        ImageError: If the file cannot be decoded (message names the file).
        FaceError: If no usable face is found (message names the file).
    """
    image = read_image(path, limits=limits)
    try:
        return aligner.prepare(image, mode)
    except FaceError as exc:
        raise FaceError(f"{path}: {exc.message}", code=exc.code) from None


def verify_pair(
    image_a: str | Path,
    image_b: str | Path,
    embedder: Embedder,
    aligner: FaceAligner,
    *,
    threshold: float | None = None,
    mode: AlignMode = "auto",
    limits: ImageLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Decide whether two photos show the same person.

    Args:
        image_a: First image file.
        image_b: Second image file.
        embedder: The model.
        aligner: Detection and alignment.
        threshold: Cosine threshold; the model's own (evaluated or published) threshold when omitted.
        mode: Alignment mode (``auto`` aligns anything that is not already a 112x112 face).
        limits: Image limits.

    Returns:
        ``{"score", "match", "threshold", "threshold_source", "model", "model_version", "image_a", "image_b",
        "seconds"}``; each image entry has its path, the chosen face box and landmarks, sharpness and face count.

    Raises:
        ImageError: If an image cannot be decoded (naming it).
        FaceError: If an image has no usable face (naming it).
    """
    t0 = time.perf_counter()
    crops = [prepare_image(p, aligner, mode=mode, limits=limits) for p in (image_a, image_b)]
    emb = embedder.embed(np.stack([c.face for c in crops]))
    score = float(np.dot(emb[0], emb[1]))
    thr = embedder.default_threshold if threshold is None else float(threshold)

    def info(path: str | Path, crop: FaceCrop) -> dict[str, Any]:
        d: dict[str, Any] = {"path": str(path), "faces_found": crop.n_faces, "sharpness": round(crop.sharpness, 1)}
        if crop.detection is not None:
            d["face"] = crop.detection.to_dict()
        else:
            d["face"] = "already aligned"
        return d

    return {
        "score": round(score, 6),
        "match": bool(score >= thr),
        "threshold": thr,
        "threshold_source": "given" if threshold is not None else "model",
        "model": embedder.name,
        "model_version": embedder.version,
        "image_a": info(image_a, crops[0]),
        "image_b": info(image_b, crops[1]),
        "seconds": round(time.perf_counter() - t0, 4),
    }
