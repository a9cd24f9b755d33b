"""Verification pair sets: insightface ``.bin``, LFW ``pairs.txt`` (both line formats) and CSV.

A :class:`PairSet` holds pairs of image keys, the same/different label and a fold id per pair, plus an
:class:`ImageSource` that turns a key into RGB pixels (files under a root, or JPEG bytes held in memory for
``.bin``). Folds follow each format's protocol: LFW's ten 600-pair blocks, insightface's ten contiguous chunks.
"""

from __future__ import annotations

import csv
import io
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits, decode_image, read_image
from facegate.errors import DataError, ImageError

__all__ = [
    "ArraySource",
    "BytesSource",
    "FolderSource",
    "ImageSource",
    "PairSet",
    "balanced_folds",
    "load_bin",
    "load_csv_pairs",
    "load_lfw_pairs",
    "load_pairs",
    "save_bin",
]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class ImageSource(ABC):
    """Turns an image key into RGB uint8 pixels."""

    @abstractmethod
    def load(self, key: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        """Decode the image for ``key``; raises :class:`~facegate.errors.ImageError` when it cannot."""

    def describe(self, key: str) -> str:
        """How to name the image in reports."""
        return key


class FolderSource(ImageSource):
    """Images as files under a root directory; keys are paths relative to it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file behind a key; keys that would leave the root (absolute, ``..``) are refused."""
        rel = Path(key)
        if rel.is_absolute() or ".." in rel.parts:
            raise ImageError(f"{key}: image path must stay inside {self.root}", code="bad_path")
        return self.root / rel

    def load(self, key: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        """Decode the file for ``key``."""
        return read_image(self.path(key), limits=limits)

    def describe(self, key: str) -> str:
        """The file path."""
        return str(self.root / key)


class BytesSource(ImageSource):
    """Encoded images held in memory (the JPEGs inside an insightface ``.bin``)."""

    def __init__(self, blobs: Sequence[bytes], name: str = "bin") -> None:
        self.blobs = blobs
        self.name = name

    def load(self, key: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        """Decode the blob whose index is ``key``."""
        return decode_image(self.blobs[int(key)], limits=limits, name=self.describe(key))

    def describe(self, key: str) -> str:
        """``name[index]``."""
        return f"{self.name}[{key}]"


class ArraySource(ImageSource):
    """Decoded faces held in memory (validation sets built in a training run); keys are row indices."""

    def __init__(self, images: np.ndarray, name: str = "array") -> None:
        self.images = images
        self.name = name

    def load(self, key: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        """The image at row ``key``."""
        return np.asarray(self.images[int(key)])

    def describe(self, key: str) -> str:
        """``name[index]``."""
        return f"{self.name}[{key}]"


@dataclass
class PairSet:
    """Verification pairs.

    Attributes:
        name: Set name (file stem), used in reports.
        left: Key of the first image of each pair.
        right: Key of the second image of each pair.
        same: Boolean label per pair.
        folds: Fold id per pair (0..K-1).
        source: Where keys are read from.
    """

    name: str
    left: list[str]
    right: list[str]
    same: np.ndarray
    folds: np.ndarray
    source: ImageSource

    def __post_init__(self) -> None:
        n = len(self.left)
        if not (len(self.right) == n == self.same.shape[0] == self.folds.shape[0]):
            raise DataError(f"{self.name}: pair arrays differ in length")
        if n == 0:
            raise DataError(f"{self.name}: no pairs")

    def __len__(self) -> int:
        return len(self.left)

    def image_keys(self) -> list[str]:
        """Distinct image keys in first-use order."""
        return list(dict.fromkeys(k for pair in zip(self.left, self.right, strict=True) for k in pair))


def balanced_folds(same: np.ndarray, n_folds: int = 10) -> np.ndarray:
    """Fold ids for pairs with no fold structure of their own: each class dealt round-robin, in file order."""
    folds = np.empty(same.shape[0], dtype=np.int64)
    for cls in (True, False):
        idx = np.nonzero(same == cls)[0]
        folds[idx] = np.arange(idx.size) % n_folds
    return folds


def _lfw_key(images: Path, name: str, num: str, lineno: int, seen: dict[str, str]) -> str:
    try:
        n = int(num)
    except ValueError:
        raise DataError(f"pairs.txt line {lineno}: image number {num!r} is not an integer") from None
    stem = f"{name}/{name}_{n:04d}"
    if stem not in seen:  # LFW names most images in several pairs: look for each file once
        seen[stem] = _lfw_file(images, stem)
    return seen[stem]


def _lfw_file(images: Path, stem: str) -> str:
    for ext in _IMAGE_EXTS:
        if (images / (stem + ext)).exists():
            return stem + ext
    # Missing files keep a key so evaluation reports them by name rather than dropping the pair silently.
    return stem + ".jpg"


def load_lfw_pairs(pairs_file: str | Path, images: str | Path) -> PairSet:
    """Read LFW's ``pairs.txt``.

    Lines are ``name n1 n2`` (same person) or ``name1 n1 name2 n2`` (different people), tab- or space-separated.
    A header ``F N`` (F folds of N same + N different pairs, as in the official ``pairs.txt``) gives the folds; a
    header with one count (``pairsDevTrain.txt`` style) or none gets balanced folds.

    Raises:
        DataError: On a malformed line or header, with its line number.
    """
    path = Path(pairs_file)
    root = Path(images)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read pairs file ({exc})") from None
    left: list[str] = []
    right: list[str] = []
    same: list[bool] = []
    header: list[int] | None = None
    seen: dict[str, str] = {}
    for lineno, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields:
            continue
        if header is None and not left and all(f.isdigit() for f in fields) and len(fields) <= 2:
            header = [int(f) for f in fields]
            continue
        if len(fields) == 3:
            left.append(_lfw_key(root, fields[0], fields[1], lineno, seen))
            right.append(_lfw_key(root, fields[0], fields[2], lineno, seen))
            same.append(True)
        elif len(fields) == 4:
            left.append(_lfw_key(root, fields[0], fields[1], lineno, seen))
            right.append(_lfw_key(root, fields[2], fields[3], lineno, seen))
            same.append(False)
        else:
            raise DataError(f"{path}:{lineno}: expected 3 or 4 fields, got {len(fields)}")
    labels = np.array(same, dtype=bool)
    if header is not None and len(header) == 2:
        n_folds, per_class = header
        if n_folds * per_class * 2 != labels.size:
            raise DataError(f"{path}: header says {n_folds}x{per_class}x2 pairs, file has {labels.size}")
        folds = np.arange(labels.size) // (2 * per_class)
    else:
        folds = balanced_folds(labels)
    return PairSet(path.stem, left, right, labels, folds, FolderSource(root))


def _parse_bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DataError(f"{where}: 'same' must be 1/0, true/false or yes/no, got {value!r}")


def load_csv_pairs(csv_file: str | Path, images: str | Path) -> PairSet:
    """Read a CSV with header ``image_a,image_b,same`` (paths relative to ``images``).

    Raises:
        DataError: On a missing column, an empty path or an unparsable label, with its line number.
    """
    path = Path(csv_file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip() for c in (reader.fieldnames or [])}
    missing = {"image_a", "image_b", "same"} - cols
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}; header must be image_a,image_b,same")
    left: list[str] = []
    right: list[str] = []
    same: list[bool] = []
    for lineno, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row["image_a"] or not row["image_b"]:
            raise DataError(f"{path}:{lineno}: empty image path")
        left.append(row["image_a"])
        right.append(row["image_b"])
        same.append(_parse_bool(row["same"], f"{path}:{lineno}"))
    labels = np.array(same, dtype=bool)
    return PairSet(path.stem, left, right, labels, balanced_folds(labels), FolderSource(images))


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for ``.bin`` files that builds only plain data (no arbitrary callables)."""

    _ALLOWED = frozenset(
        {
            ("builtins", "list"),
            ("builtins", "tuple"),
            ("builtins", "bytes"),
            ("builtins", "bytearray"),
            ("builtins", "bool"),
            ("builtins", "int"),
            ("_codecs", "encode"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "bool_"),
            # Protocol 5 pickles arrays through _frombuffer (insightface's current packing script); numpy 1.x and
            # 2.x spell its module differently.
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a verification .bin")


def load_bin(bin_file: str | Path) -> PairSet:
    """Read an insightface verification ``.bin`` (a pickled ``(bins, issame_list)``).

    Unpickling is restricted to plain data types, so a crafted file cannot run code. Folds are ten contiguous
    chunks, as insightface's ``verification.py`` (``KFold(10, shuffle=False)``) makes them.

    Raises:
        DataError: If the file is not such a pickle or its lengths disagree.
    """
    path = Path(bin_file)
    try:
        with path.open("rb") as fh:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable verification .bin ({exc})") from None
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        raise DataError(f"{path}: expected a (bins, issame_list) pair")
    bins, issame = obj
    if not all(isinstance(b, bytes | bytearray | np.ndarray) for b in bins):
        raise DataError(f"{path}: image entries must be encoded bytes")
    blobs = [bytes(b) for b in bins]
    labels = np.asarray(list(issame), dtype=bool)
    if len(blobs) != 2 * labels.size:
        raise DataError(f"{path}: {len(blobs)} images for {labels.size} pairs (expected {2 * labels.size})")
    n = labels.size
    if n < 2:
        raise DataError(f"{path}: need at least 2 pairs")
    # sklearn KFold(min(10, n), shuffle=False): the first n % k folds hold one extra pair.
    k = min(10, n)
    folds = np.concatenate([np.full(len(c), i) for i, c in enumerate(np.array_split(np.arange(n), k))])
    left = [str(2 * i) for i in range(n)]
    right = [str(2 * i + 1) for i in range(n)]
    return PairSet(path.stem, left, right, labels, folds, BytesSource(blobs, name=path.name))


def save_bin(bin_file: str | Path, blobs: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write an insightface-style ``.bin``: encoded images ``[a0, b0, a1, b1, ...]`` and one label per pair."""
    if len(blobs) != 2 * len(issame):
        raise ValueError("need two images per pair")
    with Path(bin_file).open("wb") as fh:
        pickle.dump(([bytes(b) for b in blobs], [bool(x) for x in issame]), fh, protocol=4)


def load_pairs(pairs: str | Path, images: str | Path | None = None) -> PairSet:
    """Load any supported pair format, chosen by extension (``.bin``, ``.csv``, otherwise LFW ``pairs.txt``).

    Args:
        pairs: The pairs file.
        images: Image root for ``pairs.txt`` and CSV (defaults to the pairs file's directory).

    Raises:
        DataError: If the file is missing or malformed.
    """
    path = Path(pairs)
    if not path.is_file():
        raise DataError(f"{path}: pairs file not found")
    root = Path(images) if images is not None else path.parent
    suffix = path.suffix.lower()
    if suffix == ".bin":
        return load_bin(path)
    if not root.is_dir():
        raise DataError(f"{root}: image directory not found")
    if suffix == ".csv":
        return load_csv_pairs(path, root)
    return load_lfw_pairs(path, root)
