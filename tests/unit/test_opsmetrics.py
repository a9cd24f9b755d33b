"""Kiosk and hall labels of the check-in counter (facegate.serve.opsmetrics)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine

from facegate.serve.auth import ApiKeyStore
from facegate.serve.opsmetrics import CHECKINS, count_checkin, hall_and_kiosk, prime_checkins

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "hall"),
    [("hall-a.kiosk-03", "hall-a"), ("kiosk-7", "unassigned"), (".odd", "unassigned"), ("b.k.2", "b")],
)
def test_hall_is_the_key_name_up_to_its_first_dot(name: str, hall: str) -> None:
    assert hall_and_kiosk(name) == (hall, name)


def test_count_checkin_counts_per_hall_kiosk_and_decision() -> None:
    child = CHECKINS.labels("hall-z", "hall-z.k1", "accept")
    before = child._value.get()
    count_checkin("hall-z.k1", "accept")
    count_checkin("hall-z.k1", "reject")
    assert child._value.get() == before + 1


def _series(kiosk: str) -> dict[str, float]:
    return {
        s.labels["decision"]: s.value
        for m in REGISTRY.collect()
        if m.name == "facegate_checkins"
        for s in m.samples
        if s.name == "facegate_checkins_total" and s.labels.get("kiosk") == kiosk
    }


def test_every_kiosk_key_has_its_series_at_zero_once_the_key_table_is_read(tmp_path) -> None:
    """A pod that just started exports each kiosk's counters at 0, so rate() counts that kiosk's first check-ins."""
    engine = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    store = ApiKeyStore(engine, env={})
    store.on_reload = prime_checkins
    store.create("hall-q.kiosk-01")
    store.create("ops-admin", role="admin")
    assert _series("hall-q.kiosk-01") == {}  # nothing read yet
    store.preload()
    assert _series("hall-q.kiosk-01") == {"accept": 0.0, "reject": 0.0, "retry": 0.0}
    assert _series("ops-admin") == {}  # administrators do not check students in
    store.create("hall-q.kiosk-02")  # a key created later starts at 0 with the next read of the table
    store._reload()
    assert _series("hall-q.kiosk-02") == {"accept": 0.0, "reject": 0.0, "retry": 0.0}
    count_checkin("hall-q.kiosk-01", "retry")
    store._reload()  # a re-read does not reset what was counted
    assert _series("hall-q.kiosk-01")["retry"] == 1.0
