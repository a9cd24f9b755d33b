"""`facegate ingest` on real photos plus bad input: parallel, reported, resumable."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from facegate.cli import app
from facegate.config import Settings
from facegate.data.imageio import read_image
from facegate.data.storage import check_manifest
from facegate.faces.ingest import JOURNAL_NAME, ingest

pytestmark = pytest.mark.integration


@pytest.fixture
def raw(photos, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(photos / "train", root)
    bad = root / "bad"
    bad.mkdir()
    data = (photos / "train" / "obama" / "obama.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image at all")
    from tests.unit.test_imageio import huge_png

    (bad / "huge.png").write_bytes(huge_png(20000, 20000))
    return root


def test_ingest_reports_bad_files_and_resumes(raw, tmp_path):
    dst = tmp_path / "aligned"
    rep = ingest(raw, dst, Settings(), workers=2, progress=False)
    assert rep.total == 13
    assert rep.aligned == 9
    assert rep.failed == 4
    codes = {f["src"]: f["code"] for f in rep.failures}
    assert codes["bad/empty.jpg"] == "empty"
    assert codes["bad/text.jpg"] == "not_an_image"
    assert codes["bad/huge.png"] == "too_many_pixels"
    assert codes["bad/truncated.jpg"] in {"bad_image", "no_face"}  # Pillow may decode the top third of a JPEG
    report = json.loads((dst / "ingest_report.json").read_text())
    assert report["failure_reasons"] == rep.reasons
    assert (dst / "config.yaml").is_file()
    assert check_manifest(dst).ok
    face = read_image(dst / "obama" / "obama.jpg")
    assert face.shape == (112, 112, 3)

    # Rerun: nothing is redone.
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.jpg")}
    again = ingest(raw, dst, Settings(), workers=2, progress=False)
    assert again.processed == 0
    assert again.resumed == 13
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.jpg")} == mtimes

    # Simulate a crash after 5 images: keep 5 journal lines (the last one cut in half), remove an output whose
    # line is gone. Only the unfinished images are redone.
    journal = dst / JOURNAL_NAME
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
    redo = ingest(raw, dst, Settings(), workers=0, progress=False)
    assert redo.resumed == 5
    assert redo.processed == 8
    assert redo.aligned == 9
    assert redo.failed == 4
    kept = [dst / json.loads(line)["src"] for line in lines[:5]]
    kept = [p.with_suffix(".jpg") for p in kept if p.with_suffix(".jpg") in mtimes]
    assert kept
    for p in kept:
        assert p.stat().st_mtime_ns == mtimes[p]  # finished before the crash: untouched


def test_ingest_cli(raw, tmp_path):
    dst = tmp_path / "out"
    out = CliRunner().invoke(app, ["-q", "ingest", str(raw), str(dst), "--workers", "0"])
    assert out.exit_code == 0, out.output
    assert "aligned 9/13" in out.stdout
    assert "too_many_pixels" in out.stdout
    out = CliRunner().invoke(app, ["ingest", str(raw), str(raw / "inside")])
    assert out.exit_code == 2
    assert "must not be inside" in out.stderr


def test_ingest_follows_changes_to_the_source(photos, tmp_path):
    raw = tmp_path / "raw"
    (raw / "obama").mkdir(parents=True)
    shutil.copy(photos / "train" / "obama" / "obama.jpg", raw / "obama" / "a.jpg")
    shutil.copy(photos / "train" / "obama" / "obama2.jpg", raw / "obama" / "a.JPG")  # same stem, other case
    shutil.copy(photos / "train" / "biden" / "biden.jpg", raw / "obama" / "b.jpg")
    dst = tmp_path / "out"
    first = ingest(raw, dst, Settings(), workers=0, progress=False)
    assert first.aligned == 3
    assert sorted(p.name for p in (dst / "obama").glob("*.jpg")) == ["a_JPG.jpg", "a_jpg.jpg", "b.jpg"]
    # Replace one photo and delete another: the replaced one is redone, the deleted one's face leaves the dataset.
    shutil.copy(photos / "train" / "biden" / "biden2.jpg", raw / "obama" / "a.jpg")
    (raw / "obama" / "b.jpg").unlink()
    again = ingest(raw, dst, Settings(), workers=0, progress=False)
    assert again.processed == 1
    assert again.resumed == 1
    assert not (dst / "obama" / "b.jpg").exists()
    assert check_manifest(dst).ok
    assert json.loads((dst / "manifest.json").read_text())["n_files"] == 2
