"""Operations metrics for the dashboards (facegate.dashboards): check-ins per kiosk and hall, and load gauges.

- ``facegate_checkins_total{hall, kiosk, decision}``: one per answered check-in. ``kiosk`` is the API key's name;
  ``hall`` is the part of that name before the first ``.`` (name kiosk keys ``HALL.KIOSK``, e.g.
  ``hall-a.kiosk-03``), ``unassigned`` for a name without one. Key names are operator-chosen and few (one per
  kiosk), so the labels stay bounded; no student id is ever a label. Every kiosk key's series exist at 0 from
  the first read of the key table (:func:`prime_checkins`), so a pod's first check-ins are not lost to ``rate()``.
- ``facegate_inflight_requests``: inference requests admitted and not yet answered (the gatekeeper's count, the
  one its 503 limit ``serve.max_inflight`` applies to).
- ``facegate_batch_queue_depth``: face batches waiting for the embedding worker (the micro-batcher's queue).
- ``facegate_match_score{model_version}``: a summary (sum and count) of the scores, for mean-score drift.
  ``facegate_score``'s buckets start below zero, and prometheus_client then exports no ``_sum`` for it, so
  the mean cannot come from that histogram.

Both gauges are read at scrape time from the objects :func:`watch_load` is given, so nothing on the request path
updates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Summary

from facegate.serve.metrics import DECISION_VALUES, child

__all__ = [
    "CHECKINS",
    "INFLIGHT",
    "MATCH_SCORE",
    "QUEUE_DEPTH",
    "count_checkin",
    "hall_and_kiosk",
    "prime_checkins",
    "watch_load",
]

CHECKINS = Counter(
    "facegate_checkins_total",
    "Answered check-ins by hall, kiosk (API key name) and decision.",
    ["hall", "kiosk", "decision"],
)
INFLIGHT = Gauge("facegate_inflight_requests", "Inference requests admitted and not yet answered.")
QUEUE_DEPTH = Gauge("facegate_batch_queue_depth", "Face batches waiting for the embedding worker.")
MATCH_SCORE = Summary(
    "facegate_match_score", "Cosine similarity of verified faces to their template (sum and count).", ["model_version"]
)


def hall_and_kiosk(key_name: str) -> tuple[str, str]:
    """``(hall, kiosk)`` labels of a kiosk key name (``hall-a.kiosk-03`` -> ``("hall-a", "hall-a.kiosk-03")``)."""
    hall, dot, _ = key_name.partition(".")
    return (hall if dot and hall else "unassigned"), key_name


def count_checkin(key_name: str, decision: str) -> None:
    """Count one answered check-in of the kiosk whose key is ``key_name``."""
    child(CHECKINS, *hall_and_kiosk(key_name), decision).inc()


def prime_checkins(principals: Iterable[Any]) -> None:
    """Start every kiosk key's check-in series at 0 (the key table's principals; administrators are skipped).

    A counter series that first appears with its first check-in has no earlier sample, so ``rate()`` reads those
    check-ins as nothing: after a pod start or a Knative scale from zero, a hall's first minutes of check-ins would
    be missing from the dashboards. Series that exist at 0 before the first check-in count it.
    """
    for principal in principals:
        if principal.role == "kiosk":
            for decision in DECISION_VALUES:
                child(CHECKINS, *hall_and_kiosk(principal.name), decision)


def watch_load(gate: Any, batcher: Any) -> None:
    """Read the gauges from ``gate.inflight_total`` and ``batcher.depth()`` at each scrape (the latest app wins)."""
    INFLIGHT.set_function(lambda: float(gate.inflight_total))
    QUEUE_DEPTH.set_function(lambda: float(batcher.depth()))
