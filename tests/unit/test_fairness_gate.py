"""The gate's equal-treatment condition: a wider gap between groups blocks promotion, even with better accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.evaluate.fairness_gate import FairnessPolicy
from facegate.evaluate.gate import GatePolicy, ModelScores, compare_models
from facegate.evaluate.groups import GroupTable, PairGroups, assign_groups

pytestmark = pytest.mark.unit

THR = 0.4
POLICY = GatePolicy(fairness=FairnessPolicy(bootstrap=300))


def _world(
    rng: np.random.Generator, per_group: int = 40, genuine: int = 10
) -> tuple[PairGroups, np.ndarray, np.ndarray, np.ndarray]:
    """Two groups of people, genuine pairs per person and within/across-group impostor pairs."""
    people = [(f"m{i}", "m") for i in range(per_group)] + [(f"f{i}", "f") for i in range(per_group)]
    left, right, same = [], [], []
    for name, _ in people:
        for j in range(genuine):
            left.append(f"{name}/{j}.jpg")
            right.append(f"{name}/{j + 1}.jpg")
            same.append(True)
    for grp in ("m", "f"):
        names = [n for n, g in people if g == grp]
        for i, a in enumerate(names):
            for k in range(1, 6):
                b = names[(i + k) % len(names)]
                left += [f"{a}/0.jpg", f"{a}/1.jpg"]
                right += [f"{b}/0.jpg", f"{b}/1.jpg"]
                same += [False, False]
    for i in range(per_group):
        left.append(f"m{i}/2.jpg")
        right.append(f"f{i}/2.jpg")
        same.append(False)
    table = GroupTable("identity", ["sex"], {"sex": dict(people)}, "synthetic")
    pg = assign_groups(table, "sex", left, right)
    y = np.array(same)
    scores = np.where(y, 0.7, 0.0) + rng.normal(0, 0.05, y.size)
    group = np.array([a.split("/")[0][0] for a in left])
    return pg, y, scores, group


def _errors(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = scores.copy()
    out[idx] = 0.1  # a genuine pair wrongly refused
    return out


def _genuine(y: np.ndarray, group: np.ndarray, g: str) -> np.ndarray:
    return np.flatnonzero(y & (group == g))


def test_only_a_wider_gap_is_refused(rng: np.random.Generator) -> None:
    """Same number of refused students overall; the challenger moves them all onto one group."""
    pg, y, base, group = _world(rng)
    m_gen, f_gen = _genuine(y, group, "m"), _genuine(y, group, "f")
    champ = _errors(base, np.concatenate([m_gen[::20], f_gen[::20]]))  # 5 % of each group's genuine pairs
    chall = _errors(base, f_gen[::10])  # the same count, all in group f
    assert (champ < THR).sum() == (chall < THR).sum()
    d = compare_models(y, ModelScores("champ", champ, THR), ModelScores("chall", chall, THR), POLICY, groups=[pg])
    assert d.numbers["accuracy"]["gain"] == 0.0
    assert not d.numbers["checks"]["fairness_sex"]
    assert not d.promote
    f = d.numbers["fairness"][0]
    assert f["measures"]["fnmr_ratio"]["widening"] > 1.0
    assert f["measures"]["fnmr_ratio"]["widening_lower"] > POLICY.fairness.fnmr_ratio_margin
    assert not f["measures"]["fnmr_ratio"]["passed"]
    assert f["measures"]["fdr"]["widening"] > 0  # FDR fell
    md = d.to_markdown()
    assert "A wider gap blocks promotion even when accuracy improves" in md
    assert "FAILED" in md and "| f |" in md
    assert "the gap between sex groups got wider than the margin allows (FNMR max/min ratio" in md


def test_more_accurate_challenger_with_a_wider_gap_is_refused_and_an_even_one_promoted(
    rng: np.random.Generator,
) -> None:
    pg, y, base, group = _world(rng)
    m_gen, f_gen = _genuine(y, group, "m"), _genuine(y, group, "f")
    champ = _errors(base, np.concatenate([m_gen[::10], f_gen[::10]]))  # 10 % of each group
    # Better for group m (every error fixed), worse for group f (half again as many errors).
    uneven = _errors(base, np.concatenate([f_gen[::10], f_gen[5::20]]))
    d = compare_models(y, ModelScores("champ", champ, THR), ModelScores("uneven", uneven, THR), POLICY, groups=[pg])
    checks = d.numbers["checks"]
    assert checks["accuracy"] and checks["tar"] and checks["mcnemar"] and checks["bootstrap"], d.reasons
    assert not checks["fairness_sex"]
    assert not d.promote
    # The same accuracy gain spread evenly over both groups passes the equal-treatment check and is promoted.
    even = _errors(base, np.concatenate([m_gen[::20], f_gen[::20]]))
    d = compare_models(y, ModelScores("champ", champ, THR), ModelScores("even", even, THR), POLICY, groups=[pg])
    assert d.numbers["checks"]["fairness_sex"], d.reasons
    assert d.promote, d.reasons
    # Demanding proof of no widening instead refuses even the even one at this size: ratios of few errors are noisy.
    strict = GatePolicy(fairness=FairnessPolicy(bootstrap=300, rule="no_widening"))
    d = compare_models(y, ModelScores("champ", champ, THR), ModelScores("even", even, THR), strict, groups=[pg])
    assert not d.numbers["checks"]["fairness_sex"]


def test_groups_too_small_to_rank_are_not_judged(rng: np.random.Generator) -> None:
    pg, y, base, group = _world(rng, per_group=6, genuine=4)
    champ = base.copy()
    chall = _errors(base, _genuine(y, group, "f")[::2])
    policy = GatePolicy(margin=-1.0, fairness=FairnessPolicy(bootstrap=50))
    d = compare_models(y, ModelScores("a", champ, THR), ModelScores("b", chall, THR), policy, groups=[pg])
    f = d.numbers["fairness"][0]
    assert f["passed"]
    assert not any(v["judged"] for v in f["measures"].values())
    assert any("not judged" in r for r in d.reasons)


def test_identical_models_pass_at_zero_margin(rng: np.random.Generator) -> None:
    pg, y, base, group = _world(rng)
    champ = _errors(base, _genuine(y, group, "f")[::7])
    policy = GatePolicy(fairness=FairnessPolicy(0.0, 0.0, 0.0, bootstrap=100))
    d = compare_models(y, ModelScores("a", champ, THR), ModelScores("b", champ.copy(), THR), policy, groups=[pg])
    assert d.numbers["checks"]["fairness_sex"]
    assert all(
        v["widening_lower"] == v["widening_upper"] == 0.0
        for v in d.numbers["fairness"][0]["measures"].values()
        if v["judged"]
    )
