"""Image-folder datasets (``root/<identity>/<image>``) and identity-disjoint splits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits, read_image
from facegate.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "Sample", "scan_image_folder", "split_identities"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"})


@dataclass(frozen=True)
class Sample:
    """One image of a folder dataset.

    Attributes:
        path: Path relative to the dataset root, with ``/`` separators.
        identity: The identity folder name.
        label: Integer class id (identities sorted by name).
    """

    path: str
    identity: str
    label: int


def scan_image_folder(root: str | Path) -> tuple[list[Sample], list[str]]:
    """List the images of a ``root/<identity>/<image>`` tree, sorted, hidden files ignored.

    Any file with an image extension counts, whatever its content: decoding problems are reported where the
    image is read, so a bad file is named rather than silently dropped.

    Returns:
        ``(samples, stray)``: samples sorted by path; ``stray`` lists image files not inside an identity folder.

    Raises:
        DataError: If ``root`` is not a directory.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: dataset directory not found")
    identities = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    labels = {name: i for i, name in enumerate(identities)}
    samples: list[Sample] = []
    for name in identities:
        for f in sorted((base / name).rglob("*")):
            rel = f.relative_to(base)
            if (
                f.is_file()
                and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in rel.parts)
            ):
                samples.append(Sample(rel.as_posix(), name, labels[name]))
    stray = sorted(p.name for p in base.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return samples, stray


class ImageFolder:
    """A dataset of face images laid out as ``root/<identity>/<image>``.

    Args:
        root: Dataset root.
        samples: Restrict to these samples (as produced by :func:`split_identities`); all images when omitted.
    """

    def __init__(self, root: str | Path, samples: list[Sample] | None = None) -> None:
        self.root = Path(root)
        if samples is None:
            samples, _ = scan_image_folder(self.root)
        self.samples = samples
        self.identities = sorted({s.identity for s in samples})

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        """Number of identities present."""
        return len(self.identities)

    def load(self, index: int, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, int]:
        """Decode one image; returns ``(rgb uint8, label)``."""
        s = self.samples[index]
        return read_image(self.root / s.path, limits=limits), s.label

    def relabel(self) -> ImageFolder:
        """A copy whose labels are dense ``0..num_classes-1`` over the identities present (for training splits)."""
        mapping = {name: i for i, name in enumerate(self.identities)}
        return ImageFolder(self.root, [Sample(s.path, s.identity, mapping[s.identity]) for s in self.samples])


def split_identities(dataset: ImageFolder, val_fraction: float = 0.1, seed: int = 0) -> tuple[ImageFolder, ImageFolder]:
    """Split by identity so no person appears on both sides.

    A face-recognition validation set must never contain a training identity.

    Args:
        dataset: The dataset.
        val_fraction: Fraction of identities for validation (at least one on each side).
        seed: Shuffle seed; the split is a pure function of identities and seed.

    Returns:
        ``(train, val)`` datasets, each relabelled densely.

    Raises:
        DataError: With fewer than two identities or a fraction outside (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    names = list(dataset.identities)
    if len(names) < 2:
        raise DataError("need at least two identities to split")
    random.Random(seed).shuffle(names)
    n_val = min(max(1, round(len(names) * val_fraction)), len(names) - 1)
    val_ids = set(names[:n_val])
    train = [s for s in dataset.samples if s.identity not in val_ids]
    val = [s for s in dataset.samples if s.identity in val_ids]
    return ImageFolder(dataset.root, train).relabel(), ImageFolder(dataset.root, val).relabel()
