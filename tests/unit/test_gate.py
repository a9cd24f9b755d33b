"""The promotion gate: statistics on paired decisions, not a fixed delta."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from facegate.evaluate.gate import GatePolicy, ModelScores, compare_models, mcnemar_exact

pytestmark = pytest.mark.unit


def _pairs(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.repeat([True, False], n // 2)


def _scores(labels: np.ndarray, separation: float, rng: np.random.Generator) -> np.ndarray:
    """Genuine pairs around +separation/2, impostors around -separation/2 (unit noise)."""
    return np.where(labels, separation / 2, -separation / 2) + rng.normal(0, 0.5, labels.size) / 2


@pytest.mark.parametrize(("a", "b"), [(0, 0), (3, 9), (10, 3), (40, 61), (500, 560), (0, 7)])
def test_mcnemar_matches_the_binomial_test(a: int, b: int) -> None:
    expected = 1.0 if a + b == 0 else stats.binomtest(b, a + b, 0.5, alternative="greater").pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_clearly_better_challenger_is_promoted(rng: np.random.Generator) -> None:
    y = _pairs(2000, rng)
    champ = _scores(y, 0.6, rng)
    chall = _scores(y, 1.4, rng)
    d = compare_models(y, ModelScores("champ", champ, 0.0), ModelScores("chall", chall, 0.0), GatePolicy())
    assert d.promote, d.reasons
    assert d.numbers["accuracy"]["gain"] > 0.05
    assert d.numbers["mcnemar"]["p_value"] < 1e-6
    assert d.numbers["tar"]["gain_lower"] > 0
    assert "PROMOTE" in d.to_markdown()


def test_worse_challenger_is_not_promoted(rng: np.random.Generator) -> None:
    y = _pairs(2000, rng)
    d = compare_models(
        y, ModelScores("champ", _scores(y, 1.4, rng), 0.0), ModelScores("chall", _scores(y, 0.6, rng), 0.0)
    )
    assert not d.promote
    assert d.numbers["accuracy"]["gain"] < 0
    assert not d.numbers["checks"]["mcnemar"]
    assert "KEEP the champion" in d.to_markdown()


def test_insignificantly_better_challenger_is_not_promoted(rng: np.random.Generator) -> None:
    """A challenger that fixes 3 more pairs than it breaks leads on accuracy and TAR, but that is chance."""
    y = _pairs(1200, rng)
    champ = _scores(y, 1.0, rng)
    chall = champ.copy()
    wrong = np.flatnonzero((champ >= 0.0) != y)
    chall[wrong[:8]] = np.where(y[wrong[:8]], 0.5, -0.5)  # 8 pairs fixed ...
    right_genuine = np.flatnonzero((champ >= 0.0) & y & (champ < 0.3))
    chall[right_genuine[:5]] = -0.01  # ... 5 other pairs broken
    d = compare_models(y, ModelScores("champ", champ, 0.0), ModelScores("chall", chall, 0.0))
    assert d.numbers["accuracy"]["gain"] == pytest.approx(3 / 1200)
    assert d.numbers["checks"]["accuracy"]  # it does lead ...
    assert d.numbers["mcnemar"]["p_value"] > 0.05  # ... but 8 vs 5 flips is not evidence
    assert not d.promote


def test_margin_blocks_a_significant_but_small_gain(rng: np.random.Generator) -> None:
    y = _pairs(4000, rng)
    champ = _scores(y, 1.0, rng)
    chall = _scores(y, 1.15, rng)
    loose = compare_models(y, ModelScores("a", champ, 0.0), ModelScores("b", chall, 0.0), GatePolicy(margin=0.0))
    strict = compare_models(y, ModelScores("a", champ, 0.0), ModelScores("b", chall, 0.0), GatePolicy(margin=0.2))
    assert loose.numbers["accuracy"]["gain"] > 0
    assert not strict.promote
    assert not strict.numbers["checks"]["accuracy"]


def test_no_champion_promotes_and_unresolvable_far_is_reported(rng: np.random.Generator) -> None:
    y = _pairs(200, rng)  # 100 impostors: FAR 1e-3 cannot be resolved
    first = compare_models(y, None, ModelScores("first", _scores(y, 1.0, rng)))
    assert first.promote and first.champion is None
    d = compare_models(y, ModelScores("a", _scores(y, 1.0, rng)), ModelScores("b", _scores(y, 1.0, rng)))
    assert d.numbers["tar"]["far"] == pytest.approx(0.01)
    assert any("cannot resolve FAR" in r for r in d.reasons)
    assert any("no deployment threshold" in r for r in d.reasons)


def test_mismatched_pairs_are_refused(rng: np.random.Generator) -> None:
    y = _pairs(100, rng)
    with pytest.raises(ValueError, match="pairs differ"):
        compare_models(y, ModelScores("a", np.zeros(100)), ModelScores("b", np.zeros(99)))


def test_significant_accuracy_but_chance_tar_gain_is_not_promoted() -> None:
    """McNemar passes (many flips near the threshold) and TAR leads by two pairs: the paired bootstrap must say
    the TAR gain is noise, and that alone keeps the champion."""
    rng = np.random.default_rng(7)
    n = 1000
    y = np.repeat([True, False], n)
    impostor = rng.uniform(-1.0, 0.5, n)
    impostor[:2] = [0.95, 0.9]  # the FAR 1e-3 threshold sits at the top impostors
    genuine = rng.uniform(0.6, 0.85, n)
    genuine[:40] = rng.uniform(-0.2, 0.0, 40)  # champion misses these at threshold 0.1 ...
    champ = np.concatenate([genuine, impostor])
    chall = champ.copy()
    chall[:40] = 0.3  # ... the challenger gets them right (McNemar: 40 vs 0 flips)
    chall[40:42] = 0.97  # and only two genuine pairs pass the top impostor: a TAR lead of 2/1000
    d = compare_models(y, ModelScores("a", champ, 0.1), ModelScores("b", chall, 0.1), GatePolicy(seed=3))
    checks = d.numbers["checks"]
    assert checks["accuracy"] and checks["tar"] and checks["mcnemar"], d.reasons
    assert d.numbers["tar"]["gain"] == pytest.approx(2 / n)
    assert d.numbers["mcnemar"]["p_value"] == pytest.approx(mcnemar_exact(0, 40))  # one-sided, exact
    assert not checks["bootstrap"] and d.numbers["tar"]["gain_lower"] <= 0.0
    assert not d.promote


def test_far_of_one_over_n_stays_resolvable() -> None:
    """49 impostors: 49 * (1/49) < 1 in floating point; the gate must still compare TAR at FAR 1/49."""
    y = np.concatenate([np.ones(60, bool), np.zeros(49, bool)])
    rng = np.random.default_rng(0)
    good = np.where(y, rng.uniform(0.5, 1.0, y.size), rng.uniform(-1.0, 0.4, y.size))
    d = compare_models(y, ModelScores("a", good * 0.1), ModelScores("b", good))
    assert d.numbers["tar"]["challenger"] == 1.0


def test_fitted_thresholds_judge_both_models_alike(rng: np.random.Generator) -> None:
    """A challenger whose threshold was tuned on the gate pairs is not flattered: with `fitted`, both models are
    judged at their own accuracy-optimal threshold on the pairs, whatever thresholds they carry."""
    y = _pairs(1000, rng)
    scores = _scores(y, 1.0, rng)
    champ = ModelScores("a", scores, threshold=0.9)  # a deployment threshold that is poor on these pairs
    chall = ModelScores("b", scores.copy(), threshold=0.0)  # the same model, threshold fitted on these pairs
    deployed = compare_models(y, champ, chall, GatePolicy(thresholds="deployed"))
    fitted = compare_models(y, champ, chall, GatePolicy(thresholds="fitted"))
    assert deployed.numbers["accuracy"]["gain"] > 0.1  # the same scores "win" by their threshold alone
    assert fitted.numbers["accuracy"]["gain"] == 0.0 and not fitted.promote
    assert any("same rule for both" in r for r in fitted.reasons)
