"""The dashboards' panels as data: title, unit, and PromQL per series. No Grafana library needed here.

Three dashboards, over the metrics ``facegate serve`` exports (facegate.serve.metrics and facegate.serve.opsmetrics,
plus prometheus_client's ``process_*``) and the target label ``facegate_model_version`` that the chart's
ServiceMonitor copies from the pod label (the version a pod serves; ``model_version`` is the version on a metric):

- **exam day**: check-ins per minute by hall and by kiosk, decisions by reason, p50/p99 latency, no-face and
  presentation-attack rates, HTTP 4xx/5xx;
- **rollout**: stable and canary versions side by side: traffic share, pods, decision mix, latency, mean score and
  its drift (last hour against the last week, the PrometheusRule's measure), score distribution (what the canary
  analysis's PSI compares);
- **capacity**: requests in flight, batch queue depth, refused requests by reason (429/503 causes), RSS, pods,
  batch size.

``$__rate_interval`` and ``$__range`` are Grafana's; :func:`promql` substitutes them for a plain Prometheus (the
tests run every expression against a real one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "Target", "promql"]

W = "$__rate_interval"


@dataclass(frozen=True)
class Target:
    """One series query: PromQL and its legend (Grafana ``{{label}}`` syntax)."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A panel: ``kind`` is ``timeseries``, ``stat`` or ``barchart`` (a distribution at the end of the range)."""

    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: its uid (also the ConfigMap's file name), title and panels in reading order."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


def _ratio(selector: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return (f"sum{grouping} (rate(facegate_decisions_total{{{selector}}}[{W}]))"
            f" / sum{grouping} (rate(facegate_decisions_total[{W}]))")  # fmt: skip


def _quantile(q: float, by: str = "") -> str:
    keys = f"{by}, le" if by else "le"
    return f'histogram_quantile({q}, sum by ({keys}) (rate(facegate_stage_seconds_bucket{{stage="total"}}[{W}])))'


def _mean_score(window: str) -> str:
    return (f"sum by (model_version) (rate(facegate_match_score_sum[{window}]))"
            f" / sum by (model_version) (rate(facegate_match_score_count[{window}]))")  # fmt: skip


_PODS = "facegate_inflight_requests"  # every facegate serve pod exports it from start, whatever its traffic

EXAM_DAY = Dashboard(
    uid="facegate-exam-day",
    title="facegate / exam day",
    description="Check-ins as the halls see them: throughput per hall and kiosk, outcomes, latency, errors.",
    panels=(
        Panel("Check-ins per minute by hall", "Answered check-ins; a hall going flat means its kiosks stopped.",
              "cpm", (Target(f"sum by (hall) (rate(facegate_checkins_total[{W}])) * 60", "{{hall}}"),)),
        Panel("Check-ins per minute by kiosk", "Kiosk = API key name (HALL.KIOSK).", "cpm",
              (Target(f"sum by (hall, kiosk) (rate(facegate_checkins_total[{W}])) * 60", "{{kiosk}}"),)),
        Panel("Decisions by reason", "accept/match, reject/mismatch, retry/no_face, reject/presentation_attack, ...",
              "cpm", (Target(f"sum by (decision, reason) (rate(facegate_decisions_total[{W}])) * 60",
                             "{{decision}} / {{reason}}"),)),
        Panel("Check-in latency", "End to end in the verifier (stage total).", "s",
              (Target(_quantile(0.5), "p50"), Target(_quantile(0.99), "p99"))),
        Panel("No-face rate", "Share of check-ins where no face was found: camera placement or lighting.",
              "percentunit", (Target(_ratio('reason="no_face"'), "no face"),), kind="stat", width=6),
        Panel("Presentation-attack rate", "Share of check-ins the liveness check rejected (serve.liveness).",
              "percentunit", (Target(_ratio('reason="presentation_attack"'), "presentation attack"),),
              kind="stat", width=6),
        Panel("HTTP errors by status", "4xx: callers (keys, limits, bad images); 5xx: the service.", "reqpm",
              (Target(f'sum by (status) (rate(facegate_http_requests_total{{status=~"[45].."}}[{W}])) * 60',
                      "{{status}}"),)),
    ),
)  # fmt: skip

ROLLOUT = Dashboard(
    uid="facegate-rollout",
    title="facegate / rollout",
    description="Stable and canary model versions side by side, on the numbers the canary analysis decides on.",
    panels=(
        Panel("Traffic share by serving version", "Inference requests per pod version over all of them.",
              "percentunit",
              (Target(f'sum by (facegate_model_version) (rate(facegate_http_requests_total{{route="inference"}}[{W}]))'
                      f' / scalar(sum(rate(facegate_http_requests_total{{route="inference"}}[{W}])))',
                      "{{facegate_model_version}}"),)),
        Panel("Pods by serving version", "Verifier pods scraped, per version.", "short",
              (Target(f"count by (facegate_model_version) ({_PODS})", "{{facegate_model_version}}"),)),
        Panel("Decision mix by version", "Share of each decision within a version's check-ins.", "percentunit",
              (Target(f"sum by (model_version, decision) (rate(facegate_decisions_total[{W}]))"
                      f" / on (model_version) group_left"
                      f" sum by (model_version) (rate(facegate_decisions_total[{W}]))",
                      "{{model_version}} {{decision}}"),)),
        Panel("Latency by version", "p50 and p99 of stage total per pod version.", "s",
              (Target(_quantile(0.5, "facegate_model_version"), "{{facegate_model_version}} p50"),
               Target(_quantile(0.99, "facegate_model_version"), "{{facegate_model_version}} p99"))),
        Panel("Mean match score by version", "Cosine similarity of verified faces to their template.", "short",
              (Target(_mean_score(W), "{{model_version}}"),)),
        Panel("Score drift by version", "Mean score over 1h minus over 7d (the ScoreDrift alert's measure).",
              "short", (Target(f"({_mean_score('1h')}) - ({_mean_score('7d')})", "{{model_version}}"),)),
        Panel("Score distribution by version", "Check-ins per score bucket over the range: the histograms whose "
              "PSI the canary analysis compares.", "short",
              (Target("sum by (model_version, le) (increase(facegate_score_bucket[$__range]))",
                      "{{model_version}} <= {{le}}"),), kind="barchart", width=24),
    ),
)  # fmt: skip

CAPACITY = Dashboard(
    uid="facegate-capacity",
    title="facegate / capacity",
    description="Load and headroom: requests in flight, queues, refusals, memory and pods.",
    panels=(
        Panel("Requests in flight", "Admitted inference requests per pod (serve.max_inflight: beyond, 503).",
              "short", (Target(_PODS, "{{instance}}"),)),
        Panel("Batch queue depth", "Face batches waiting for the embedding worker, per pod.", "short",
              (Target("facegate_batch_queue_depth", "{{instance}}"),)),
        Panel("Refused requests by reason", "key_busy and rate_limited answer 429; overloaded 503; "
              "no_key/bad_key 401.", "reqpm",
              (Target(f"sum by (reason) (rate(facegate_rejected_requests_total[{W}])) * 60", "{{reason}}"),)),
        Panel("Resident memory", "RSS of each facegate serve process.", "bytes",
              (Target(f"process_resident_memory_bytes and on (instance) {_PODS}", "{{instance}}"),)),
        Panel("Pods", "facegate serve pods scraped.", "short", (Target(f"count({_PODS})", "pods"),),
              kind="stat", width=6),
        Panel("Faces per batch (p50)", "Micro-batch size: near 1 means no batching benefit.", "short",
              (Target(f"histogram_quantile(0.5, sum by (le) (rate(facegate_batch_size_bucket[{W}])))", "p50"),),
              kind="stat", width=6),
    ),
)  # fmt: skip

DASHBOARDS = (EXAM_DAY, ROLLOUT, CAPACITY)


def promql(expr: str, *, rate_interval: str = "1m", range_: str = "5m") -> str:
    """``expr`` with Grafana's interval variables replaced, for a plain Prometheus query."""
    return expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
