"""Training data: sources (synthetic, image folder, RecordIO), the deterministic epoch plan, and validation sets.

Exact resume and DDP equivalence both rest on one rule: *which* image lands in *which* micro-batch, and whether it
is flipped, is a pure function of ``(seed, epoch, step)``, never of loader workers or process count. Each epoch has
a seeded permutation and flip bits; a step consumes one global block of ``batch_size * world_size * grad_accum``
images, cut into ``grad_accum`` micro-blocks and each micro-block into one slice per rank. So 2 DDP processes with
batch B see exactly the images that 1 process with batch B and ``grad_accum=2`` sees, and a run resumed at step k
sees exactly what the uninterrupted run saw from step k on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facegate.data.folder import ImageFolder, scan_image_folder
from facegate.data.pairs import ArraySource, PairSet, balanced_folds, load_pairs
from facegate.data.recordio import RecordIODataset
from facegate.data.synthetic import synthetic_faces
from facegate.errors import DataError
from facegate.train.config import TrainConfig

__all__ = ["EpochPlan", "FaceSource", "build_source", "build_val_pairs", "micro_batches"]

# Validation identities come from a different seed stream than training ones, so they never coincide.
_VAL_SEED_OFFSET = 1_000_003


class FaceSource(Protocol):
    """Random access to aligned training faces."""

    num_classes: int

    def __len__(self) -> int: ...

    def image(self, index: int) -> np.ndarray:
        """``(112, 112, 3)`` uint8 RGB."""
        ...

    def label(self, index: int) -> int:
        """Integer identity."""
        ...


class ArrayFaces:
    """Faces held in memory (synthetic data)."""

    def __init__(self, faces: np.ndarray, labels: np.ndarray) -> None:
        self.faces, self.labels = faces, labels
        self.num_classes = int(labels.max()) + 1 if labels.size else 0

    def __len__(self) -> int:
        return int(self.labels.size)

    def image(self, index: int) -> np.ndarray:
        """The face at ``index``."""
        return self.faces[index]

    def label(self, index: int) -> int:
        """Its identity."""
        return int(self.labels[index])


class FolderFaces:
    """An aligned image folder (``facegate ingest`` output)."""

    def __init__(self, root: str | Path, exclude: list[str]) -> None:
        samples, _ = scan_image_folder(root)
        drop = set(exclude)
        folder = ImageFolder(root, [s for s in samples if s.identity not in drop]).relabel()
        if len(folder) == 0:
            raise DataError(f"{root}: no training images left")
        self.folder = folder
        self.num_classes = folder.num_classes

    def __len__(self) -> int:
        return len(self.folder)

    def image(self, index: int) -> np.ndarray:
        """Decoded face at ``index`` (must already be 112x112)."""
        img, _ = self.folder.load(index)
        if img.shape[:2] != (112, 112):
            raise DataError(f"{self.folder.samples[index].path}: {img.shape[1]}x{img.shape[0]}, not aligned 112x112")
        return img

    def label(self, index: int) -> int:
        """Its identity."""
        return self.folder.samples[index].label


class RecordFaces:
    """An insightface RecordIO dataset."""

    def __init__(self, root: str | Path) -> None:
        self.ds = RecordIODataset(root)
        self.num_classes = self.ds.num_classes

    def __len__(self) -> int:
        return len(self.ds)

    def image(self, index: int) -> np.ndarray:
        """Decoded face at ``index``."""
        return self.ds.load(index)[0]

    def label(self, index: int) -> int:
        """Its identity."""
        return self.ds.label(index)


def build_source(cfg: TrainConfig) -> FaceSource:
    """The training source a config names."""
    d = cfg.data
    if d.kind == "synthetic":
        faces, labels = synthetic_faces(d.synthetic_identities, d.synthetic_per_identity, seed=cfg.seed)
        return ArrayFaces(faces, labels)
    if d.kind == "folder":
        return FolderFaces(str(d.path), d.exclude_identities)
    return RecordFaces(str(d.path))


def build_val_pairs(cfg: TrainConfig) -> PairSet | None:
    """The validation pair set a config names (``None`` for ``val.kind: none``)."""
    v = cfg.val
    if v.kind == "none":
        return None
    if v.kind == "pairs":
        if not v.pairs:
            raise DataError("val.pairs is required for val.kind=pairs")
        return load_pairs(v.pairs, v.images)
    faces, labels = synthetic_faces(v.synthetic_identities, v.synthetic_per_identity, seed=cfg.seed + _VAL_SEED_OFFSET)
    rng = np.random.default_rng([cfg.seed, 42])
    by_id = [np.nonzero(labels == i)[0] for i in range(v.synthetic_identities)]
    left: list[str] = []
    right: list[str] = []
    same: list[bool] = []
    for k in range(v.synthetic_pairs):
        if k % 2 == 0:
            a, b = rng.choice(by_id[int(rng.integers(len(by_id)))], size=2, replace=False)
        else:
            i, j = rng.choice(len(by_id), size=2, replace=False)
            a, b = rng.choice(by_id[i]), rng.choice(by_id[j])
        left.append(str(a))
        right.append(str(b))
        same.append(k % 2 == 0)
    labels_arr = np.array(same)
    return PairSet("synthetic-val", left, right, labels_arr, balanced_folds(labels_arr), ArraySource(faces, "val"))


@dataclass(frozen=True)
class EpochPlan:
    """Deterministic order and flips of one epoch."""

    order: np.ndarray
    flips: np.ndarray

    @classmethod
    def make(cls, n: int, seed: int, epoch: int, flip: bool) -> EpochPlan:
        """Plan epoch ``epoch`` of ``n`` images."""
        rng = np.random.default_rng([seed, epoch, 99991])
        order = rng.permutation(n)
        flips = rng.integers(0, 2, n).astype(bool) if flip else np.zeros(n, dtype=bool)
        return cls(order=order, flips=flips)


def micro_batches(
    plan: EpochPlan, step: int, batch: int, world: int, rank: int, accum: int
) -> list[list[tuple[int, bool]]]:
    """The ``accum`` micro-batches of ``(index, flip)`` that ``rank`` processes at ``step`` of an epoch."""
    block = batch * world * accum
    start = step * block
    out: list[list[tuple[int, bool]]] = []
    for m in range(accum):
        lo = start + m * batch * world + rank * batch
        idx = plan.order[lo : lo + batch]
        out.append([(int(i), bool(plan.flips[i])) for i in idx])
    return out


class _Batches(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Each item is a whole micro-batch, so loader workers decode in parallel but never reorder."""

    def __init__(self, source: FaceSource, batches: list[list[tuple[int, bool]]]) -> None:
        self.source = source
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(uint8 NCHW images, labels, keys)``; a key is ``2 * index + flip`` (teacher caches use it)."""
        imgs = []
        labels = []
        for idx, flip in self.batches[k]:
            img = self.source.image(idx)
            imgs.append(img[:, ::-1] if flip else img)
            labels.append(self.source.label(idx))
        # NCHW-contiguous: a permuted NHWC tensor would silently run the convolutions channels_last.
        x = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).permute(0, 3, 1, 2).contiguous()
        keys = torch.tensor([2 * idx + int(flip) for idx, flip in self.batches[k]], dtype=torch.long)
        return x, torch.tensor(labels, dtype=torch.long), keys


def epoch_loader(
    source: FaceSource, plan: EpochPlan, steps: range, cfg: TrainConfig, world: int, rank: int
) -> DataLoader[Any]:
    """Micro-batches of the given steps, in order (uint8 NCHW tensors and labels)."""
    batches = [mb for s in steps for mb in micro_batches(plan, s, cfg.batch_size, world, rank, cfg.grad_accum)]
    workers = cfg.data.num_workers
    return DataLoader(
        _Batches(source, batches),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the global torch RNG, so a
        # resumed run (one more iterator) would see different dropout masks than the uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
