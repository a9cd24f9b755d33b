"""The canary decision (a pure function), its quantile and PSI/KS arithmetic, and the exposition parser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from facegate.evaluate import drift
from facegate.rollout import canary

pytestmark = pytest.mark.unit

INF = math.inf
SCORE_EDGES = (*(round(-0.2 + 0.05 * i, 2) for i in range(25)), INF)


def _cumulative(edges: tuple[float, ...], samples: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((le, float(np.sum(samples <= le))) for le in edges)


def _stats(version: str = "v", *, n: int = 200, errors: int = 0, retry: int = 10, accept: float = 0.9,
           latency: float = 0.08, score_shift: float = 0.0) -> canary.VersionStats:  # fmt: skip
    rng = np.random.default_rng(0)
    compared = n - retry
    accepted = round(compared * accept)
    scores = np.clip(rng.normal(0.6 + score_shift, 0.1, compared), -0.19, 0.99)
    lat = rng.uniform(latency * 0.5, latency, n)
    return canary.VersionStats(
        version,
        requests=n,
        errors_5xx=errors,
        decisions={
            "accept:match": accepted,
            "reject:mismatch": compared - accepted,
            "retry:no_face": retry,
            "reject:unknown_student": 3,
        },
        latency_buckets=_cumulative((0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, INF), lat),
        score_buckets=_cumulative(SCORE_EDGES, scores),
    )


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = ((0.1, 0.0), (0.2, 50.0), (0.5, 100.0), (INF, 100.0))
    assert canary.histogram_quantile(0.5, buckets) == pytest.approx(0.2)
    assert canary.histogram_quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * 49 / 50)
    assert canary.histogram_quantile(0.25, buckets) == pytest.approx(0.15)
    # Observations above the last finite bound: PromQL answers that bound.
    assert canary.histogram_quantile(0.99, ((0.1, 10.0), (INF, 20.0))) == 0.1
    assert math.isnan(canary.histogram_quantile(0.99, ((0.1, 0.0), (INF, 0.0))))
    assert math.isnan(canary.histogram_quantile(0.99, ((0.1, 5.0),)))  # no +Inf bucket


def test_identical_versions_are_promoted_with_every_number_reported() -> None:
    d = canary.analyse(_stats("a"), _stats("b"))
    assert d.decision == "promote" and d.reasons == []
    names = [c.name for c in d.checks]
    assert names == ["traffic", "error_rate", "p99_latency_s", "retry_rate", "accept_rate", "score_psi"]
    out = d.to_dict()
    assert out["checks"][0]["challenger"] == 200  # 203 decisions less 3 unknown-student rejects


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        ({"n": 15, "retry": 1}, "traffic"),
        ({"errors": 5}, "error_rate"),
        ({"latency": 0.6}, "p99_latency_s"),
        ({"retry": 40}, "retry_rate"),
        ({"accept": 0.0}, "accept_rate"),
        ({"score_shift": -0.3}, "score_psi"),
    ],
)
def test_each_degradation_alone_rolls_back_for_its_reason(bad: dict[str, float], failing: str) -> None:
    d = canary.analyse(_stats("a"), _stats("b", **bad))  # type: ignore[arg-type]
    assert d.decision == "rollback"
    assert [c.name for c in d.checks if not c.passed] == [failing], d.to_dict()
    assert d.reasons[0].startswith(failing)


def test_policy_thresholds_are_what_decides() -> None:
    slower = _stats("b", latency=0.12)
    assert canary.analyse(_stats("a"), slower).decision == "promote"  # within 1.5x or +50 ms
    strict = canary.CanaryPolicy(max_p99_ratio=1.1, p99_slack_s=0.0)
    assert canary.analyse(_stats("a"), slower, strict).decision == "rollback"


def test_a_small_score_shift_on_few_requests_is_not_a_shift() -> None:
    # 20 scores in clusters: one cluster crossing a bucket edge gives a large PSI, but KS says it is noise.
    few = canary.CanaryPolicy(min_requests=5)
    a, b = _stats("a", n=20, retry=0), _stats("b", n=20, retry=0, score_shift=0.02)
    check = next(c for c in canary.analyse(a, b, few).checks if c.name == "score_psi")
    assert check.passed, check


def test_psi_and_ks() -> None:
    assert drift.psi([10, 20, 30], [10, 20, 30]) == 0.0
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.5 - 0.75) * math.log(0.5 / 0.75)
    assert drift.psi([1, 3], [2, 2]) == pytest.approx(expected)
    assert math.isnan(drift.psi([0, 0], [1, 1]))
    with pytest.raises(ValueError, match="same bins"):
        drift.psi([1, 2], [1, 2, 3])
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0.2, 1, 250)
    d, p = drift.ks_samples(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, abs=0.01)
    assert drift.psi_samples(a, a) == 0.0 and drift.psi_samples(a, b + 1.0) > 0.5


def test_split_sends_exactly_the_percent_spread_out() -> None:
    routes = canary.split(200, 10)
    assert sum(routes) == 20
    assert max(np.diff(np.flatnonzero(routes))) == 10
    assert sum(canary.split(7, 50)) == 3


def test_stats_from_a_real_exposition() -> None:
    reg = CollectorRegistry()
    http = Counter("facegate_http_requests_total", "", ["route", "status"], registry=reg)
    decisions = Counter("facegate_decisions_total", "", ["decision", "reason", "model_version"], registry=reg)
    stage = Histogram("facegate_stage_seconds", "", ["stage", "model"], buckets=(0.05, 0.1, 0.5), registry=reg)
    score = Histogram("facegate_score", "", ["model_version"], buckets=(0.3, 0.5, 0.7), registry=reg)
    http.labels("inference", "200").inc(9)
    http.labels("inference", "500").inc(1)
    http.labels("admin", "500").inc(4)  # not kiosk traffic
    decisions.labels("accept", "match", "v2").inc(6)
    decisions.labels("retry", "no_face", "v2").inc(2)
    decisions.labels("accept", "match", "v1").inc(50)  # another version's series
    for s in (0.04, 0.08, 0.3):
        stage.labels("total", "sface").observe(s)
    stage.labels("embed", "sface").observe(2.0)
    for s in (0.2, 0.6, 0.65):
        score.labels("v2").observe(s)
    st = canary.stats_from_exposition(generate_latest(reg).decode(), "v2")
    assert (st.requests, st.errors_5xx, st.error_rate) == (10, 1, 0.1)
    assert st.decisions == {"accept:match": 6, "retry:no_face": 2}
    assert st.retry_rate == 0.25 and st.accept_rate == 1.0
    assert st.latency_buckets == ((0.05, 1), (0.1, 2), (0.5, 3), (INF, 3))
    assert st.score_buckets == ((0.3, 1), (0.5, 1), (0.7, 3), (INF, 3))
