"""Per-group error rates: counts, exact intervals, the small-group rule, the identity bootstrap and the FDR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from facegate.errors import DataError
from facegate.evaluate.fairness_plots import groups_markdown, write_group_report
from facegate.evaluate.groups import (
    GroupPolicy,
    assign_groups,
    clopper_pearson,
    group_report,
    identity_weights,
    load_groups,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (3, 10), (10, 10), (1, 177), (57, 2219), (999, 1000)])
def test_clopper_pearson_matches_scipy(k: int, n: int) -> None:
    lo, hi = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    got = clopper_pearson(k, n, 0.05)
    assert got is not None
    assert got[0] == pytest.approx(lo, abs=1e-9)
    assert got[1] == pytest.approx(hi, abs=1e-9)


def test_clopper_pearson_without_pairs_is_none() -> None:
    assert clopper_pearson(0, 0) is None


def _table(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "groups.csv"
    p.write_text(text)
    return p


def _world(
    rng: np.random.Generator, people: dict[str, tuple[str, int]], fnmr: dict[str, float], fmr: dict[str, float]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Pairs over people ``{name: (group, n_genuine)}``; genuine pairs fail with ``fnmr[group]``; impostors between
    every two people of a group (and a few across) are accepted with ``fmr[group]`` (score 0.9 vs 0.1)."""
    left, right, same, scores = [], [], [], []
    names = list(people)
    for name, (grp, n_gen) in people.items():
        for j in range(n_gen):
            left.append(f"{name}/{name}_{j:04d}.jpg")
            right.append(f"{name}/{name}_{j + 1:04d}.jpg")
            same.append(True)
            scores.append(0.1 if rng.random() < fnmr[grp] else 0.9)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ga, gb = people[a][0], people[b][0]
            for j in range(4):
                left.append(f"{a}/{a}_{j:04d}.jpg")
                right.append(f"{b}/{b}_{j:04d}.jpg")
                same.append(False)
                p = fmr[ga] if ga == gb else 0.0
                scores.append(0.9 if rng.random() < p else 0.1)
    return left, right, np.array(same), np.array(scores)


def _csv_for(people: dict[str, tuple[str, int]]) -> str:
    return "identity,sex\n" + "".join(f"{n},{g}\n" for n, (g, _) in people.items())


def test_rates_counts_and_intervals_by_hand(tmp_path: Path, rng: np.random.Generator) -> None:
    people = {f"m{i}": ("m", 30) for i in range(12)} | {f"f{i}": ("f", 30) for i in range(12)}
    left, right, same, scores = _world(rng, people, {"m": 0.02, "f": 0.10}, {"m": 0.01, "f": 0.01})
    table = load_groups(_table(tmp_path, _csv_for(people)))
    assert table.kind == "identity"
    rep = group_report(table, left, right, same, scores, 0.5, policy=GroupPolicy(bootstrap=200))
    col = rep["columns"]["sex"]
    for grp in ("m", "f"):
        in_g = np.array([people[a.split("/")[0]][0] == grp for a in left])
        other = np.array([people[b.split("/")[0]][0] == grp for b in right])
        gen = same & in_g
        errors = int((scores[gen] < 0.5).sum())
        g = col["groups"][grp]
        assert g["fnmr"]["pairs"] == gen.sum() == 360
        assert g["fnmr"]["errors"] == errors
        assert g["fnmr"]["rate"] == pytest.approx(errors / 360)
        assert g["fnmr"]["interval"] == pytest.approx(clopper_pearson(errors, 360))
        assert g["fnmr"]["identities"] == 12
        within = ~same & in_g & other
        assert g["fmr_within"]["pairs"] == within.sum() == 66 * 4
        assert g["fmr_within"]["errors"] == int((scores[within] >= 0.5).sum())
        across = ~same & (in_g ^ other)
        assert g["fmr_across"]["pairs"] == across.sum() == 144 * 4
        assert g["images"] == 12 * 31
    d = col["differentials"]
    pooled = sum(col["groups"][g]["fnmr"]["errors"] for g in ("m", "f")) / 720
    fn = {g: (col["groups"][g]["fnmr"]["errors"] + 0.5) / (360 + 0.5 / pooled) for g in ("m", "f")}
    assert d["fnmr_ratio"]["value"] == pytest.approx(max(fn.values()) / min(fn.values()))
    assert d["fnmr_ratio"]["highest"] == "f"
    raw_fn = [col["groups"][g]["fnmr"]["rate"] for g in ("m", "f")]
    raw_fm = [col["groups"][g]["fmr_within"]["rate"] for g in ("m", "f")]
    expected_fdr = 1 - 0.5 * abs(raw_fm[0] - raw_fm[1]) - 0.5 * abs(raw_fn[0] - raw_fn[1])
    assert d["fdr"]["value"] == pytest.approx(expected_fdr)
    lo, hi = d["fdr"]["interval"]
    assert lo <= hi <= 1.0
    assert d["fnmr_ratio"]["interval"][0] <= d["fnmr_ratio"]["value"] <= d["fnmr_ratio"]["interval"][1]


def test_small_groups_are_inconclusive_and_not_ranked(tmp_path: Path, rng: np.random.Generator) -> None:
    people = {f"m{i}": ("m", 20) for i in range(12)} | {"f0": ("f", 200), "x0": ("x", 5)}
    left, right, same, scores = _world(rng, people, {"m": 0.02, "f": 0.5, "x": 1.0}, {"m": 0.0, "f": 0.0, "x": 0.0})
    table = load_groups(_table(tmp_path, _csv_for(people)))
    col = group_report(table, left, right, same, scores, 0.5, policy=GroupPolicy(bootstrap=50))["columns"]["sex"]
    assert col["groups"]["f"]["fnmr"]["inconclusive"]  # 200 pairs but one person
    assert "identities" in col["groups"]["f"]["fnmr"]["inconclusive_why"]
    assert col["groups"]["x"]["fnmr"]["inconclusive"]
    assert not col["groups"]["m"]["fnmr"]["inconclusive"]
    assert col["differentials"]["fnmr_ratio"]["value"] is None  # one ranked group only
    assert "1 group" in col["differentials"]["fnmr_ratio"]["why"]


def test_groups_without_errors_have_ratio_one_whatever_their_sizes(tmp_path: Path, rng: np.random.Generator) -> None:
    """0 of 176 against 0 of 1,671 impostor pairs is no evidence of a difference (not a ratio of 9.5)."""
    people = {f"m{i}": ("m", 12) for i in range(40)} | {f"f{i}": ("f", 12) for i in range(12)}
    left, right, same, scores = _world(rng, people, {"m": 0.02, "f": 0.05}, {"m": 0.0, "f": 0.0})
    table = load_groups(_table(tmp_path, _csv_for(people)))
    col = group_report(table, left, right, same, scores, 0.5, policy=GroupPolicy(bootstrap=50))["columns"]["sex"]
    assert col["groups"]["m"]["fmr_within"]["pairs"] > 5 * col["groups"]["f"]["fmr_within"]["pairs"]
    assert col["differentials"]["fmr_ratio"]["value"] == 1.0
    assert col["differentials"]["fmr_ratio"]["interval"] == [1.0, 1.0]


def test_failed_images_count_as_failure_to_acquire_not_as_errors(tmp_path: Path) -> None:
    table = load_groups(_table(tmp_path, "image,g\na/1.jpg,dark\na/2.jpg,dark\nb/1.jpg,lit\nb/2.jpg,lit\n"))
    left, right = ["a/1.jpg", "b/1.jpg", "a/1.jpg"], ["a/2.jpg", "b/2.jpg", "b/1.jpg"]
    same, scores = np.array([True, True, False]), np.array([-1.0, 0.9, 0.1])
    rep = group_report(
        table,
        left,
        right,
        same,
        scores,
        0.5,
        failed_pairs=[0],
        failed_images={"a/2.jpg": "no_face: no face found"},
        policy=GroupPolicy(bootstrap=10),
    )
    dark = rep["columns"]["g"]["groups"]["dark"]
    assert dark["fnmr"]["pairs"] == 0 and dark["fnmr"]["rate"] is None
    assert dark["failure_to_acquire"] == {
        "failed": 1,
        "images": 2,
        "rate": 0.5,
        "interval": pytest.approx(clopper_pearson(1, 2)),
        "by_reason": {"no_face": 1},
    }
    assert dark["failed_pairs"] == 1
    assert rep["columns"]["g"]["groups"]["lit"]["failure_to_acquire"]["failed"] == 0


def test_identity_bootstrap_weights_pairs_by_their_people(tmp_path: Path) -> None:
    table = load_groups(_table(tmp_path, "identity,g\na,x\nb,x\nc,y\n"))
    left, right = ["a/1.jpg", "a/1.jpg", "b/1.jpg"], ["a/2.jpg", "b/1.jpg", "c/1.jpg"]
    same = np.array([True, False, False])
    pg = assign_groups(table, "g", left, right)
    assert pg.n_identities == 3
    rng = np.random.default_rng(3)
    for _ in range(20):
        state = rng.bit_generator.state
        w = identity_weights(pg, same, rng)
        rng2 = np.random.default_rng()
        rng2.bit_generator.state = state
        drawn = np.bincount(rng2.integers(0, 3, 3), minlength=3)
        a, b, c = drawn
        assert list(w) == [a, a * b, b * c]


def test_identity_bootstrap_is_wider_than_pretending_pairs_are_independent(tmp_path: Path) -> None:
    """Ten people, each with 50 genuine pairs that all fail or all pass: the evidence is ten people, not 500 pairs."""
    rng = np.random.default_rng(0)
    people = {f"p{i}": ("a" if i < 10 else "b", 50) for i in range(20)}
    fails = {f"p{i}" for i in (0, 1, 2, 10)}
    left, right, same, _ = _world(rng, people, {"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 0.0})
    refused = np.array([a.split("/")[0] in fails for a in left]) & same
    scores = np.where(same & ~refused, 0.9, 0.1)
    table = load_groups(_table(tmp_path, _csv_for(people)))
    policy = GroupPolicy(min_pairs=10, min_identities=5, bootstrap=400)
    d = group_report(table, left, right, same, scores, 0.5, policy=policy)["columns"]["sex"]["differentials"]
    lo, hi = d["fdr"]["interval"]
    # A pair bootstrap would give roughly +-0.04 around the gap of 0.1; people give far more spread.
    assert hi - lo > 0.15


def test_load_groups_columns_and_errors(tmp_path: Path) -> None:
    t = load_groups(_table(tmp_path, "image,gender,light\nA/A_0001.jpg,male,dark\nB/B_0001.jpg,female,\n"))
    assert t.kind == "image" and t.columns == ["gender", "light"]
    assert t.labels["light"] == {"A/A_0001.jpg": "dark"}
    with pytest.raises(DataError, match="listed twice"):
        load_groups(_table(tmp_path, "image,g\nA/1.jpg,x\nA/1.jpg,y\n"))
    with pytest.raises(DataError, match="header"):
        load_groups(_table(tmp_path, "image\nA/1.jpg\n"))
    t = load_groups(_table(tmp_path, "who,g\nA/1.jpg,x\n"))
    assert t.kind == "image"
    with pytest.raises(DataError, match="no label column"):
        assign_groups(t, "nope", ["A/1.jpg"], ["A/1.jpg"])
    with pytest.raises(DataError, match="labels none"):
        assign_groups(t, "g", ["Z/1.jpg"], ["Z/2.jpg"])


def test_write_group_report_files(tmp_path: Path, rng: np.random.Generator) -> None:
    people = {f"m{i}": ("m", 12) for i in range(10)} | {f"f{i}": ("f", 12) for i in range(10)}
    left, right, same, scores = _world(rng, people, {"m": 0.05, "f": 0.2}, {"m": 0.05, "f": 0.1})
    scores = scores + rng.normal(0, 0.05, scores.size)
    table = load_groups(_table(tmp_path, _csv_for(people)))
    out = tmp_path / "out"
    rep, plots = write_group_report(
        table, left, right, same, scores, 0.5, out, policy=GroupPolicy(bootstrap=20), threshold_source="test"
    )
    assert json.loads((out / "groups.json").read_text()) == json.loads(json.dumps(rep))
    for p in plots["sex"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "groups.html").read_text()
    assert "Equal treatment" in html and "data:image/png;base64," in html
    md = groups_markdown(rep)
    assert "| f |" in md and "FNMR max/min ratio" in md
