"""Detection, alignment and verification on real photos from ../shared/data/photos."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from facegate.cli import app
from facegate.data.imageio import read_image
from facegate.errors import FaceError
from facegate.faces.align import ARCFACE_TEMPLATE
from facegate.faces.pipeline import FaceAligner
from facegate.faces.quality import FacePolicy
from facegate.verify import verify_pair

pytestmark = pytest.mark.integration


def test_one_face_per_training_photo(photos, aligner):
    for path in sorted((photos / "train").glob("*/*")):
        dets = aligner.detector.detect(read_image(path))
        assert len(dets) == 1, path
        assert dets[0].score > 0.8


def test_two_people_policy(photos, aligner):
    img = read_image(photos / "two_people.jpg")
    assert len(aligner.detector.detect(img)) == 2
    with pytest.raises(FaceError) as e:
        FaceAligner(aligner.detector, FacePolicy(multiple="reject")).prepare(img)
    assert e.value.code == "multiple_faces"
    assert aligner.prepare(img).n_faces == 2  # the dataset policy picks one and goes on


def test_aligned_crop_has_landmarks_on_the_template(photos, aligner):
    # Re-detecting on the aligned crop must find the landmarks near the template: alignment really aligns.
    crop = aligner.prepare(read_image(photos / "train" / "obama" / "obama.jpg"))
    big = np.zeros((224, 224, 3), np.uint8)
    big[56:168, 56:168] = crop.face  # YuNet needs some context around the face
    dets = aligner.detector.detect(big)
    assert len(dets) == 1
    err = np.linalg.norm(dets[0].landmarks - 56 - ARCFACE_TEMPLATE, axis=1)
    assert err.max() < 6.0, err


def test_resolution_variants_match(photos, sface, aligner):
    res = verify_pair(photos / "obama-240p.jpg", photos / "obama-1080p.jpg", sface, aligner)
    assert res["match"]


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ("train/obama/obama.jpg", "train/obama/obama2.jpg", True),
        ("train/biden/biden.jpg", "train/biden/biden2.jpg", True),
        ("train/kit_harington/john1.jpeg", "train/kit_harington/john2.jpeg", True),
        ("train/rose_leslie/img1.jpg", "train/rose_leslie/img2.jpg", True),
        ("train/obama/obama.jpg", "train/biden/biden.jpg", False),
        ("train/kit_harington/john1.jpeg", "train/rose_leslie/img1.jpg", False),
        ("train/alex_lacamoire/img1.jpg", "train/obama/obama2.jpg", False),
    ],
)
def test_cli_verify(photos, a, b, match):
    out = CliRunner().invoke(app, ["verify", str(photos / a), str(photos / b)])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["match"] is match
    assert {"score", "match", "threshold", "model"} <= res.keys()
    assert (res["score"] >= res["threshold"]) is match


def test_cli_verify_no_face_names_the_image(photos, tmp_path):
    blank = tmp_path / "blank wall.png"
    shutil.copy(photos / "32bit.png", tmp_path / "ok.png")
    from facegate.data.imageio import encode_jpeg

    blank.write_bytes(encode_jpeg(np.full((480, 640, 3), 200, np.uint8)))
    out = CliRunner().invoke(app, ["verify", str(tmp_path / "ok.png"), str(blank)])
    assert out.exit_code == 2
    assert "blank wall.png" in out.stderr
    assert "no_face" in out.stderr
