"""insightface RecordIO datasets (``train.rec`` + ``train.idx`` + ``property``), read and written without mxnet.

MS1MV2, MS1MV3 and Glint360K ship in MXNet's RecordIO format. A record is ``uint32 magic 0xced7230a``,
``uint32 (cflag << 29 | length)``, the payload and zero padding to 4 bytes; a payload holding the magic number at a
4-byte-aligned offset is split into continuation parts (cflag 1 = first, 2 = middle, 3 = last) with the magic
dropped, exactly as MXNet's ``RecordIOWriter`` does. Each payload starts with an ``IRHeader`` (``struct 'IfQQ'``:
flag, label, id, id2); with ``flag > 0`` the label is an array of ``flag`` float32 values following the header.

insightface puts a header record at index 0 whose label is ``[first_identity_record, end]``: images are records
``1 .. first_identity_record - 1``, and records after that describe identities (label ``[first_image, end_image)``).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits, decode_image
from facegate.errors import DataError
from facegate.utils import atomic_write_text

__all__ = ["IRHeader", "RecordIODataset", "pack_record", "read_record_at", "unpack_record", "write_recordio"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24: MXNet's native 'IfQQ' has no padding on x86-64 either
_LEN_MASK = (1 << 29) - 1


@dataclass(frozen=True)
class IRHeader:
    """MXNet's image-record header; ``label`` is a float or, when ``flag > 0``, an array of ``flag`` floats."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """Payload of one record: the packed header (with a label array if any) followed by the image bytes."""
    if isinstance(header.label, np.ndarray | list | tuple):
        label = np.asarray(header.label, dtype=np.float32).ravel()
        head = struct.pack(_IR_FORMAT, label.size, 0.0, header.id, header.id2) + label.tobytes()
    else:
        head = struct.pack(_IR_FORMAT, 0, float(header.label), header.id, header.id2)
    return head + payload


def unpack_record(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its header and the remaining bytes."""
    if len(record) < _IR_SIZE:
        raise DataError(f"record of {len(record)} bytes is shorter than its {_IR_SIZE}-byte header")
    flag, label, id1, id2 = struct.unpack_from(_IR_FORMAT, record)
    body = record[_IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise DataError("record label array runs past the record")
        arr = np.frombuffer(body[: 4 * flag], dtype=np.float32).copy()
        return IRHeader(flag, arr, id1, id2), body[4 * flag :]
    return IRHeader(flag, float(label), id1, id2), body


def _frame(cflag: int, data: bytes) -> bytes:
    pad = (-len(data)) % 4
    return _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(data)) + data + b"\0" * pad


def _encode(payload: bytes) -> bytes:
    """Frame a payload, splitting it at 4-byte-aligned occurrences of the magic number."""
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == _MAGIC_BYTES]
    if not cuts:
        return _frame(0, payload)
    parts: list[bytes] = []
    start = 0
    for i in cuts:
        parts.append(payload[start:i])
        start = i + 4
    parts.append(payload[start:])
    flags = [1] + [2] * (len(parts) - 2) + [3]
    return b"".join(_frame(f, p) for f, p in zip(flags, parts, strict=True))


def read_record_at(fd: int, offset: int) -> bytes:
    """Read the (possibly multi-part) record starting at ``offset`` of an open ``.rec`` file descriptor.

    Uses ``os.pread`` so one descriptor can serve many threads or forked loader workers.
    """
    chunks: list[bytes] = []
    pos = offset
    while True:
        head = os.pread(fd, 8, pos)
        if len(head) < 8:
            raise DataError(f"truncated record header at offset {pos}")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DataError(f"bad RecordIO magic at offset {pos}: the .idx does not match the .rec")
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        data = os.pread(fd, length, pos + 8)
        if len(data) < length:
            raise DataError(f"truncated record at offset {pos}")
        chunks.append(data)
        pos += 8 + length + ((-length) % 4)
        if cflag in (0, 3):
            break
        if cflag not in (1, 2):
            raise DataError(f"bad continuation flag {cflag} at offset {pos}")
    return _MAGIC_BYTES.join(chunks)


def write_recordio(
    root: str | Path,
    items: Iterable[tuple[bytes, int]],
    *,
    num_classes: int | None = None,
    image_size: tuple[int, int] = (112, 112),
    prefix: str = "train",
) -> int:
    """Write an insightface-style RecordIO dataset.

    Args:
        root: Output directory (gets ``<prefix>.rec``, ``<prefix>.idx`` and ``property``).
        items: ``(encoded image bytes, label)`` in any order; identities are grouped by label in the output.
        num_classes: Written to ``property``; defaults to ``max(label) + 1``.
        image_size: ``(height, width)`` for ``property``.
        prefix: File stem.

    Returns:
        The number of image records written.
    """
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(((int(label), bytes(img)) for img, label in items), key=lambda t: t[0])
    if not ordered:
        raise DataError("no images to write")
    labels = sorted({lab for lab, _ in ordered})
    n_images = len(ordered)
    first_id_record = n_images + 1
    end = first_id_record + len(labels)
    rec_path, idx_path = out / f"{prefix}.rec", out / f"{prefix}.idx"
    index_lines: list[str] = []
    with rec_path.open("wb") as rec:

        def put(idx: int, payload: bytes) -> None:
            index_lines.append(f"{idx}\t{rec.tell()}")
            rec.write(_encode(payload))

        put(0, pack_record(IRHeader(2, np.array([first_id_record, end], np.float32), 0, 0), b""))
        starts: dict[int, int] = {}
        for i, (lab, img) in enumerate(ordered, start=1):
            starts.setdefault(lab, i)
            put(i, pack_record(IRHeader(0, float(lab), i, 0), img))
        for j, lab in enumerate(labels):
            stop = starts[labels[j + 1]] if j + 1 < len(labels) else n_images + 1
            put(first_id_record + j, pack_record(IRHeader(2, np.array([starts[lab], stop], np.float32), 0, 0), b""))
    atomic_write_text(idx_path, "\n".join(index_lines) + "\n")
    classes = num_classes if num_classes is not None else max(labels) + 1
    atomic_write_text(out / "property", f"{classes},{image_size[0]},{image_size[1]}\n")
    return n_images


class RecordIODataset:
    """Random access to an insightface RecordIO dataset.

    Args:
        root: Directory with ``<prefix>.rec``, ``<prefix>.idx`` and optionally ``property``.
        prefix: File stem.

    Raises:
        DataError: If files are missing or the index is malformed.
    """

    def __init__(self, root: str | Path, prefix: str = "train") -> None:
        self.root = Path(root)
        rec_path, idx_path = self.root / f"{prefix}.rec", self.root / f"{prefix}.idx"
        for p in (rec_path, idx_path):
            if not p.is_file():
                raise DataError(f"{p}: not found (a RecordIO dataset needs {prefix}.rec and {prefix}.idx)")
        self.offsets: dict[int, int] = {}
        for lineno, line in enumerate(idx_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                key, off = line.split()
                self.offsets[int(key)] = int(off)
            except ValueError:
                raise DataError(f"{idx_path}:{lineno}: expected 'index<TAB>offset'") from None
        self.rec_path = rec_path
        self._fd: int | None = None
        self._pid = -1
        header, _ = unpack_record(self.read_raw(0)) if 0 in self.offsets else (IRHeader(0, 0.0, 0, 0), b"")
        if header.flag > 0 and isinstance(header.label, np.ndarray):
            first_id = int(header.label[0])
            self.image_keys: Sequence[int] = range(1, first_id)
        else:
            self.image_keys = sorted(self.offsets)
        self.num_classes = self._read_num_classes()

    def _read_num_classes(self) -> int:
        prop = self.root / "property"
        if prop.is_file():
            try:
                return int(prop.read_text().split(",")[0])
            except ValueError:
                raise DataError(f"{prop}: expected 'num_classes,height,width'") from None
        return int(max(self.label(i) for i in range(len(self)))) + 1 if len(self) else 0

    def _descriptor(self) -> int:
        # Reopen after fork: a descriptor shared with the parent works with pread, but a fresh one per process
        # keeps worker shutdown independent.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.rec_path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def read_raw(self, key: int) -> bytes:
        """The payload of record ``key`` (header included)."""
        try:
            offset = self.offsets[key]
        except KeyError:
            raise DataError(f"record {key} is not in the index") from None
        return read_record_at(self._descriptor(), offset)

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_fd"], state["_pid"] = None, -1
        return state

    def record(self, index: int) -> tuple[bytes, int]:
        """Encoded image bytes and integer label of image ``index`` (0-based)."""
        header, img = unpack_record(self.read_raw(self.image_keys[index]))
        label = header.label[0] if isinstance(header.label, np.ndarray) else header.label
        return img, int(label)

    def label(self, index: int) -> int:
        """Label of image ``index``."""
        return self.record(index)[1]

    def load(self, index: int, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, int]:
        """Decoded RGB image and label of image ``index``."""
        img, label = self.record(index)
        return decode_image(img, limits=limits, name=f"{self.rec_path.name}[{index}]"), label

    def close(self) -> None:
        """Close the file descriptor."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down os already
            self.close()
