import cv2
import numpy as np
import pytest

from facegate.faces.align import ARCFACE_TEMPLATE, align_face, estimate_similarity, transform_points

pytestmark = pytest.mark.unit


def test_template_maps_onto_itself():
    m = estimate_similarity(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    np.testing.assert_allclose(transform_points(m, ARCFACE_TEMPLATE), ARCFACE_TEMPLATE, atol=1e-9)


@pytest.mark.parametrize(("angle", "scale", "shift"), [(0, 1, (0, 0)), (25, 2.5, (300, 120)), (-40, 0.7, (15, 60))])
def test_recovers_a_known_similarity(angle, scale, shift):
    t = np.radians(angle)
    rot = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    src = ARCFACE_TEMPLATE @ rot.T + np.array(shift)
    m = estimate_similarity(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(transform_points(m, src), ARCFACE_TEMPLATE, atol=1e-8)


def test_never_returns_a_reflection():
    mirrored = ARCFACE_TEMPLATE * np.array([-1, 1]) + np.array([112, 0])
    m = estimate_similarity(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_align_face_puts_marked_points_on_the_template():
    # Paint five dots at template positions, move the picture by a similarity, align it back from the moved points:
    # the dots must land on the template again.
    img = np.zeros((112, 112, 3), np.uint8)
    for x, y in ARCFACE_TEMPLATE:
        cv2.circle(img, (round(x), round(y)), 2, (255, 255, 255), -1)
    fwd = cv2.getRotationMatrix2D((56, 56), 30, 1.8)
    fwd[:, 2] += (200, 150)
    big = cv2.warpAffine(img, fwd, (500, 450))
    moved = transform_points(fwd, ARCFACE_TEMPLATE)
    out = align_face(big, moved)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    grey = out[:, :, 0].astype(float)
    for x, y in ARCFACE_TEMPLATE:
        patch = grey[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2]
        assert patch.mean() > 150, (x, y)


def test_degenerate_landmarks_raise():
    with pytest.raises(ValueError, match="degenerate"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE)
