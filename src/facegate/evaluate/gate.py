"""The promotion gate: does a challenger model beat the champion, significantly, on the same pairs?

A fixed delta between two accuracies is not evidence: on 1,200 pairs one model can lead another by half a point by
chance. The gate therefore scores champion and challenger on the *same* pairs and asks three things, all of which
must hold for a promotion:

1. **Accuracy** at each model's own deployment threshold (the threshold it would serve with) beats the champion's
   by more than ``margin``.
2. **TAR at the target FAR** beats the champion's by more than ``margin``. Where the impostor count cannot resolve
   the target FAR (fewer than ``1 / far`` impostor pairs), the smallest FAR it can resolve is used and reported.
3. **Significance on paired decisions**:
   - McNemar's exact test on the pairs whose decision flips between the models: ``b`` pairs only the champion gets
     right, ``c`` only the challenger. Under "no difference" ``c ~ Binomial(b + c, 1/2)``; the one-sided p-value
     ``P(C >= c)`` must be below ``alpha``.
   - A paired bootstrap (pairs resampled within each class, so the FAR stays resolvable) of the TAR gain; the lower
     end of its ``1 - alpha`` one-sided interval must be above zero.

4. **Equal treatment**, where the gate pairs carry group labels: the challenger must not widen the gap between
   groups (FNMR ratio, FMR ratio, fairness discrepancy rate) beyond ``policy.fairness``'s margins, judged on a paired
   identity bootstrap (:mod:`facegate.evaluate.fairness_gate`). A wider gap blocks promotion even when accuracy
   improves.

The decision is a pure function of the labels and the two score vectors (:func:`compare_models`); its numbers and
reasons go to MLflow and to the pipeline run's Markdown report (:meth:`GateDecision.to_markdown`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from facegate.evaluate.fairness_gate import FairnessPolicy, compare_fairness, fairness_markdown
from facegate.evaluate.groups import PairGroups
from facegate.evaluate.metrics import best_accuracy_threshold, tar_at_far

__all__ = ["GateDecision", "GatePolicy", "ModelScores", "compare_models", "mcnemar_exact"]


@dataclass(frozen=True)
class GatePolicy:
    """What a challenger must show.

    Attributes:
        margin: Accuracy and TAR must each exceed the champion's by more than this (absolute, e.g. 0.002).
        target_far: FAR at which TAR is compared.
        alpha: Significance level of the one-sided tests.
        bootstrap: Bootstrap resamples for the TAR gain's interval.
        seed: Bootstrap seed (the decision is reproducible).
        thresholds: ``deployed`` judges each model's decisions at its own deployment threshold (as given);
            ``fitted`` at each model's accuracy-optimal threshold on these very pairs, the same rule for both. Use
            ``fitted`` when one model's deployment threshold was itself chosen on the gate pairs (a pipeline's
            challenger): otherwise that model is flattered and the other is not.
        fairness: Margins of the equal-treatment condition (used when the gate is given groups).
    """

    margin: float = 0.0
    target_far: float = 1e-3
    alpha: float = 0.05
    bootstrap: int = 1000
    seed: int = 0
    thresholds: Literal["deployed", "fitted"] = "deployed"
    fairness: FairnessPolicy = field(default_factory=FairnessPolicy)


@dataclass(frozen=True)
class ModelScores:
    """One model's scores on the gate pairs.

    Attributes:
        name: How the report names it (``models:/facegate/3``, a bundle's version, ...).
        scores: Cosine score per pair (failed pairs already at the lowest score, as evaluation reports them).
        threshold: The model's deployment threshold; ``None`` picks the accuracy-optimal one on these pairs, which
            flatters that model, and the report says so.
    """

    name: str
    scores: np.ndarray
    threshold: float | None = None


@dataclass
class GateDecision:
    """The gate's verdict with every number behind it."""

    promote: bool
    reasons: list[str]
    champion: str | None
    challenger: str
    n_pairs: int
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def to_markdown(self) -> str:
        """The decision as a Markdown section (the pipeline run's report)."""
        verdict = "PROMOTE the challenger" if self.promote else "KEEP the champion"
        lines = [f"## Gate decision: {verdict}", ""]
        lines += [f"- {r}" for r in self.reasons]
        n = self.numbers
        if self.champion is not None and "accuracy" in n:
            lines += [
                "",
                f"Scored on the same {self.n_pairs} pairs.",
                "",
                "| | champion | challenger | gain |",
                "|---|---|---|---|",
                f"| model | `{self.champion}` | `{self.challenger}` | |",
                f"| threshold | {n['threshold']['champion']:.4f} | {n['threshold']['challenger']:.4f} | |",
                f"| accuracy | {n['accuracy']['champion']:.4f} | {n['accuracy']['challenger']:.4f} | "
                f"{n['accuracy']['gain']:+.4f} |",
                f"| TAR @ FAR {n['tar']['far']:g} | {n['tar']['champion']:.4f} | {n['tar']['challenger']:.4f} | "
                f"{n['tar']['gain']:+.4f} |",
                "",
                f"McNemar (exact, one-sided): {n['mcnemar']['only_champion_right']} pairs only the champion gets "
                f"right, {n['mcnemar']['only_challenger_right']} only the challenger; "
                f"p = {n['mcnemar']['p_value']:.4g} (alpha {n['policy']['alpha']:g}).",
                f"TAR gain, paired bootstrap ({n['tar']['bootstrap']} resamples): one-sided "
                f"{1 - n['policy']['alpha']:.0%} lower bound {n['tar']['gain_lower']:+.4f}.",
            ]
        if n.get("fairness"):
            lines += ["", fairness_markdown(n["fairness"], FairnessPolicy(**n["policy"]["fairness"]))]
        return "\n".join(lines) + "\n"


def mcnemar_exact(only_a_right: int, only_b_right: int) -> float:
    """One-sided exact McNemar p-value that model B is better than model A.

    Args:
        only_a_right: Pairs model A decides correctly and model B does not.
        only_b_right: Pairs model B decides correctly and model A does not.

    Returns:
        ``P(X >= only_b_right)`` for ``X ~ Binomial(only_a_right + only_b_right, 1/2)``; 1.0 with no discordant pair.
    """
    n = only_a_right + only_b_right
    if n == 0:
        return 1.0
    # Sum in log space: n can be thousands, where comb(n, k) / 2**n under- and overflows floats.
    log_half = n * math.log(2.0)
    logs = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - log_half for k in range(only_b_right, n + 1)
    ]
    top = max(logs)
    return float(min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs)))


def _resolvable_far(labels: np.ndarray, far: float) -> float:
    n_neg = int((~labels).sum())
    # A hair above 1/n: n * (1/n) rounds below 1 for some n, and tar_at_far would then call it unresolvable.
    return max(far, (1.0 + 1e-9) / n_neg) if n_neg else far


def _tar(labels: np.ndarray, scores: np.ndarray, far: float) -> float:
    got = tar_at_far(labels, scores, far)
    return 0.0 if got is None else got[0]


def compare_models(
    labels: np.ndarray,
    champion: ModelScores | None,
    challenger: ModelScores,
    policy: GatePolicy | None = None,
    groups: Sequence[PairGroups] = (),
) -> GateDecision:
    """Decide whether ``challenger`` replaces ``champion`` (see the module docstring for the rule).

    Args:
        labels: Truthy for genuine pairs, one per pair.
        champion: The serving model's scores on the same pairs; ``None`` when nothing serves yet (the challenger is
            then promoted: there is nothing to protect).
        challenger: The candidate's scores.
        policy: Margin, target FAR, significance, equal-treatment margins.
        groups: Label columns over the same pairs (:func:`~facegate.evaluate.groups.assign_groups`); each adds an
            equal-treatment check ``fairness_<column>``.

    Raises:
        ValueError: If score vectors and labels differ in length or a class is missing.
    """
    policy = policy or GatePolicy()
    y = np.asarray(labels).astype(bool)
    if champion is None:
        return GateDecision(
            promote=True,
            reasons=["no champion is registered: the first model that passes its export gates becomes champion"],
            champion=None,
            challenger=challenger.name,
            n_pairs=int(y.size),
            numbers={"policy": asdict(policy)},
        )
    a = np.asarray(champion.scores, dtype=np.float64)
    b = np.asarray(challenger.scores, dtype=np.float64)
    if not (a.shape == b.shape == y.shape):
        raise ValueError(f"pairs differ: {y.size} labels, {a.size} champion scores, {b.size} challenger scores")
    if y.all() or not y.any():
        raise ValueError("the gate needs genuine and impostor pairs")

    notes: list[str] = []
    thresholds = {}
    if policy.thresholds == "fitted":
        notes.append("decisions at each model's accuracy-optimal threshold on these pairs (the same rule for both)")
    for role, m in (("champion", champion), ("challenger", challenger)):
        if policy.thresholds == "fitted" or m.threshold is None:
            thresholds[role] = best_accuracy_threshold(y, m.scores)[0]
            if policy.thresholds == "deployed":
                notes.append(f"the {role} has no deployment threshold: its best threshold on these pairs is used")
        else:
            thresholds[role] = float(m.threshold)
    right_a = (a >= thresholds["champion"]) == y
    right_b = (b >= thresholds["challenger"]) == y
    acc_a, acc_b = float(right_a.mean()), float(right_b.mean())
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p_value = mcnemar_exact(only_a, only_b)

    far = _resolvable_far(y, policy.target_far)
    if far != policy.target_far:
        notes.append(
            f"{int((~y).sum())} impostor pairs cannot resolve FAR {policy.target_far:g}: TAR compared at FAR {far:.3g}"
        )
    tar_a, tar_b = _tar(y, a, far), _tar(y, b, far)
    rng = np.random.default_rng(policy.seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    gains = np.empty(policy.bootstrap)
    for i in range(policy.bootstrap):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        gains[i] = _tar(y[idx], b[idx], far) - _tar(y[idx], a[idx], far)
    gain_lower = float(np.quantile(gains, policy.alpha)) if policy.bootstrap else float("-inf")

    margin, alpha = policy.margin, policy.alpha
    checks = {
        "accuracy": (acc_b - acc_a > margin, f"accuracy gain {acc_b - acc_a:+.4f} vs margin {margin:g}"),
        "tar": (tar_b - tar_a > margin, f"TAR@FAR {far:.3g} gain {tar_b - tar_a:+.4f} vs margin {margin:g}"),
        "mcnemar": (p_value < alpha, f"McNemar p = {p_value:.4g} vs alpha {alpha:g} ({only_b} vs {only_a} flips)"),
        "bootstrap": (gain_lower > 0.0, f"TAR gain lower bound {gain_lower:+.4f} (one-sided {1 - alpha:.0%})"),
    }
    fairness = [
        compare_fairness(pg, y, (a, thresholds["champion"]), (b, thresholds["challenger"]), policy.fairness)
        for pg in groups
    ]
    for f in fairness:
        judged = [v for v in f["measures"].values() if v["judged"]]
        checks[f"fairness_{f['column']}"] = (
            f["passed"],
            f"equal treatment by {f['column']}: "
            + ("no gap widened beyond its margin" if f["passed"] else "a gap between groups widened beyond its margin")
            + ("" if judged else " (no measure could be judged: too few groups large enough to rank)"),
        )
        notes += f["reasons"]
    promote = all(ok for ok, _ in checks.values())
    reasons = [("passed: " if ok else "failed: ") + text for ok, text in checks.values()] + notes
    return GateDecision(
        promote=promote,
        reasons=reasons,
        champion=champion.name,
        challenger=challenger.name,
        n_pairs=int(y.size),
        numbers={
            "policy": asdict(policy),
            "threshold": thresholds,
            "accuracy": {"champion": acc_a, "challenger": acc_b, "gain": acc_b - acc_a},
            "tar": {
                "far": far,
                "champion": tar_a,
                "challenger": tar_b,
                "gain": tar_b - tar_a,
                "gain_lower": gain_lower,
                "bootstrap": policy.bootstrap,
            },
            "mcnemar": {"only_champion_right": only_a, "only_challenger_right": only_b, "p_value": p_value},
            "checks": {k: ok for k, (ok, _) in checks.items()},
            "fairness": fairness,
        },
    )
