"""Prometheus metrics of the verifier, served on their own port (`serve.metrics_port`) beside KServe's own.

Useful queries: the no-face rate is
``sum(rate(facegate_decisions_total{reason="no_face"}[5m])) / sum(rate(facegate_decisions_total[5m]))``; the
accept rate per model version (a canary's health) is the same with ``decision="accept"`` by ``model_version``.
Labels hold no student id and no image: only model versions, stages, reasons, routes and kiosk names.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

__all__ = [
    "BATCH_SIZE",
    "DECISIONS",
    "DECISION_VALUES",
    "HTTP_REQUESTS",
    "REJECTED_REQUESTS",
    "SCORES",
    "STAGE_SECONDS",
    "child",
]

_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once per label set and kept.

    prometheus_client's ``labels()`` validates and converts its arguments and takes the metric's lock on every call
    (a few microseconds each); a check-in touched 22 of them on the event loop. The children are the same objects
    ``labels()`` returns (the registry keeps them for the life of the process: facegate never removes a label set),
    so a scrape sees exactly the same series. Label sets are bounded (stages, decisions, reasons, model versions,
    kiosk key names), and so is this cache.
    """
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN.setdefault(key, metric.labels(*values))
    return found


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)

STAGE_SECONDS = Histogram(
    "facegate_stage_seconds",
    "Latency of each verification stage (decode, detect_align, queue, embed, compare, audit, total).",
    ["stage", "model"],
    buckets=_LATENCY_BUCKETS,
)
#: The decisions a check-in can end in: the ``decision`` label's values wherever a metric has one.
DECISION_VALUES = ("accept", "reject", "retry")
DECISIONS = Counter(
    "facegate_decisions_total",
    "Verification decisions by decision, reason and model version.",
    ["decision", "reason", "model_version"],
)
SCORES = Histogram(
    "facegate_score",
    "Cosine similarity of verified faces to the enrolled template, per model version.",
    ["model_version"],
    buckets=tuple(round(-0.2 + 0.05 * i, 2) for i in range(25)),
)
BATCH_SIZE = Histogram(
    "facegate_batch_size",
    "Faces per micro-batched forward pass.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
HTTP_REQUESTS = Counter(
    "facegate_http_requests_total",
    "HTTP requests by route class and status code.",
    ["route", "status"],
)
REJECTED_REQUESTS = Counter(
    "facegate_rejected_requests_total",
    "Requests refused before reaching a model (auth, rate limit, size).",
    ["reason"],
)
