"""A deterministic synthetic identity dataset: cartoon faces drawn on the ArcFace 112x112 template.

Each identity has its own face shape, skin and hair colour, eye, brow, nose and mouth geometry and a
low-frequency skin texture; each image of it varies pose (small rotation, scale, shift), lighting, expression and
noise. The same ``(n_identities, per_identity, seed)`` always gives the same pixels, so tests and the demo are
reproducible without any download. These are not photographs: a face *detector* will not fire on them and they say
nothing about accuracy on real faces. They exercise every code path that takes aligned faces.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facegate.data.imageio import encode_jpeg
from facegate.faces.align import ARCFACE_TEMPLATE, FACE_SIZE

__all__ = ["synthetic_faces", "synthetic_identity", "write_synthetic_folder", "write_synthetic_pairs"]


def _identity_params(identity: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, identity, 7919])
    return {
        "skin": rng.uniform([90, 60, 40], [240, 200, 170]),
        "hair": rng.uniform(10, 200, size=3),
        "bg": rng.uniform(0, 255, size=3),
        "face_w": rng.uniform(34, 46),
        "face_h": rng.uniform(46, 58),
        "hairline": rng.uniform(18, 38),
        "eye_r": rng.uniform(3.0, 6.5),
        "eye_color": rng.uniform(20, 160, size=3),
        "eye_dx": rng.uniform(-3, 3),
        "brow_dy": rng.uniform(7, 14),
        "brow_tilt": rng.uniform(-4, 4),
        "nose_w": rng.uniform(4, 11),
        "nose_len": rng.uniform(8, 20),
        "mouth_w": rng.uniform(9, 18),
        "lip": rng.uniform([120, 30, 30], [230, 120, 130]),
        "texture": rng.normal(0, 1, size=(6, 6)),
        "texture_amp": rng.uniform(8, 22),
    }


def synthetic_identity(identity: int, image: int, seed: int = 0) -> np.ndarray:
    """Draw image ``image`` of identity ``identity``.

    Returns:
        ``(112, 112, 3)`` uint8 RGB.
    """
    p = _identity_params(identity, seed)
    rng = np.random.default_rng([seed, identity, image, 104729])
    s = FACE_SIZE
    canvas: np.ndarray = np.empty((s, s, 3), dtype=np.float64)
    canvas[:] = p["bg"]
    lm = ARCFACE_TEMPLATE
    cx, cy = float(lm[2, 0]), float(lm[2, 1]) - 6
    fw, fh = float(p["face_w"]), float(p["face_h"])
    # Hair, face, texture.
    cv2.ellipse(canvas, (round(cx), round(cy - 4)), (round(fw + 6), round(fh + 4)), 0, 0, 360, p["hair"].tolist(), -1)
    cv2.ellipse(canvas, (round(cx), round(cy + 4)), (round(fw), round(fh)), 0, 0, 360, p["skin"].tolist(), -1)
    cv2.rectangle(canvas, (0, 0), (s, round(float(p["hairline"]))), p["hair"].tolist(), -1)
    tex = cv2.resize(np.asarray(p["texture"], dtype=np.float64), (s, s), interpolation=cv2.INTER_CUBIC)
    face_mask = np.zeros((s, s), np.float64)
    cv2.ellipse(face_mask, (round(cx), round(cy + 4)), (round(fw), round(fh)), 0, 0, 360, 1.0, -1)
    canvas += (tex * float(p["texture_amp"]) * face_mask)[:, :, None]
    # Eyes and brows at the template's eye points (shifted by the identity's eye spacing).
    blink = rng.uniform(0.55, 1.0)
    for k, side in ((0, -1), (1, 1)):
        ex, ey = float(lm[k, 0]) + side * float(p["eye_dx"]), float(lm[k, 1])
        r = float(p["eye_r"])
        cv2.ellipse(
            canvas, (round(ex), round(ey)), (round(r * 1.6), max(1, round(r * blink))), 0, 0, 360, (245, 245, 245), -1
        )
        cv2.circle(canvas, (round(ex), round(ey)), max(1, round(r * 0.8 * blink)), p["eye_color"].tolist(), -1)
        by = ey - float(p["brow_dy"])
        t = float(p["brow_tilt"]) * side
        cv2.line(canvas, (round(ex - 8), round(by + t)), (round(ex + 8), round(by - t)), p["hair"].tolist(), 2)
    # Nose and mouth.
    nx, ny = float(lm[2, 0]), float(lm[2, 1])
    nw, nl = float(p["nose_w"]), float(p["nose_len"])
    nose = np.array([[nx, ny - nl], [nx - nw / 2, ny + 2], [nx + nw / 2, ny + 2]], np.int32)
    cv2.fillPoly(canvas, [nose], (np.asarray(p["skin"]) * 0.75).tolist())
    mx, my = (lm[3] + lm[4]) / 2
    open_ = rng.uniform(1, 6)
    cv2.ellipse(
        canvas,
        (round(mx), round(my)),
        (round(float(p["mouth_w"])), max(1, round(open_))),
        0,
        0,
        360,
        p["lip"].tolist(),
        -1,
    )
    # Per-image pose, lighting and noise.
    angle, scale = rng.uniform(-6, 6), rng.uniform(0.94, 1.06)
    m = np.asarray(cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale), dtype=np.float64)
    m[:, 2] += rng.uniform(-3, 3, size=2)
    canvas = cv2.warpAffine(canvas, m, (s, s), borderMode=cv2.BORDER_REFLECT)
    gain = rng.uniform(0.75, 1.25)
    bias = rng.uniform(-25, 25)
    grad = np.linspace(rng.uniform(-20, 0), rng.uniform(0, 20), s)[None, :, None]
    canvas = canvas * gain + bias + grad + rng.normal(0, 4, size=canvas.shape)
    canvas = cv2.GaussianBlur(canvas, (3, 3), rng.uniform(0.1, 0.9))
    return np.clip(canvas, 0, 255).astype(np.uint8)


def synthetic_faces(n_identities: int, per_identity: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All images of a synthetic dataset.

    Returns:
        ``(faces (N, 112, 112, 3) uint8 RGB, labels (N,) int64)``, identity-major order.
    """
    if n_identities < 1 or per_identity < 1:
        raise ValueError("need at least one identity and one image per identity")
    faces = np.stack([synthetic_identity(i, j, seed) for i in range(n_identities) for j in range(per_identity)])
    labels = np.repeat(np.arange(n_identities, dtype=np.int64), per_identity)
    return faces, labels


def write_synthetic_folder(root: str | Path, n_identities: int, per_identity: int, seed: int = 0) -> list[Path]:
    """Write a synthetic dataset as ``root/id_XXXX/XXXX.jpg``; returns the files written."""
    base = Path(root)
    written: list[Path] = []
    for i in range(n_identities):
        folder = base / f"id_{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            path = folder / f"{j:04d}.jpg"
            path.write_bytes(encode_jpeg(synthetic_identity(i, j, seed), quality=95))
            written.append(path)
    return written


def write_synthetic_pairs(path: str | Path, n_identities: int, per_identity: int, n_pairs: int, seed: int = 0) -> Path:
    """Write a balanced ``image_a,image_b,same`` CSV over a folder written by :func:`write_synthetic_folder`."""
    if n_identities < 2 or per_identity < 2:
        raise ValueError("pairs need at least two identities with two images each")
    rng = np.random.default_rng([seed, 31337])
    rows: list[tuple[str, str, int]] = []
    for k in range(n_pairs):
        if k % 2 == 0:
            i = int(rng.integers(n_identities))
            a, b = rng.choice(per_identity, size=2, replace=False)
            rows.append((f"id_{i:04d}/{a:04d}.jpg", f"id_{i:04d}/{b:04d}.jpg", 1))
        else:
            i, j = rng.choice(n_identities, size=2, replace=False)
            a, b = rng.integers(per_identity, size=2)
            rows.append((f"id_{i:04d}/{a:04d}.jpg", f"id_{j:04d}/{b:04d}.jpg", 0))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_a", "image_b", "same"])
        w.writerows(rows)
    return out
