import numpy as np
import pytest

from facegate.data.synthetic import synthetic_faces, synthetic_identity

pytestmark = pytest.mark.unit


def test_deterministic():
    a, la = synthetic_faces(3, 2, seed=5)
    b, _lb = synthetic_faces(3, 2, seed=5)
    np.testing.assert_array_equal(a, b)
    assert la.tolist() == [0, 0, 1, 1, 2, 2]
    assert not np.array_equal(a, synthetic_faces(3, 2, seed=6)[0])


def test_identities_differ_more_than_images_of_one_identity():
    faces, labels = synthetic_faces(12, 4)
    x = faces.reshape(len(faces), -1).astype(np.float64)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    same = labels[:, None] == labels[None]
    off_diag = ~np.eye(len(x), dtype=bool)
    assert np.median(d[same & off_diag]) < 0.7 * np.median(d[~same])
    # ...but images of one identity are not copies.
    assert not np.array_equal(synthetic_identity(0, 0), synthetic_identity(0, 1))
