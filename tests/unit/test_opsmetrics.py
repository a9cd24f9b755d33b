"""Kiosk and hall labels of the check-in counter (facegate.serve.opsmetrics)."""

from __future__ import annotations

import pytest

from facegate.serve.opsmetrics import CHECKINS, count_checkin, hall_and_kiosk

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
