"""Group labels from the images themselves: a pair set's photos binned by illumination, face size, pose, sharpness.

For sets with no demographic labels, ``facegate evaluate --covariates`` measures every image
(:mod:`facegate.faces.covariates`) and reports the same per-group rates per bin, failure to acquire included: a
photo where no face was found still has an illumination (of its central half), so under-exposed photos that the
detector gave up on show up in the ``dark`` bin's failure-to-acquire rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits
from facegate.data.pairs import PairSet
from facegate.errors import FacegateError
from facegate.evaluate.groups import GroupTable
from facegate.faces.covariates import BINS, Covariates, bin_covariates, measure_covariates
from facegate.faces.pipeline import AlignMode, FaceAligner, is_aligned

__all__ = ["covariate_table", "measure_image", "run_covariates"]


def measure_image(image: np.ndarray, aligner: FaceAligner, mode: AlignMode = "auto") -> Covariates:
    """Measure one decoded photo the way evaluation would prepare it (detection errors leave fields unknown).

    Aligned 112x112 inputs are measured on the crop; the detector is run on the crop only for the landmarks
    (pose), and its failure there changes nothing else.
    """
    from facegate.faces.align import align_face
    from facegate.faces.quality import select_face

    if mode == "never" or (mode == "auto" and is_aligned(image)):
        try:
            dets = aligner.detector.detect(image)
        except FacegateError:
            dets = []
        lm = max(dets, key=lambda d: d.area).landmarks if dets else None
        return measure_covariates(image, landmarks=lm, crop=image, aligned_input=True)
    try:
        chosen = select_face(aligner.detector.detect(image), image.shape, aligner.policy)
    except FacegateError:
        return measure_covariates(image)
    crop = align_face(image, chosen.landmarks)
    return measure_covariates(image, box=chosen.box, landmarks=chosen.landmarks, crop=crop)


def covariate_table(
    pairset: PairSet,
    aligner: FaceAligner,
    *,
    keys: Sequence[str] | None = None,
    mode: AlignMode = "auto",
    limits: ImageLimits = DEFAULT_LIMITS,
    workers: int = 2,
) -> tuple[GroupTable, dict[str, Covariates]]:
    """Bin every image of a pair set; images that cannot be decoded are left unlabelled.

    Returns:
        ``(an image-keyed group table with columns illumination, face_size, pose, sharpness; raw measures by key)``.
    """
    keys = list(keys if keys is not None else pairset.image_keys())

    def one(key: str) -> tuple[str, Covariates | None]:
        try:
            return key, measure_image(pairset.source.load(key, limits), aligner, mode)
        except FacegateError:
            return key, None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        measured = {k: c for k, c in pool.map(one, keys) if c is not None}
    labels: dict[str, dict[str, str]] = {col: {} for col in BINS}
    for key, cov in measured.items():
        for col, label in bin_covariates(cov).items():
            labels[col][key] = label
    return GroupTable("image", list(BINS), labels, source="image covariates"), measured


def run_covariates(
    pairset: PairSet,
    result: Any,
    embedder: Any,
    aligner: FaceAligner,
    out_dir: str | Path,
    *,
    mode: AlignMode = "auto",
    limits: ImageLimits = DEFAULT_LIMITS,
    workers: int = 2,
) -> list[str]:
    """``facegate evaluate --covariates``: the per-bin report in ``out_dir/covariates/`` plus ``covariates.csv``.

    Returns:
        Summary lines for the terminal.
    """
    from facegate.evaluate.fairness_plots import report_evaluation, summary_lines
    from facegate.utils import atomic_write_text

    table, measured = covariate_table(pairset, aligner, mode=mode, limits=limits, workers=workers)
    out = Path(out_dir) / "covariates"
    report = report_evaluation(table, pairset, result, embedder, out)
    rows = ["image,illumination,face_size,pose,sharpness"]
    for key, c in measured.items():
        vals = (c.illumination, c.face_size, c.pose, c.sharpness)
        quoted = '"' + key.replace('"', '""') + '"' if any(ch in key for ch in ',"\n') else key
        rows.append(quoted + "," + ",".join("" if v is None else f"{v:.4g}" for v in vals))
    atomic_write_text(out / "covariates.csv", "\n".join(rows) + "\n")
    return [*summary_lines(report), f"covariate report: {out / 'groups.json'}"]
