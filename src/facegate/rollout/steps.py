"""The canary-analysis step of the training pipeline: one call, on the cluster (Prometheus) or on a laptop.

:func:`analyze` is what ``facegate.pipeline.steps.analyze_canary_step`` calls. On the cluster it waits until both
versions have served enough check-ins in Prometheus, then decides; on a laptop it plays the canary itself with
:func:`facegate.rollout.canary.local_canary`.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facegate.config import Settings
    from facegate.registry.models import RegisteredVersion
    from facegate.rollout.canary import CanaryDecision, CanaryPolicy, VersionStats

__all__ = ["PROMETHEUS_ENV", "analyze"]

#: The Prometheus HTTP API the cluster canary reads (a pipeline ConfigMap key).
PROMETHEUS_ENV = "FACEGATE_PROMETHEUS_URL"
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"


def _numbers(decision: CanaryDecision, champion: VersionStats, challenger: VersionStats) -> dict[str, float]:
    """Flat numeric metrics for MLflow / KFP (``nan`` dropped)."""
    out: dict[str, float] = {"canary_promote": 1.0 if decision.decision == "promote" else 0.0}
    for role, stats in (("champion", champion), ("challenger", challenger)):
        for key, value in stats.summary().items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"canary_{role}_{key}"] = float(value)
    for check in decision.checks:
        out[f"canary_check_{check.name}_passed"] = 1.0 if check.passed else 0.0
    return {k: v for k, v in out.items() if not math.isnan(v)}


def analyze(
    *,
    champion: RegisteredVersion | None,
    challenger: RegisteredVersion,
    percent: int,
    target: str,
    photos_dir: str | None,
    settings: Settings,
    policy: CanaryPolicy | None = None,
    window: str = "30m",
    max_wait_s: float = 1800.0,
    poll_s: float = 30.0,
) -> dict[str, Any]:
    """Analyse the canary of ``challenger`` against ``champion``.

    Args:
        champion: The serving version (``None``: nothing serves yet, so there is nothing to compare; promote).
        challenger: The canary.
        percent: Its share of check-ins.
        target: ``cluster`` (Prometheus at ``$FACEGATE_PROMETHEUS_URL``) or ``local`` (played here).
        photos_dir: Local mode: check-in photos ``<student_id>/<photo>`` of enrolled students.
        settings: Resolved settings (gallery URL, home).
        policy: Analysis thresholds.
        window: Cluster mode: PromQL window.
        max_wait_s: Cluster mode: how long to wait for enough traffic before deciding anyway (then: rollback).
        poll_s: Cluster mode: seconds between looks.

    Returns:
        ``{"decision": "promote"|"rollback", "reasons": [...], "numbers": {...}, "markdown": str, "report": {...}}``.
    """
    from facegate.rollout.canary import CanaryError, CanaryPolicy, CanaryReport, PrometheusSource, analyse, local_canary

    p = policy or CanaryPolicy()
    if champion is None:
        text = f"### Canary: promote {challenger.model_version}\n\nNo champion serves yet: nothing to compare with.\n"
        return {"decision": "promote", "reasons": ["no champion"], "numbers": {"canary_promote": 1.0},
                "markdown": text, "report": {"decision": "promote", "reasons": ["no champion"]}}  # fmt: skip
    if target == "cluster":
        source = PrometheusSource(os.environ.get(PROMETHEUS_ENV) or DEFAULT_PROMETHEUS, window=window)
        deadline = time.monotonic() + max_wait_s
        while True:
            a, b = source.stats(champion.model_version), source.stats(challenger.model_version)
            if min(a.verifications, b.verifications) >= p.min_requests or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
        decision = analyse(a, b, p)
        report = CanaryReport(decision, a, b, percent, {}, {})
    else:
        if not photos_dir:
            raise CanaryError("a local canary needs check-in photos (<student_id>/<photo>)", code="no_checkins")
        from facegate.registry.models import fetch_bundle

        # Local copies: each serve process then loads a directory instead of asking the registry again.
        bundles = [fetch_bundle(v.uri, home=settings.home) for v in (champion, challenger)]
        report = local_canary(bundles[0], bundles[1], photos_dir, settings.gallery_url(), percent, policy=p,
                              env={"FACEGATE_HOME": str(settings.home)})  # fmt: skip
        decision = report.decision
    return {
        "decision": decision.decision,
        "reasons": decision.reasons,
        "numbers": _numbers(decision, report.champion, report.challenger),
        "markdown": report.to_markdown(),
        "report": report.to_dict(),
    }
