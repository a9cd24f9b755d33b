"""Image covariates: measures, fixed bins with bounded labels, and the per-bin report with failure to acquire."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.data.pairs import ArraySource, PairSet
from facegate.evaluate.covariates import covariate_table
from facegate.evaluate.groups import group_report
from facegate.faces.covariates import BINS, Covariates, bin_covariates, luma, measure_covariates, yaw_proxy
from facegate.faces.detect import Detection
from facegate.faces.pipeline import FaceAligner

pytestmark = pytest.mark.unit

FRONTAL = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])


def test_luma_of_box_and_centre() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:40, 50:90] = (255, 255, 255)
    assert luma(img, (50, 20, 40, 20)) == pytest.approx(255.0, abs=0.1)
    assert luma(img) == pytest.approx(255 * (40 * 15) / (100 * 50), abs=0.5)  # the central half: y 25-75, x 50-150
    assert luma(np.full((10, 10, 3), (255, 0, 0), np.uint8)) == pytest.approx(0.299 * 255, abs=0.1)


def test_luma_matches_the_per_pixel_definition() -> None:
    """Luma from channel means equals the mean of per-pixel BT.601 luma: colour, grey, alpha, boxes off the edge."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    weights = np.array([0.299, 0.587, 0.114])
    for box in ((5.5, 3.2, 20.0, 30.7), (-10.0, -4.0, 30.0, 20.0), (50.0, 40.0, 40.0, 40.0)):
        x, y, w, h = box
        x0, y0, x1, y1 = max(0, int(x)), max(0, int(y)), min(64, int(np.ceil(x + w))), min(48, int(np.ceil(y + h)))
        want = float((rgb[y0:y1, x0:x1].astype(np.float64) @ weights).mean())
        assert luma(rgb, box) == pytest.approx(want, abs=1e-6)
        rgba = np.concatenate([rgb, np.full((48, 64, 1), 7, np.uint8)], axis=2)
        assert luma(rgba, box) == pytest.approx(want, abs=1e-6)  # alpha does not count
    grey = rgb[..., 0]
    assert luma(grey) == pytest.approx(float(grey[12:36, 16:48].mean()), abs=1e-6)  # the central half


def test_yaw_proxy_frontal_and_turned() -> None:
    assert yaw_proxy(FRONTAL) < 0.02
    turned = FRONTAL.copy()
    turned[2, 0] += 0.3 * 35.2  # nose moved by 0.3 inter-ocular distances
    assert yaw_proxy(turned) == pytest.approx(0.3 + yaw_proxy(FRONTAL), abs=0.02)
    # Rolling the whole face does not change the yaw proxy.
    a = np.deg2rad(25)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    assert yaw_proxy(turned @ rot.T) == pytest.approx(yaw_proxy(turned), abs=1e-9)
    assert yaw_proxy(np.zeros((5, 2))) is None


def test_bins_are_fixed_and_bounded() -> None:
    c = Covariates(illumination=40.0, face_size=200.0, pose=0.1, sharpness=100.0)
    assert bin_covariates(c) == {"illumination": "dark", "face_size": "large", "pose": "turned", "sharpness": "sharp"}
    c = Covariates(illumination=None, face_size=None, pose=None, sharpness=None, aligned_input=True)
    got = bin_covariates(c)
    assert got == {"illumination": "unknown", "face_size": "aligned", "pose": "unknown", "sharpness": "unknown"}
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = Covariates(*(float(x) for x in rng.uniform(0, 400, 4)))
        assert all(v in BINS[k] for k, v in bin_covariates(c).items())
    assert sum(len(v) for v in BINS.values()) <= 20  # every label set small and bounded


def test_measure_photo_with_and_without_a_face() -> None:
    img = np.full((300, 400, 3), 200, np.uint8)
    img[100:200, 150:250] = 30
    crop = np.full((112, 112, 3), 30, np.uint8)
    got = measure_covariates(img, box=(150, 100, 100, 100), landmarks=FRONTAL + 150, crop=crop)
    assert got.illumination == pytest.approx(30, abs=0.5)
    assert got.face_size == 100 and got.pose is not None and got.sharpness == 0.0
    nothing = measure_covariates(img)
    assert nothing.face_size is None and nothing.pose is None and nothing.sharpness is None
    assert nothing.illumination is not None


class _FakeDetector:
    """A face in bright images only (dark ones are where real detectors fail)."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.mean() < 50:
            return []
        h, w = image.shape[:2]
        s = min(h, w) / 2
        box = (w / 2 - s / 2, h / 2 - s / 2, s, s)
        lm = (FRONTAL / 112.0 * s + np.array([box[0], box[1]])).astype(np.float32)
        return [Detection(box, lm, 0.99)]


def test_covariate_table_puts_failures_in_their_illumination_bin() -> None:
    rng = np.random.default_rng(1)
    bright = [np.clip(rng.normal(150, 30, (240, 240, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
    dark = [np.clip(rng.normal(20, 5, (240, 240, 3)), 0, 255).astype(np.uint8) for _ in range(2)]
    images = np.stack(bright + dark)
    ps = PairSet(
        "t", ["0", "2", "0", "4"], ["1", "3", "4", "5"], np.array([True, True, False, True]), np.arange(4),
        ArraySource(images),
    )  # fmt: skip
    table, measured = covariate_table(ps, FaceAligner(detector=_FakeDetector()), workers=1)  # type: ignore[arg-type]
    assert table.kind == "image" and table.columns == list(BINS)
    light = table.labels["illumination"]
    assert {light[k] for k in "0123"} == {"normal"} and {light[k] for k in "45"} == {"dark"}
    assert measured["4"].face_size is None and measured["0"].face_size == 120
    # Evaluation would report the dark photos as no_face: failure to acquire lands in the dark bin.
    failed = {k: "no_face: no face found" for k in "45"}
    rep = group_report(
        table, ps.left, ps.right, ps.same, np.array([0.9, 0.9, 0.1, -1.0]), 0.5,
        failed_pairs=[2, 3], failed_images=failed,
    )  # fmt: skip
    groups = rep["columns"]["illumination"]["groups"]
    assert groups["dark"]["failure_to_acquire"]["failed"] == 2
    assert groups["dark"]["failure_to_acquire"]["rate"] == 1.0
    assert groups["normal"]["failure_to_acquire"]["failed"] == 0
