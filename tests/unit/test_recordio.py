import multiprocessing as mp
import pickle
import struct

import numpy as np
import pytest

from facegate.data.imageio import encode_jpeg
from facegate.data.recordio import MAGIC, IRHeader, RecordIODataset, pack_record, unpack_record, write_recordio
from facegate.errors import DataError

pytestmark = pytest.mark.unit


def _items(n=12, classes=4):
    rng = np.random.default_rng(3)
    return [(encode_jpeg(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)), i % classes) for i in range(n)]


def test_write_read_roundtrip_bytes_and_labels(tmp_path):
    items = _items()
    assert write_recordio(tmp_path, items) == len(items)
    ds = RecordIODataset(tmp_path)
    assert len(ds) == len(items)
    assert ds.num_classes == 4
    got = sorted((ds.record(i) for i in range(len(ds))), key=lambda t: (t[1], t[0]))
    want = sorted(((img, lab) for img, lab in items), key=lambda t: (t[1], t[0]))
    assert got == want
    # Identity-grouped layout, as insightface writes it.
    assert [ds.label(i) for i in range(len(ds))] == sorted(lab for _, lab in items)
    img, lab = ds.load(0)
    assert img.shape == (112, 112, 3) and lab == 0


def test_insightface_header_and_identity_records(tmp_path):
    write_recordio(tmp_path, _items(12, 3))
    ds = RecordIODataset(tmp_path)
    head, _ = unpack_record(ds.read_raw(0))
    assert head.flag == 2 and list(head.label) == [13.0, 16.0]
    ident, _ = unpack_record(ds.read_raw(14))  # second identity: images 5..8
    assert list(ident.label) == [5.0, 9.0]


def test_payload_containing_the_magic_number_survives(tmp_path):
    magic = struct.pack("<I", MAGIC)
    # Header is 24 bytes (aligned), so the payload's magic sits on 4-byte boundaries: MXNet splits the record there.
    tricky = magic + b"abcd" + magic + magic + b"xyz"
    write_recordio(tmp_path, [(tricky, 0), (b"plain", 1)])
    ds = RecordIODataset(tmp_path)
    assert ds.record(0) == (tricky, 0)
    assert ds.record(1) == (b"plain", 1)
    raw = (tmp_path / "train.rec").read_bytes()
    flags = {
        struct.unpack_from("<I", raw, i + 4)[0] >> 29
        for i in range(0, len(raw) - 8, 4)
        if struct.unpack_from("<I", raw, i)[0] == MAGIC
    }
    assert {1, 3} <= flags  # it really was written as continuation parts


def test_label_array_header_roundtrip():
    rec = pack_record(IRHeader(0, np.array([7.0, 1.0], np.float32), 5, 0), b"img")
    head, body = unpack_record(rec)
    assert head.flag == 2 and list(head.label) == [7.0, 1.0] and body == b"img"


def _read_in_child(ds):
    return ds.record(1)


def test_pickles_into_worker_processes(tmp_path):
    items = _items(6, 2)
    write_recordio(tmp_path, items)
    ds = RecordIODataset(tmp_path)
    ds.record(0)  # open a descriptor in the parent first
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.record(1) == ds.record(1)
    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_read_in_child, (ds,)) == ds.record(1)


def test_errors(tmp_path):
    with pytest.raises(DataError, match=r"train.rec: not found"):
        RecordIODataset(tmp_path)
    write_recordio(tmp_path, _items(4, 2))
    (tmp_path / "train.idx").write_text("0\t0\n1\t7\n")
    ds = RecordIODataset(tmp_path)
    with pytest.raises(DataError, match="bad RecordIO magic"):
        ds.record(0)
