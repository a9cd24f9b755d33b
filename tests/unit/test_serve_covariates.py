"""Serving counters per photo-covariate bin: bounded labels, the console's snapshot, and never a failed check-in."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.faces.covariates import BINS
from facegate.faces.detect import Detection
from facegate.faces.pipeline import FaceCrop
from facegate.serve import covariate_metrics as cm

pytestmark = pytest.mark.unit


def _count(covariate: str, bin_: str, decision: str, reason: str) -> float:
    return float(cm.COVARIATE_DECISIONS.labels(covariate, bin_, decision, reason)._value.get())


def test_record_counts_every_covariate_and_clamps_unknown_labels() -> None:
    before = _count("illumination", "dark", "retry", "no_face")
    other = _count("illumination", "unknown", "reject", "other")
    cm.record({"illumination": "dark", "pose": "frontal"}, "retry", "no_face")
    assert _count("illumination", "dark", "retry", "no_face") == before + 1
    # A label outside the fixed sets never becomes a new series (a student id smuggled in, say).
    cm.record({"illumination": "S12345"}, "maybe", "student S12345")
    assert _count("illumination", "unknown", "reject", "other") == other + 1
    series = {s.labels["bin"] for m in cm.COVARIATE_DECISIONS.collect() for s in m.samples}
    assert series <= {b for bins in BINS.values() for b in bins}
    cm.record({}, "accept", "match")  # nothing measured (unknown student path): nothing counted


def test_snapshot_gives_each_bin_and_its_others() -> None:
    base = cm.snapshot()["sharpness"]
    for _ in range(8):
        cm.record({"sharpness": "sharp"}, "accept", "match")
    for _ in range(2):
        cm.record({"sharpness": "sharp"}, "retry", "blurry")
    for _ in range(3):
        cm.record({"sharpness": "soft"}, "retry", "blurry")
    snap = cm.snapshot()["sharpness"]

    def n(b: str, k: str) -> int:
        return int(snap[b][k]) - int(base.get(b, {}).get(k, 0))

    assert (n("sharp", "accept"), n("sharp", "retry"), n("soft", "retry")) == (8, 2, 3)
    soft = snap["soft"]
    assert soft["refused"] == pytest.approx((soft["retry"] + soft["reject"]) / soft["total"])
    others_total = sum(v["total"] for b, v in snap.items() if b != "soft")
    others_bad = sum(v["retry"] + v["reject"] for b, v in snap.items() if b != "soft")
    assert soft["others_refused"] == pytest.approx(others_bad / others_total)


def test_measure_request_bins_a_photo_and_never_raises() -> None:
    img = np.full((400, 400, 3), 30, np.uint8)
    lm = np.array([[170, 180], [230, 180], [200, 215], [175, 250], [225, 250]], np.float32)
    crop = FaceCrop(
        face=np.full((112, 112, 3), 30, np.uint8), detection=Detection((150, 130, 100, 140), lm, 0.9), sharpness=0.0
    )
    bins = cm.measure_request(img, crop)
    assert bins == {"illumination": "dark", "face_size": "medium", "pose": "frontal", "sharpness": "soft"}
    assert cm.measure_request(img, None)["face_size"] == "unknown"
    assert set(cm.measure_request(np.zeros((0, 0, 3), np.uint8), object()).values()) == {"unknown"}
