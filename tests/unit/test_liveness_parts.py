"""Liveness pieces that need no weights: the crop window, the parity gate, the ISO/IEC 30107-3 arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.evaluate.pad import pad_metrics
from facegate.faces.liveness import PARITY_MAX_ABS, crop_scaled, parity_gate

pytestmark = pytest.mark.unit


def _window(image_shape: tuple[int, int], box: tuple[float, float, float, float], scale: float) -> np.ndarray:
    """The pixels a crop takes, found by cropping an image whose pixel values are their own coordinates."""
    h, w = image_shape
    ys, xs = np.mgrid[0:h, 0:w]
    coords = np.stack([xs % 256, ys % 256, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    return crop_scaled(coords, box, scale, size=max(h, w) * 4)


def test_crop_is_the_box_scaled_about_its_centre() -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    image[150:250, 150:250] = 255  # the "face"
    crop = crop_scaled(image, (150, 150, 100, 100), 2.0, size=80)
    assert crop.shape == (80, 80, 3)
    # A 200 px window centred on the face: the face fills the middle half.
    assert crop[40, 40].tolist() == [255, 255, 255] and crop[5, 5].tolist() == [0, 0, 0]
    assert crop[19, 40, 0] < 128 < crop[21, 40, 0]


def test_crop_window_shifts_inside_and_scale_shrinks_for_small_images() -> None:
    win = _window((120, 200), (0, 10, 40, 40), 2.7)  # the window would start at x=-34: shifted to 0
    assert win[0, 0, 0] == 0
    win = _window((100, 100), (30, 30, 40, 40), 4.0)  # 160 px does not fit: the scale drops to 99/40
    assert win[0, 0, 0] <= 1 and win[-1, -1, 0] >= 97


def test_parity_gate() -> None:
    ref = np.array([[0.1, 0.8, 0.1], [0.5, 0.45, 0.05]])
    assert parity_gate(ref, ref + 1e-6, 0.5)["passed"]
    moved = ref.copy()
    moved[1, 1] = 0.45 + PARITY_MAX_ABS / 2  # within the bound, same side of the threshold
    assert parity_gate(ref, moved, 0.5)["passed"]
    flipped = ref.copy()
    flipped[1, 1] = 0.55
    out = parity_gate(ref, flipped, 0.5)
    assert not out["passed"] and out["decision_flips"] == 1


def test_pad_metrics_follow_iso_30107_3() -> None:
    m = pad_metrics([0.9, 0.8, 0.3, 0.7], {"print": [0.1, 0.6], "replay": [0.2, 0.1, 0.4, 0.9]}, threshold=0.5)
    assert m["bpcer"] == 0.25 and m["bpcer_errors"] == 1 and m["n_bona_fide"] == 4
    assert m["apcer"]["print"] == {"apcer": 0.5, "accepted": 1, "n": 2}
    assert m["apcer"]["replay"]["apcer"] == 0.25
    assert m["apcer_max"] == 0.5 and m["acer"] == pytest.approx(0.375)
    empty = pad_metrics([0.9], {}, threshold=0.5)
    assert empty["bpcer"] == 0.0 and empty["apcer_max"] is None and empty["acer"] is None
