import numpy as np
import pytest

from facegate.errors import FaceError
from facegate.faces.align import ARCFACE_TEMPLATE
from facegate.faces.detect import Detection, Detector
from facegate.faces.pipeline import FaceAligner
from facegate.faces.quality import FacePolicy, select_face, sharpness

pytestmark = pytest.mark.unit


def det(x, y, w, h, score=0.9):
    lm = ARCFACE_TEMPLATE / 112 * np.array([w, h]) + np.array([x, y])
    return Detection(box=(x, y, w, h), landmarks=lm.astype(np.float32), score=score)


SHAPE = (480, 640, 3)


def test_largest_face_wins():
    small, big = det(10, 10, 60, 60), det(300, 200, 120, 120)
    assert select_face([small, big], SHAPE, FacePolicy()) is big


def test_similar_sizes_most_central_wins():
    edge, centre = det(0, 0, 100, 100), det(270, 190, 98, 98)
    assert select_face([edge, centre], SHAPE, FacePolicy()) is centre


def test_reasons():
    with pytest.raises(FaceError) as e:
        select_face([], SHAPE, FacePolicy())
    assert e.value.code == "no_face"
    with pytest.raises(FaceError) as e:
        select_face([det(0, 0, 100, 100), det(300, 200, 90, 90)], SHAPE, FacePolicy(multiple="reject"))
    assert e.value.code == "multiple_faces"
    # A tiny face in the background is not a rival.
    assert select_face([det(0, 0, 100, 100), det(500, 400, 20, 20)], SHAPE, FacePolicy(multiple="reject"))
    with pytest.raises(FaceError) as e:
        select_face([det(0, 0, 20, 20)], SHAPE, FacePolicy(min_face_size=32))
    assert e.value.code == "face_too_small"


class _Fixed(Detector):
    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        return self.detections


def test_blurry_face_refused():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    flat = np.full((224, 224, 3), 128, np.uint8)
    aligner = FaceAligner(_Fixed([det(40, 40, 150, 150)]), FacePolicy(min_sharpness=10))
    assert aligner.prepare(sharp).sharpness > 10
    with pytest.raises(FaceError) as e:
        aligner.prepare(flat)
    assert e.value.code == "blurry"
    assert sharpness(flat) == 0.0


def test_align_modes():
    aligner = FaceAligner(_Fixed([]))
    face = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    assert aligner.prepare(face, "auto").detection is None  # already aligned: no detection
    with pytest.raises(FaceError) as e:
        aligner.prepare(np.zeros((112, 112, 3), np.uint8), "auto")  # a blank "aligned face" is still refused
    assert e.value.code == "blurry"
    with pytest.raises(FaceError) as e:
        aligner.prepare(face, "always")
    assert e.value.code == "no_face"
    with pytest.raises(FaceError) as e:
        aligner.prepare(np.zeros((200, 100, 3), np.uint8), "never")
    assert e.value.code == "not_aligned"
