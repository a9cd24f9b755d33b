import pickle

import numpy as np
import pytest

from facegate.data.imageio import encode_jpeg
from facegate.data.pairs import load_bin, load_csv_pairs, load_lfw_pairs, load_pairs, save_bin
from facegate.data.synthetic import synthetic_identity
from facegate.errors import DataError

pytestmark = pytest.mark.unit


def _tree(root, names):
    for n, k in names:
        d = root / n
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{n}_{k:04d}.jpg").write_bytes(b"x")


def test_lfw_official_format_with_folds(tmp_path):
    lines = ["2\t2"]
    for fold in range(2):
        lines += [f"A\t1\t{2 + fold}", "B\t1\t2"]  # 2 same
        lines += ["A\t1\tB\t2", f"B 1 A {1 + fold}"]  # 2 different, space-separated too
    p = tmp_path / "pairs.txt"
    p.write_text("\n".join(lines) + "\n")
    _tree(tmp_path, [("A", 1), ("A", 2), ("A", 3), ("B", 1), ("B", 2)])
    ps = load_lfw_pairs(p, tmp_path)
    assert len(ps) == 8
    assert ps.same.tolist() == [True, True, False, False] * 2
    assert ps.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ps.left[0] == "A/A_0001.jpg" and ps.right[0] == "A/A_0002.jpg"
    assert ps.right[3] == "A/A_0001.jpg"


def test_lfw_single_count_header_gets_balanced_folds(tmp_path):
    lines = ["20"] + [f"P\t1\t{i + 2}" for i in range(20)] + [f"P\t1\tQ\t{i + 1}" for i in range(20)]
    p = tmp_path / "pairsDevTest.txt"
    p.write_text("\n".join(lines))
    ps = load_lfw_pairs(p, tmp_path)
    assert len(ps) == 40
    for f in range(10):
        assert ps.same[ps.folds == f].sum() == 2 and (~ps.same[ps.folds == f]).sum() == 2


def test_lfw_bad_header_and_line(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("10\t300\nA\t1\t2\n")
    with pytest.raises(DataError, match="header says"):
        load_lfw_pairs(p, tmp_path)
    p.write_text("A\t1\nA\t1\t2\n")
    with pytest.raises(DataError, match=r"pairs.txt:1: expected 3 or 4 fields"):
        load_lfw_pairs(p, tmp_path)


def test_csv_labels_and_errors(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("image_a,image_b,same\na.jpg,b.jpg,1\na.jpg,c.jpg,false\nb.jpg,c.jpg,YES\nc.jpg,d.jpg,no\n")
    ps = load_csv_pairs(p, tmp_path)
    assert ps.same.tolist() == [True, False, True, False]
    p.write_text("image_a,image_b,same\na.jpg,b.jpg,maybe\n")
    with pytest.raises(DataError, match=r"p.csv:2: 'same' must be"):
        load_csv_pairs(p, tmp_path)
    p.write_text("a,b,label\nx,y,1\n")
    with pytest.raises(DataError, match="missing column"):
        load_csv_pairs(p, tmp_path)


def test_bin_roundtrip_and_folds(tmp_path):
    imgs = [synthetic_identity(i, 0) for i in range(40)]
    blobs = [encode_jpeg(i) for i in imgs]
    issame = [i % 2 == 0 for i in range(20)]
    save_bin(tmp_path / "tiny.bin", blobs, issame)
    ps = load_pairs(tmp_path / "tiny.bin")
    assert ps.same.tolist() == issame
    assert ps.folds.tolist() == [i // 2 for i in range(20)]  # ten contiguous chunks, like insightface's KFold
    a = ps.source.load(ps.left[3])
    assert a.shape == (112, 112, 3)
    err = [np.abs(a.astype(int) - im.astype(int)).mean() for im in imgs]
    assert int(np.argmin(err)) == 6  # JPEG is lossy, but this is image 6
    assert err[6] < 8


def test_bin_refuses_code_execution(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.bin"
    p.write_bytes(pickle.dumps(([Evil()], [True])))
    with pytest.raises(DataError, match="not allowed"):
        load_bin(p)


def test_missing_pairs_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_pairs(tmp_path / "none.txt")


def test_folder_keys_cannot_escape_the_root(tmp_path):
    from facegate.data.pairs import FolderSource
    from facegate.errors import ImageError

    src = FolderSource(tmp_path / "images")
    for key in ("../secret.png", "/etc/passwd", "a/../../b.jpg"):
        with pytest.raises(ImageError, match="inside"):
            src.load(key)


def test_bin_with_non_bytes_entries_refused(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(pickle.dumps(([10**6, b"x"], [True])))
    with pytest.raises(DataError, match="encoded bytes"):
        load_bin(p)


def test_one_class_pairs_are_a_data_error(tmp_path):
    from typer.testing import CliRunner

    from facegate.cli import app
    from facegate.data.synthetic import write_synthetic_folder

    write_synthetic_folder(tmp_path, 2, 2)
    p = tmp_path / "p.csv"
    p.write_text("image_a,image_b,same\nid_0000/0000.jpg,id_0000/0001.jpg,1\nid_0001/0000.jpg,id_0001/0001.jpg,1\n")
    out = CliRunner().invoke(app, ["-q", "evaluate", "--pairs", str(p), "--out", str(tmp_path / "o")])
    assert out.exit_code == 2
    assert "both genuine" in out.stderr
