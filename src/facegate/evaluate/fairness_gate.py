"""The gate's equal-treatment condition: a challenger must not widen the gap between groups.

Accuracy can improve on average while one group of students is refused more often than before: a model that is
better for the majority and worse for a minority raises the mean. The gate therefore also compares, per label
column, three differentials of champion and challenger on the same pairs, each at the model's own decision
threshold (see :mod:`facegate.evaluate.groups`):

- the max/min **FNMR ratio** (how many times more often the worst-served group is wrongly refused);
- the max/min **FMR ratio** within groups (wrongly accepted impostors);
- the **fairness discrepancy rate** (1 = even; lower = wider gaps).

The *widening* is challenger minus champion for the ratios and champion minus challenger for the FDR, so positive
always means "less equal". It is judged on a **paired identity bootstrap** (the same resampled people score both
models), by one of two rules (``FairnessPolicy.rule``):

- ``widening`` (default): the challenger is refused when the one-sided ``1 - alpha`` *lower* bound of the widening
  is above the margin: the people in the test set show, beyond chance, that the gap grew by more than the margin.
- ``no_widening``: the challenger must show the opposite, that the *upper* bound is within the margin (a
  non-inferiority test). It protects more, but max/min ratios of rates of a few percent over a few hundred pairs are
  so noisy that on sets of LFW's size it refuses even a challenger that improves every group evenly (the tests show
  this): use it with large, labelled gate sets.

Where too few groups are large enough to rank, the measure cannot be judged and is reported as such; it neither
passes nor blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from facegate.evaluate.groups import GroupPolicy, PairGroups, bootstrap_differentials, column_report

__all__ = ["MEASURES", "FairnessPolicy", "compare_fairness", "fairness_markdown"]

#: Measure -> (label in reports, sign that turns "challenger minus champion" into "widening").
MEASURES = {"fnmr_ratio": ("FNMR max/min ratio", 1.0), "fmr_ratio": ("FMR max/min ratio", 1.0), "fdr": ("FDR", -1.0)}


@dataclass(frozen=True)
class FairnessPolicy:
    """How much a challenger may widen the gaps between groups.

    Attributes:
        fnmr_ratio_margin: Largest tolerated growth of the FNMR max/min ratio (e.g. 0.25: from 1.50 to 1.75).
        fmr_ratio_margin: Largest tolerated growth of the FMR max/min ratio.
        fdr_margin: Largest tolerated drop of the fairness discrepancy rate.
        alpha: One-sided level of the bootstrap bound.
        bootstrap: Identity-bootstrap replicates.
        seed: Bootstrap seed.
        min_pairs: Fewest pairs behind a group's rate for it to be ranked.
        min_identities: Fewest identities behind a group's rate for it to be ranked.
        rule: ``widening`` refuses a significant widening beyond the margin; ``no_widening`` demands evidence that
            the widening stays within it (see the module docstring).
    """

    fnmr_ratio_margin: float = 0.25
    fmr_ratio_margin: float = 0.5
    fdr_margin: float = 0.01
    alpha: float = 0.05
    bootstrap: int = 1000
    seed: int = 0
    min_pairs: int = 100
    min_identities: int = 10
    rule: Literal["widening", "no_widening"] = "widening"

    def margin(self, measure: str) -> float:
        """The margin of one measure."""
        return float(getattr(self, f"{measure}_margin"))


def compare_fairness(
    pg: PairGroups,
    labels: np.ndarray,
    champion: tuple[np.ndarray, float],
    challenger: tuple[np.ndarray, float],
    policy: FairnessPolicy | None = None,
) -> dict[str, Any]:
    """Judge one label column (see the module docstring).

    Args:
        pg: The column's groups over the gate pairs.
        labels: Truthy for genuine pairs.
        champion: ``(scores, threshold)`` of the champion.
        challenger: ``(scores, threshold)`` of the challenger.
        policy: Margins and bootstrap.

    Returns:
        ``{"column", "passed", "reasons", "measures": {measure: {...}}, "groups": {...}}``; ``passed`` is False when
        any judged measure's widening bound exceeds its margin.
    """
    policy = policy or FairnessPolicy()
    gp = GroupPolicy(policy.min_pairs, policy.min_identities, policy.alpha, policy.bootstrap, policy.seed)
    y = np.asarray(labels, dtype=bool)
    usable = np.ones(y.size, dtype=bool)  # the gate scores unusable images as non-matches, for both models alike
    point = replace(gp, bootstrap=0)  # the paired bootstrap below replaces each model's own
    reports = {
        role: column_report(pg, y, np.asarray(s, dtype=np.float64), usable, float(t), {}, point)
        for role, (s, t) in (("champion", champion), ("challenger", challenger))
    }
    # Which groups are large enough to rank depends on pairs and people only, so it is the same for both models.
    groups = reports["champion"]["groups"]
    rank_fnmr = np.array([not groups[n]["fnmr"]["inconclusive"] for n in pg.names])
    rank_fmr = np.array([not groups[n]["fmr_within"]["inconclusive"] for n in pg.names])
    decisions = [np.asarray(s, dtype=np.float64) >= float(t) for s, t in (champion, challenger)]
    boot_a, boot_b = bootstrap_differentials(pg, y, usable, decisions, rank_fnmr, rank_fmr, gp)
    measures: dict[str, Any] = {}
    reasons: list[str] = []
    passed = True
    for key, (label, sign) in MEASURES.items():
        a = reports["champion"]["differentials"][key]["value"]
        b = reports["challenger"]["differentials"][key]["value"]
        margin = policy.margin(key)
        if a is None or b is None:
            measures[key] = {"champion": a, "challenger": b, "judged": False, "margin": margin}
            reasons.append(f"{pg.column}: {label} not judged (fewer than two groups large enough to rank)")
            continue
        widening = sign * (b - a)
        diffs = sign * (boot_b[key] - boot_a[key])
        diffs = diffs[np.isfinite(diffs)]
        lower = float(np.quantile(diffs, policy.alpha)) if diffs.size else float("-inf")
        upper = float(np.quantile(diffs, 1 - policy.alpha)) if diffs.size else float("inf")
        ok = (lower <= margin) if policy.rule == "widening" else (upper <= margin)
        passed &= ok
        measures[key] = {
            "champion": a,
            "challenger": b,
            "widening": widening,
            "widening_lower": lower,
            "widening_upper": upper,
            "margin": margin,
            "judged": True,
            "passed": ok,
        }
        reasons.append(
            f"{pg.column}: {label} {a:.4g} -> {b:.4g}, widening {widening:+.4f} "
            f"({1 - 2 * policy.alpha:.0%} interval {lower:+.4f} .. {upper:+.4f}, margin {margin:g}): "
            + (
                ("not shown beyond" if ok else "BEYOND")
                if policy.rule == "widening"
                else ("shown within" if ok else "NOT SHOWN within")
            )
            + " the margin"
        )
    per_group = {
        n: {
            role: {
                "fnmr": r["groups"][n]["fnmr"]["rate"],
                "fmr_within": r["groups"][n]["fmr_within"]["rate"],
                "genuine_pairs": r["groups"][n]["fnmr"]["pairs"],
                "impostor_pairs": r["groups"][n]["fmr_within"]["pairs"],
                "inconclusive": r["groups"][n]["fnmr"]["inconclusive"] or r["groups"][n]["fmr_within"]["inconclusive"],
            }
            for role, r in reports.items()
        }
        for n in pg.names
    }
    return {"column": pg.column, "passed": bool(passed), "reasons": reasons, "measures": measures, "groups": per_group}


def fairness_markdown(results: Sequence[dict[str, Any]], policy: FairnessPolicy) -> str:
    """The gate report's equal-treatment section, with the reason in plain words."""
    lines = [
        "### Equal treatment across groups",
        "",
        "A challenger that is more accurate on average can still be worse for one group of students: better for the "
        "majority, worse for a minority. So the gate also asks whether the gap between groups got wider. It compares "
        "how many times more often the worst-served group is wrongly refused (FNMR ratio) or wrongly let in (FMR "
        "ratio), and the fairness discrepancy rate (1 = even). Each measure is recomputed on the people of the test "
        f"set resampled {policy.bootstrap} times, so that chance differences between the two models are not "
        "mistaken for a real change. "
        + (
            f"The challenger is refused when we are {1 - policy.alpha:.0%} sure a gap grew by more than its margin."
            if policy.rule == "widening"
            else f"The challenger passes only if we are {1 - policy.alpha:.0%} sure no gap grew beyond its margin."
        )
        + " A wider gap blocks promotion even when accuracy improves.",
        "",
    ]
    for r in results:
        wider = [
            f"{MEASURES[k][0]} {v['champion']:.2f} -> {v['challenger']:.2f}"
            for k, v in r["measures"].items()
            if v["judged"] and not v["passed"]
        ]
        verdict = (
            f"the gap between {r['column']} groups got wider than the margin allows ({'; '.join(wider)}), so the "
            "challenger is refused whatever its accuracy."
            if wider
            else "no gap grew beyond its margin."
        )
        lines += [
            f"**{r['column']}**: {'passed' if r['passed'] else 'FAILED'}: {verdict}",
            "",
            "| measure | champion | challenger | widening | interval | margin |",
            "|---|---|---|---|---|---|",
        ]
        for key, v in r["measures"].items():
            label = MEASURES[key][0]
            if not v["judged"]:
                lines.append(f"| {label} | {_fmt(v['champion'])} | {_fmt(v['challenger'])} | not judged | | |")
                continue
            lines.append(
                f"| {label} | {v['champion']:.4f} | {v['challenger']:.4f} | {v['widening']:+.4f} | "
                f"{v['widening_lower']:+.4f} .. {v['widening_upper']:+.4f} | {v['margin']:g} |"
            )
        lines += [
            "",
            "| group | FNMR champion | FNMR challenger | FMR champion | FMR challenger |",
            "|---|---|---|---|---|",
        ]
        for name, g in r["groups"].items():
            note = " (too small to rank)" if g["champion"]["inconclusive"] else ""
            lines.append(
                f"| {name}{note} | {_fmt(g['champion']['fnmr'])} | {_fmt(g['challenger']['fnmr'])} | "
                f"{_fmt(g['champion']['fmr_within'])} | {_fmt(g['challenger']['fmr_within'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
