"""Canary analysis: compare the challenger's live metrics with the champion's, then promote or roll back.

The decision (:func:`analyse`) is a pure function of two :class:`VersionStats` and a :class:`CanaryPolicy`. Its
inputs come from the verifier's Prometheus metrics (:mod:`facegate.serve.metrics`):

- **5xx rate**: ``facegate_http_requests_total{route="inference", status=~"5.."}`` over all inference requests;
- **p99 latency**: ``facegate_stage_seconds{stage="total"}`` buckets, interpolated as ``histogram_quantile`` does;
- **retry rate** (no face, low quality, several faces): ``facegate_decisions_total{decision="retry"}`` over every
  decision that had a template; **accept rate**: ``accept`` over ``accept`` + ``reject/mismatch``. A model that
  rejects everyone keeps its latency and error rate: only the accept rate shows it;
- **score distribution**: PSI between the two versions' ``facegate_score`` histograms, counted as a shift only
  when the two-sample KS test on the same buckets also rejects "same distribution" (PSI alone explodes on small
  samples); :mod:`facegate.evaluate.drift` holds both, shared with the drift report.

The HTTP and latency series have no model-version label (one serve process, one pod, serves one version), so a
version's series are selected by scrape target: on the cluster a target label ``facegate_model_version`` that the
PodMonitor copies from the predictor pods' ``facegate.io/model-version`` label; on a laptop, the ``/metrics`` of
the process serving that version.

Sources: :class:`PrometheusSource` (PromQL ``increase`` over a window, through the HTTP API) and
:func:`scrape` (the text exposition format of one process, counts since it started). :func:`local_canary` runs a
whole canary on a laptop: two ``facegate serve`` processes, replayed check-ins split by the canary percent, both
``/metrics`` scraped, and the analysis.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from facegate.errors import FacegateError

__all__ = [
    "CanaryDecision",
    "CanaryError",
    "CanaryPolicy",
    "CanaryReport",
    "Check",
    "PrometheusSource",
    "VersionStats",
    "analyse",
    "histogram_quantile",
    "local_canary",
    "scrape",
    "send_checkins",
    "stats_from_exposition",
]

Buckets = tuple[tuple[float, float], ...]
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


class CanaryError(FacegateError):
    """The canary could not be measured (metrics unreachable, no check-in photos, a server that died)."""

    code = "canary_error"


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q``-quantile of a cumulative histogram, interpolated exactly as PromQL's ``histogram_quantile``.

    Args:
        q: Quantile in [0, 1].
        buckets: ``(upper bound, cumulative count)`` pairs, including ``+Inf``.

    Returns:
        The estimate, or ``nan`` when there are no observations or no ``+Inf`` bucket.
    """
    pairs = sorted(buckets)
    if not pairs or not math.isinf(pairs[-1][0]):
        return math.nan
    counts, running = [], 0.0
    for _, c in pairs:  # windowed increases may be slightly non-monotonic: PromQL fixes that the same way
        running = max(running, c)
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(pairs) - 1:
        return pairs[-2][0] if len(pairs) > 1 else math.nan
    start = 0.0 if b == 0 else pairs[b - 1][0]
    below = 0.0 if b == 0 else counts[b - 1]
    in_bucket = counts[b] - below
    if b == 0 and pairs[0][0] <= 0:
        return pairs[0][0]
    return start + (pairs[b][0] - start) * ((rank - below) / in_bucket if in_bucket > 0 else 1.0)


def _per_bucket(buckets: Buckets, edges: Sequence[float]) -> list[float]:
    cum = dict(buckets)
    out, prev = [], 0.0
    for le in edges:
        value = max(cum.get(le, prev), prev)
        out.append(value - prev)
        prev = value
    return out


@dataclass(frozen=True)
class VersionStats:
    """One model version's traffic over the analysis window.

    Attributes:
        model_version: The version.
        requests: Inference HTTP requests.
        errors_5xx: Those answered with a 5xx status.
        decisions: Count per ``"decision:reason"`` (``accept:match``, ``retry:no_face``, ...).
        latency_buckets: ``facegate_stage_seconds{stage="total"}``: ``(le, cumulative count)``.
        score_buckets: ``facegate_score``: ``(le, cumulative count)``.
    """

    model_version: str
    requests: float = 0.0
    errors_5xx: float = 0.0
    decisions: Mapping[str, float] = field(default_factory=dict)
    latency_buckets: Buckets = ()
    score_buckets: Buckets = ()

    def _count(self, decision: str, reason: str | None = None) -> float:
        return sum(
            v for k, v in self.decisions.items() if k.split(":")[0] == decision and reason in (None, k.split(":")[1])
        )

    @property
    def verifications(self) -> float:
        """Decisions made against an enrolled template (``unknown_student`` rejects are not the model's)."""
        return sum(self.decisions.values()) - self._count("reject", "unknown_student")

    @property
    def error_rate(self) -> float:
        """5xx share of inference requests (0 without requests)."""
        return self.errors_5xx / self.requests if self.requests > 0 else 0.0

    @property
    def retry_rate(self) -> float:
        """Share of verifications answered ``retry`` (no face, low quality, several faces)."""
        n = self.verifications
        return self._count("retry") / n if n > 0 else math.nan

    @property
    def accept_rate(self) -> float:
        """Share of compared faces that were accepted."""
        compared = self._count("accept") + self._count("reject", "mismatch")
        return self._count("accept") / compared if compared > 0 else math.nan

    @property
    def p99_s(self) -> float:
        """p99 of the end-to-end verification time, seconds (``nan`` without observations)."""
        return histogram_quantile(0.99, self.latency_buckets)

    def summary(self) -> dict[str, Any]:
        """The derived numbers (JSON-ready; ``nan`` becomes ``None``)."""
        values = {
            "model_version": self.model_version,
            "requests": self.requests,
            "verifications": self.verifications,
            "error_rate": self.error_rate,
            "retry_rate": self.retry_rate,
            "accept_rate": self.accept_rate,
            "p99_s": self.p99_s,
        }
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


@dataclass(frozen=True)
class CanaryPolicy:
    """Thresholds of the canary analysis; the challenger is promoted only if every check passes.

    Attributes:
        min_requests: Verifications each version needs; less is not evidence, and no evidence means rollback.
        max_error_rate_increase: Allowed rise of the 5xx share (absolute).
        max_p99_ratio: Allowed p99 latency as a multiple of the champion's ...
        p99_slack_s: ... or the champion's plus this many seconds, whichever is larger (bucket resolution).
        max_retry_rate_increase: Allowed rise of the retry share (absolute).
        max_accept_rate_drop: Allowed fall of the accept share (absolute).
        max_score_psi: Allowed PSI between the score histograms (0.25: a significant shift) ...
        score_alpha: ... unless the KS test's p-value is at least this (the shift may be sampling noise).
    """

    min_requests: int = 20
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    p99_slack_s: float = 0.05
    max_retry_rate_increase: float = 0.05
    max_accept_rate_drop: float = 0.10
    max_score_psi: float = 0.25
    score_alpha: float = 0.01


@dataclass(frozen=True)
class Check:
    """One comparison: its name, both values, the limit on the challenger's value, and whether it passed."""

    name: str
    champion: float | None
    challenger: float | None
    limit: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class CanaryDecision:
    """``promote`` or ``rollback``, with every check's numbers."""

    decision: Literal["promote", "rollback"]
    checks: tuple[Check, ...]

    @property
    def reasons(self) -> list[str]:
        """The failed checks' details (empty when promoted)."""
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"decision": self.decision, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def analyse(champion: VersionStats, challenger: VersionStats, policy: CanaryPolicy | None = None) -> CanaryDecision:
    """Decide whether the challenger (the canary) is promoted; a pure function of its arguments.

    Args:
        champion: The serving version's stats over the window.
        challenger: The canary's stats over the same window.
        policy: Thresholds (defaults: :class:`CanaryPolicy`).

    Returns:
        ``promote`` when every check passes, else ``rollback``; each check carries its numbers.
    """
    p = policy or CanaryPolicy()
    checks: list[Check] = []

    def add(name: str, a: float, b: float, limit: float, ok: bool, what: str) -> None:
        detail = f"{name}: challenger {b:.4g} vs champion {a:.4g} (limit {limit:.4g}){'' if ok else ' — ' + what}"
        checks.append(Check(name, _num(a), _num(b), _num(limit), ok, detail))

    n_a, n_b = champion.verifications, challenger.verifications
    enough = min(n_a, n_b) >= p.min_requests
    add("traffic", n_a, n_b, float(p.min_requests), enough, "too few verifications to judge")

    limit = champion.error_rate + p.max_error_rate_increase
    add("error_rate", champion.error_rate, challenger.error_rate, limit, challenger.error_rate <= limit,
        "more server errors")  # fmt: skip

    a99, b99 = champion.p99_s, challenger.p99_s
    limit = max(a99 * p.max_p99_ratio, a99 + p.p99_slack_s) if not math.isnan(a99) else math.inf
    add("p99_latency_s", a99, b99, limit, math.isnan(b99) or b99 <= limit, "slower")

    a, b = champion.retry_rate, challenger.retry_rate
    limit = (0.0 if math.isnan(a) else a) + p.max_retry_rate_increase
    add("retry_rate", a, b, limit, math.isnan(b) or b <= limit, "more retries (no face / low quality)")

    a, b = champion.accept_rate, challenger.accept_rate
    limit = (1.0 if math.isnan(a) else a) - p.max_accept_rate_drop
    add("accept_rate", a, b, limit, not math.isnan(b) and b >= limit, "accepts fewer students")

    from facegate.evaluate.drift import ks_binned, psi

    edges = sorted({le for le, _ in champion.score_buckets} | {le for le, _ in challenger.score_buckets})
    ref, new = _per_bucket(champion.score_buckets, edges), _per_bucket(challenger.score_buckets, edges)
    value, (d, pvalue) = psi(ref, new), ks_binned(ref, new)
    shifted = math.isnan(value) or (value > p.max_score_psi and pvalue < p.score_alpha)
    add("score_psi", 0.0, value, p.max_score_psi, not shifted,
        f"score distribution shifted (KS D={d:.3f}, p={pvalue:.2g} < {p.score_alpha})")  # fmt: skip

    return CanaryDecision("promote" if all(c.passed for c in checks) else "rollback", tuple(checks))


# -- metric sources ------------------------------------------------------------------------------------------------
def stats_from_exposition(text: str, model_version: str) -> VersionStats:
    """Stats of one serve process from its ``/metrics`` text (counts since the process started).

    Args:
        text: Prometheus text exposition format.
        model_version: The version this process serves (decisions and scores are filtered by it).
    """
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0.0
    decisions: dict[str, float] = {}
    latency: dict[float, float] = {}
    scores: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == "facegate_http_requests_total" and labels.get("route") == "inference":
                requests += s.value
                errors += s.value if labels.get("status", "").startswith("5") else 0.0
            elif s.name == "facegate_decisions_total" and labels.get("model_version") == model_version:
                key = f"{labels.get('decision')}:{labels.get('reason')}"
                decisions[key] = decisions.get(key, 0.0) + s.value
            elif s.name == "facegate_stage_seconds_bucket" and labels.get("stage") == "total":
                le = float(labels["le"])
                latency[le] = latency.get(le, 0.0) + s.value
            elif s.name == "facegate_score_bucket" and labels.get("model_version") == model_version:
                scores[float(labels["le"])] = s.value
    return VersionStats(model_version, requests, errors, decisions, tuple(sorted(latency.items())),
                        tuple(sorted(scores.items())))  # fmt: skip


def scrape(metrics_url: str, model_version: str, *, timeout_s: float = 10.0) -> VersionStats:
    """Scrape one process's ``/metrics`` and read its stats (see :func:`stats_from_exposition`).

    Raises:
        CanaryError: If the endpoint does not answer 200.
    """
    import httpx

    try:
        r = httpx.get(metrics_url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise CanaryError(f"cannot scrape {metrics_url}: {exc}") from None
    if r.status_code != 200:
        raise CanaryError(f"{metrics_url} answered {r.status_code}")
    return stats_from_exposition(r.text, model_version)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusSource:
    """Per-version stats from a Prometheus server's HTTP API (``increase`` over a window ending now).

    Args:
        url: The server, e.g. ``http://prometheus-operated.monitoring:9090``.
        window: PromQL range, e.g. ``"10m"``; it should span the canary's traffic.
        version_label: Target label naming the version a scraped pod serves (its value is the version as a label,
            :func:`facegate.rollout.kserve.model_version_label`).
        timeout_s: Per-query timeout.
        at: Evaluation time (Unix seconds) of every query; now when omitted. Fixing it makes the numbers
            reproducible while Prometheus keeps scraping.
    """

    def __init__(
        self,
        url: str,
        *,
        window: str = "10m",
        version_label: str = "facegate_model_version",
        timeout_s: float = 10.0,
        at: float | None = None,
    ) -> None:
        self.url, self.window, self.version_label, self.timeout_s = url.rstrip("/"), window, version_label, timeout_s
        self.at = at

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Run an instant query; ``[(labels, value), ...]`` of a vector result (NaN samples dropped).

        Raises:
            CanaryError: If Prometheus is unreachable or answers with an error.
        """
        import httpx

        try:
            params = {"query": promql, **({"time": f"{self.at:.3f}"} if self.at is not None else {})}
            r = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout_s)
            body = r.json()
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise CanaryError(f"Prometheus query failed at {self.url}: {exc}") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise CanaryError(f"Prometheus refused the query: {body.get('error', r.status_code)}")
        out = []
        for item in body["data"]["result"]:
            value = float(item["value"][1])
            if not math.isnan(value):
                out.append((dict(item["metric"]), value))
        return out

    def stats(self, model_version: str, *, selector: str | None = None) -> VersionStats:
        """One version's stats over the window.

        Args:
            model_version: The version.
            selector: PromQL label matchers choosing its scrape targets (default
                ``facegate_model_version="<version as a label>"``).
        """
        from facegate.rollout.kserve import model_version_label

        sel = selector or f"{self.version_label}={_quote(model_version_label(model_version))}"
        mv = f"model_version={_quote(model_version)}"
        w = self.window
        http = self.query(f'sum by (status) (increase(facegate_http_requests_total{{route="inference",{sel}}}[{w}]))')
        decisions = self.query(f"sum by (decision, reason) (increase(facegate_decisions_total{{{sel},{mv}}}[{w}]))")
        latency = self.query(f'sum by (le) (increase(facegate_stage_seconds_bucket{{stage="total",{sel}}}[{w}]))')
        scores = self.query(f"sum by (le) (increase(facegate_score_bucket{{{sel},{mv}}}[{w}]))")
        return VersionStats(
            model_version,
            requests=sum(v for _, v in http),
            errors_5xx=sum(v for m, v in http if m.get("status", "").startswith("5")),
            decisions={f"{m.get('decision')}:{m.get('reason')}": v for m, v in decisions},
            latency_buckets=tuple(sorted((float(m["le"]), v) for m, v in latency)),
            score_buckets=tuple(sorted((float(m["le"]), v) for m, v in scores)),
        )


# -- the laptop canary ---------------------------------------------------------------------------------------------
def send_checkins(
    url: str, api_key: str, checkins: Sequence[tuple[str, Path]], *, concurrency: int = 2, model_name: str = "verifier"
) -> dict[str, int]:
    """Send check-ins (``(student_id, photo)``) to a verifier over the v1 protocol.

    Returns:
        Count per HTTP status (``"error"`` for a request that got no answer).
    """
    import base64

    import httpx

    statuses: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:

        def one(item: tuple[str, Path]) -> str:
            sid, photo = item
            body = {"instances": [{"image": {"b64": base64.b64encode(photo.read_bytes()).decode()}, "student_id": sid}]}
            try:
                return str(client.post(f"/v1/models/{model_name}:predict", json=body).status_code)
            except httpx.HTTPError:
                return "error"

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            for status in pool.map(one, checkins):
                statuses[status] = statuses.get(status, 0) + 1
    return statuses


@dataclass(frozen=True)
class CanaryReport:
    """A laptop canary's outcome.

    Attributes:
        decision: The analysis.
        champion: The champion's stats.
        challenger: The challenger's stats.
        percent: Share of check-ins sent to the challenger.
        sent: Check-ins sent per version (``{"champion": n, "challenger": m}``).
        statuses: HTTP statuses per version.
    """

    decision: CanaryDecision
    champion: VersionStats
    challenger: VersionStats
    percent: int
    sent: dict[str, int]
    statuses: dict[str, dict[str, int]]

    @property
    def promote(self) -> bool:
        """Whether the challenger is promoted."""
        return self.decision.decision == "promote"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **self.decision.to_dict(),
            "percent": self.percent,
            "sent": self.sent,
            "statuses": self.statuses,
            "champion": self.champion.summary(),
            "challenger": self.challenger.summary(),
        }

    def to_markdown(self) -> str:
        """The decision and every check as a Markdown table (for a pipeline's report)."""
        rows = [
            f"| {c.name} | {c.champion} | {c.challenger} | {c.limit} | {'pass' if c.passed else 'FAIL'} |"
            for c in self.decision.checks
        ]
        return "\n".join(
            [
                f"### Canary: {self.decision.decision} {self.challenger.model_version} "
                f"(champion {self.champion.model_version}, {self.percent} % of traffic)",
                "",
                "| check | champion | challenger | limit | result |",
                "|---|---|---|---|---|",
                *rows,
            ]
        )


def bundle_version(model: str | Path) -> str:
    """The version string a model serves under (``facegate.json`` ``version``, a registry version's, or the model's)."""
    text = str(model)
    if text.startswith("models:/"):
        from facegate.registry.models import get_version

        return get_version(text).model_version
    meta = Path(text) / "facegate.json"
    if meta.is_file():
        version = json.loads(meta.read_text()).get("version")
        if version:
            return str(version)
    from facegate.bundles import load_embedder

    return load_embedder(text).version


def _checkins(photos: Path) -> list[tuple[str, Path]]:
    items = [
        (d.name, f)
        for d in sorted(p for p in photos.iterdir() if p.is_dir())
        for f in sorted(d.iterdir())
        if f.suffix.lower() in PHOTO_SUFFIXES
    ]
    if not items:
        raise CanaryError(f"{photos}: no check-in photos (expected <student_id>/<photo>.jpg)", code="no_checkins")
    return items


def _enrolled(items: list[tuple[str, Path]], gallery_url: str, version: str) -> list[tuple[str, Path]]:
    """The check-ins of students the gallery can verify (others would only measure ``unknown_student``)."""
    from facegate.rollout.kserve import _open_gallery
    from facegate.serve.gallery import GalleryError

    gallery = _open_gallery(gallery_url)
    known: dict[str, bool] = {}
    try:
        for sid, _ in items:
            if sid not in known:
                try:
                    known[sid] = gallery.template(sid, version) is not None
                except GalleryError:  # a folder name that is not a valid student id
                    known[sid] = False
    finally:
        gallery.engine.dispose()
    kept = [item for item in items if known[item[0]]]
    if not kept:
        raise CanaryError(
            f"none of the {len(known)} students in the check-in photos is enrolled for {version}",
            code="no_enrolled_students",
        )
    return kept


def split(n: int, percent: int) -> list[bool]:
    """Which of ``n`` requests go to the canary: exactly ``floor(n * percent / 100)``, spread evenly."""
    return [(i + 1) * percent // 100 > i * percent // 100 for i in range(n)]


def local_canary(
    champion: str | Path,
    challenger: str | Path,
    photos: str | Path,
    gallery_url: str,
    percent: int,
    *,
    policy: CanaryPolicy | None = None,
    requests: int | None = None,
    concurrency: int = 2,
    env: Mapping[str, str] | None = None,
) -> CanaryReport:
    """Run a canary on this machine and analyse it.

    Serves both models as ``facegate serve`` processes on 127.0.0.1 sharing the gallery, replays check-ins
    (``photos/<student_id>/<photo>``, cycled) split by ``percent``, scrapes both ``/metrics`` and analyses them.

    Args:
        champion: The serving model (bundle directory or ``models:/`` URI).
        challenger: The candidate.
        photos: Check-in photos by student id; students not enrolled in the gallery are left out.
        gallery_url: The gallery's SQLAlchemy URL; ``FACEGATE_GALLERY_KEYS`` must be set.
        percent: Share of check-ins sent to the challenger (1-99).
        policy: Analysis thresholds.
        requests: Check-ins to send in all (default: enough for ``policy.min_requests`` on each side, at least
            one round of the photos).
        concurrency: Requests in flight per server.
        env: Extra environment for the servers.

    Returns:
        The report; ``report.promote`` says whether to promote.

    Raises:
        RolloutError: If the gallery has no (or too few) templates for the challenger.
        CanaryError: If a server does not start, or no check-in photos are found.
    """
    from facegate.rollout.kserve import RolloutError, require_templates
    from facegate.rollout.procs import ServeProcess

    if not 1 <= percent <= 99:
        raise RolloutError(f"a canary takes 1-99 % of traffic, got {percent}", code="bad_percent")
    p = policy or CanaryPolicy()
    versions = {"champion": bundle_version(champion), "challenger": bundle_version(challenger)}
    require_templates(gallery_url, versions["challenger"], baseline_version=versions["champion"])
    items = _enrolled(_checkins(Path(photos)), gallery_url, versions["champion"])
    n = requests or max(len(items), math.ceil(p.min_requests * 100 / min(percent, 100 - percent)))
    routes = split(n, percent)
    batches: dict[str, list[tuple[str, Path]]] = {"champion": [], "challenger": []}
    for i, to_canary in enumerate(routes):
        batches["challenger" if to_canary else "champion"].append(items[i % len(items)])
    with contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facegate-canary-")))
        servers = {role: ServeProcess(model, gallery_url, env=env, log_path=logs / f"{role}.log")
                   for role, model in (("champion", champion), ("challenger", challenger))}  # fmt: skip
        for s in servers.values():
            stack.callback(s.stop)
            s.launch()  # both load at once
        for s in servers.values():
            s.wait_ready()
        with ThreadPoolExecutor(max_workers=2) as pool:  # both versions take traffic at the same time, as live
            futures = {
                role: pool.submit(send_checkins, s.url, s.admin_key, batches[role], concurrency=concurrency)
                for role, s in servers.items()
            }
            statuses = {role: f.result() for role, f in futures.items()}
        stats = {role: scrape(s.metrics_url, versions[role]) for role, s in servers.items()}
    return CanaryReport(
        decision=analyse(stats["champion"], stats["challenger"], p),
        champion=stats["champion"],
        challenger=stats["challenger"],
        percent=percent,
        sent={role: len(batch) for role, batch in batches.items()},
        statuses=statuses,
    )
