"""Presentation-attack detection figures after ISO/IEC 30107-3: APCER per attack type, BPCER, ACER.

- **APCER** of an attack type (presentation attack instrument species): the share of its attack presentations
  classified as bona fide. The standard reports it per type, and the worst type (``apcer_max``) as the system's.
- **BPCER**: the share of bona fide presentations classified as attacks.
- **ACER**: ``(apcer_max + BPCER) / 2``, the average classification error rate (ISO/IEC 30107-3:2017; the 2023
  edition no longer defines it, but it is what most published work reports).

A presentation the detector finds no face in is a failure to acquire: it is counted separately, not as an error
of either kind, and the report lists it.

A labelled folder is ``ROOT/bona_fide/**`` and ``ROOT/attack/<type>/**`` (image files at any depth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facegate.data.folder import IMAGE_EXTENSIONS
from facegate.data.imageio import decode_image
from facegate.errors import FacegateError
from facegate.faces.liveness import LivenessChecker
from facegate.faces.pipeline import FaceAligner
from facegate.faces.quality import select_face

__all__ = ["evaluate_pad", "labelled_folder", "pad_metrics"]


def _rate(errors: int, total: int) -> float | None:
    return errors / total if total else None


def pad_metrics(bona_fide: Sequence[float], attacks: Mapping[str, Sequence[float]], threshold: float) -> dict[str, Any]:
    """ISO/IEC 30107-3 error rates from liveness scores (higher = more likely bona fide; bona fide if >= threshold).

    Args:
        bona_fide: Scores of bona fide presentations.
        attacks: Scores of attack presentations by attack type.
        threshold: The decision threshold.

    Returns:
        ``bpcer``, ``apcer`` (per type), ``apcer_max``, ``acer`` (``None`` where there are no presentations to
        measure it on) and the counts behind each.
    """
    bona = np.asarray(bona_fide, dtype=np.float64)
    bp_errors = int(np.sum(bona < threshold))
    apcer: dict[str, dict[str, Any]] = {}
    for kind, scores in sorted(attacks.items()):
        s = np.asarray(scores, dtype=np.float64)
        missed = int(np.sum(s >= threshold))
        apcer[kind] = {"apcer": _rate(missed, len(s)), "accepted": missed, "n": len(s)}
    measured = [v["apcer"] for v in apcer.values() if v["apcer"] is not None]
    apcer_max = max(measured) if measured else None
    bpcer = _rate(bp_errors, len(bona))
    return {
        "threshold": threshold,
        "bpcer": bpcer,
        "bpcer_errors": bp_errors,
        "n_bona_fide": len(bona),
        "apcer": apcer,
        "apcer_max": apcer_max,
        "acer": (apcer_max + bpcer) / 2 if apcer_max is not None and bpcer is not None else None,
        "n_attack": sum(v["n"] for v in apcer.values()),
    }


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def labelled_folder(root: str | Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """``(bona fide images, {attack type: images})`` of a folder laid out as ``bona_fide/`` and ``attack/<type>/``.

    Raises:
        FacegateError: ``bad_pad_folder`` when the folder has neither part.
    """
    base = Path(root)
    bona = _images(base / "bona_fide") if (base / "bona_fide").is_dir() else []
    attacks: dict[str, list[Path]] = {}
    if (base / "attack").is_dir():
        for sub in sorted(p for p in (base / "attack").iterdir() if p.is_dir()):
            attacks[sub.name] = _images(sub)
    if not bona and not any(attacks.values()):
        raise FacegateError(f"{base}: expected images under bona_fide/ and/or attack/<type>/", code="bad_pad_folder")
    return bona, attacks


def evaluate_pad(
    bona_fide: Sequence[Path],
    attacks: Mapping[str, Sequence[Path]],
    checker: LivenessChecker,
    aligner: FaceAligner | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Score every presentation with the checker and compute :func:`pad_metrics`.

    Each image goes through the same decode path and face selection as the verifier (largest, then most central
    face); the liveness score is of that face.

    Returns:
        The metrics, every score by file, and the failures to acquire (no face, undecodable) with their reasons.
    """
    aligner = aligner or FaceAligner()
    thr = checker.threshold if threshold is None else threshold
    failures: list[dict[str, str]] = []
    scores: dict[str, float] = {}

    def score_all(paths: Sequence[Path]) -> list[float]:
        out = []
        for path in paths:
            try:
                image = decode_image(path.read_bytes(), name=str(path))
                face = select_face(aligner.detector.detect(image), image.shape, aligner.policy)
            except FacegateError as exc:
                failures.append({"file": str(path), "reason": exc.code})
                continue
            s = checker.score(image, face.box)
            scores[str(path)] = round(s, 6)
            out.append(s)
        return out

    bona = score_all(bona_fide)
    attack_scores = {kind: score_all(paths) for kind, paths in attacks.items()}
    report = pad_metrics(bona, attack_scores, thr)
    report["failures_to_acquire"] = failures
    report["scores"] = scores
    report["standard"] = "ISO/IEC 30107-3 (APCER per attack type, BPCER, ACER)"
    return report


def run_pad(
    bundle: str | Path,
    root: str | Path | None = None,
    bona_fide_dirs: Sequence[str | Path] = (),
    threshold: float | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_pad` of a labelled folder and/or extra bona fide folders, with a liveness bundle.

    Raises:
        FacegateError: ``bad_pad_folder`` when there is nothing to evaluate.
    """
    bona: list[Path] = []
    attacks: dict[str, list[Path]] = {}
    if root is not None:
        bona, attacks = labelled_folder(root)
    for folder in bona_fide_dirs:
        bona += _images(Path(folder))
    if not bona and not any(attacks.values()):
        raise FacegateError("no images to evaluate", code="bad_pad_folder")
    report = evaluate_pad(bona, attacks, LivenessChecker(bundle), threshold=threshold)
    report["bundle"] = str(bundle)
    return report
