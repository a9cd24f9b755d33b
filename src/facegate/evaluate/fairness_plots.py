"""The per-group report in pictures and tables.

DET curves and score distributions per group, and the Markdown / HTML renderings of ``groups.json`` (the
evaluation report's section, the README table).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from facegate.evaluate.groups import GroupPolicy, GroupTable, PairGroups, assign_groups, group_report
from facegate.evaluate.plots import _pyplot

__all__ = [
    "groups_html",
    "groups_markdown",
    "plot_group_det",
    "plot_group_scores",
    "report_evaluation",
    "run_groups",
    "summary_lines",
    "write_group_report",
]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower() or "column"


def _group_masks(pg: PairGroups, same: np.ndarray, usable: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    one = (pg.left == i) & (pg.right == i) & usable
    return one & same, one & ~same


def plot_group_det(
    pg: PairGroups, same: np.ndarray, scores: np.ndarray, usable: np.ndarray, threshold: float, path: str | Path
) -> None:
    """One DET curve (FNMR against within-group FMR, both log) per group, with the operating point marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    floor = 1.0
    for i, name in enumerate(pg.names):
        gen, imp = _group_masks(pg, same, usable, i)
        if not gen.any() or not imp.any():
            continue
        g, m = np.sort(scores[gen]), np.sort(scores[imp])
        floor = min(floor, 1.0 / g.size, 1.0 / m.size)
        cuts = np.unique(np.concatenate([g, m]))
        fnmr = np.searchsorted(g, cuts, side="left") / g.size  # genuine below the cut are rejected
        fmr = 1.0 - np.searchsorted(m, cuts, side="left") / m.size  # impostors at or above it are accepted
        keep = (fnmr > 0) & (fmr > 0)
        (line,) = ax.plot(fmr[keep], fnmr[keep], lw=1.8, label=f"{name} ({g.size} gen / {m.size} imp)")
        op_fnmr = float((g < threshold).mean())
        op_fmr = float((m >= threshold).mean())
        ax.scatter([max(op_fmr, floor / 2)], [max(op_fnmr, floor / 2)], color=line.get_color(), zorder=3, s=25)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor / 2, 1.0)
    ax.set_ylim(floor / 2, 1.0)
    ax.set_xlabel("FMR within group (log; points = threshold, zero drawn at the floor)")
    ax.set_ylabel("FNMR (log)")
    ax.set_title(f"DET per {pg.column} group at threshold {threshold:.3f}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_group_scores(
    pg: PairGroups, same: np.ndarray, scores: np.ndarray, usable: np.ndarray, threshold: float, path: str | Path
) -> None:
    """Genuine and within-group impostor score densities per group, with the threshold."""
    plt = _pyplot()
    bins = np.linspace(min(-0.3, float(scores[usable].min(initial=0.0))), 1.0, 60)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for i, name in enumerate(pg.names):
        gen, imp = _group_masks(pg, same, usable, i)
        for mask, kind, style in ((gen, "genuine", "-"), (imp, "impostor", "--")):
            if mask.any():
                hist, edges = np.histogram(scores[mask], bins=bins, density=True)
                ax.step(edges[:-1], hist, where="post", ls=style, label=f"{name} {kind} ({int(mask.sum())})")
    ax.axvline(threshold, color="k", ls=":", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(f"Scores per {pg.column} group")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(rate: dict[str, Any]) -> str:
    if rate["rate"] is None:
        return "n/a (0 pairs)"
    lo, hi = rate["interval"]
    text = f"{100 * rate['rate']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] ({rate['errors']}/{rate['pairs']})"
    return text + (" inconclusive" if rate["inconclusive"] else "")


def _ratio(d: dict[str, Any], fmt: str = "{:.2f}") -> str:
    if d.get("value") is None:
        return "n/a: " + str(d.get("why", "too few groups"))
    iv = d.get("interval")
    return fmt.format(d["value"]) + (f" [{fmt.format(iv[0])}, {fmt.format(iv[1])}]" if iv else "")


def _rows(report: dict[str, Any], col: str) -> tuple[list[str], list[list[str]], list[str]]:
    c = report["columns"][col]
    head = ["group", "images (ids)", "FNMR", "FMR within", "FMR across", "failure to acquire"]
    rows = []
    for name, g in c["groups"].items():
        fta = g["failure_to_acquire"]
        rows.append(
            [
                name,
                f"{g['images']} ({g['identities']})",
                _pct(g["fnmr"]),
                _pct(g["fmr_within"]),
                _pct(g["fmr_across"]),
                f"{fta['failed']}/{fta['images']}",
            ]
        )
    d = c["differentials"]
    notes = [
        f"FNMR max/min ratio {_ratio(d['fnmr_ratio'])}; FMR max/min ratio {_ratio(d['fmr_ratio'])}; "
        f"fairness discrepancy rate {_ratio(d['fdr'], '{:.4f}')} "
        f"(95% identity-bootstrap intervals, {d['bootstrap']['replicates']} replicates)",
    ]
    if c["unlabelled_pairs"] or c["mixed_genuine_pairs"]:
        notes.append(f"{c['unlabelled_pairs']} pairs unlabelled, {c['mixed_genuine_pairs']} genuine pairs mixed")
    return head, rows, notes


def groups_markdown(report: dict[str, Any]) -> str:
    """``groups.json`` as Markdown tables (rates in %, Clopper-Pearson intervals, errors/pairs)."""
    out = [f"Threshold {report['threshold']:.4f} ({report['threshold_source'] or 'given'}).", ""]
    for col in report["columns"]:
        head, rows, notes = _rows(report, col)
        out += [f"### {col}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out += ["", *notes, ""]
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def groups_html(report: dict[str, Any], plots: dict[str, list[Path]] | None = None) -> str:
    """The evaluation report's "Equal treatment" section (plots embedded)."""
    e = html.escape
    parts = [
        "<h2>Equal treatment across groups</h2>",
        f"<p>At threshold {report['threshold']:.4f} ({e(report['threshold_source'] or 'given')}); groups from "
        f"{e(Path(report['groups_file']).name)} by {e(report['keyed_by'])}. Intervals: Clopper-Pearson on rates, "
        "identity bootstrap on differentials. Groups with fewer than "
        f"{report['policy']['min_pairs']} pairs or {report['policy']['min_identities']} identities behind a rate "
        "are inconclusive and not ranked.</p>",
    ]
    for col in report["columns"]:
        head, rows, notes = _rows(report, col)
        parts.append(f"<h3>{e(col)}</h3><table border='1' cellpadding='4' style='border-collapse:collapse'>")
        parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in rows]
        parts.append("</table>" + "".join(f"<p>{e(n)}</p>" for n in notes))
        for p in (plots or {}).get(col, []):
            parts.append(f'<img alt="{e(col)}: {e(p.stem)}" src="{_data_uri(p)}" width="480">')
    return "".join(parts)


def write_group_report(
    table: GroupTable,
    left: list[str],
    right: list[str],
    same: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    out_dir: str | Path,
    *,
    failed_pairs: list[int] | None = None,
    failed_images: dict[str, str] | None = None,
    policy: GroupPolicy | None = None,
    threshold_source: str = "",
) -> tuple[dict[str, Any], dict[str, list[Path]]]:
    """Write ``groups.json``, ``groups.md``, ``groups.html`` and per-column DET / score plots into ``out_dir``.

    Returns:
        ``(the report, plot paths per column)``.
    """
    from facegate.utils import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = group_report(
        table,
        left,
        right,
        same,
        scores,
        threshold,
        failed_pairs=failed_pairs or [],
        failed_images=failed_images,
        policy=policy,
        threshold_source=threshold_source,
    )
    usable = np.ones(len(left), dtype=bool)
    usable[list(failed_pairs or [])] = False
    y, s = np.asarray(same, dtype=bool), np.asarray(scores, dtype=np.float64)
    plots: dict[str, list[Path]] = {}
    for col in report["columns"]:
        pg = assign_groups(table, col, left, right)
        det, dist = out / f"groups_{_slug(col)}_det.png", out / f"groups_{_slug(col)}_scores.png"
        plot_group_det(pg, y, s, usable, threshold, det)
        plot_group_scores(pg, y, s, usable, threshold, dist)
        plots[col] = [det, dist]
    atomic_write_text(out / "groups.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "groups.md", groups_markdown(report))
    atomic_write_text(
        out / "groups.html",
        "<!doctype html><html><head><meta charset='utf-8'><title>facegate: equal treatment</title></head><body>"
        + groups_html(report, plots)
        + "</body></html>\n",
    )
    return report, plots


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per label column for a terminal."""
    lines = []
    for col, c in report["columns"].items():
        d = c["differentials"]
        per = ", ".join(
            f"{g}: FNMR " + ("n/a" if v["fnmr"]["rate"] is None else f"{v['fnmr']['rate']:.4f}")
            for g, v in c["groups"].items()
        )
        lines.append(
            f"groups by {col} at threshold {report['threshold']:.4f}: {per}; FNMR ratio {_ratio(d['fnmr_ratio'])}, "
            f"FMR ratio {_ratio(d['fmr_ratio'])}, FDR {_ratio(d['fdr'], '{:.4f}')}"
        )
    return lines


def report_evaluation(
    table: GroupTable, pairset: Any, result: Any, embedder: Any, out_dir: str | Path
) -> dict[str, Any]:
    """The group report of one evaluation at the model's deployment threshold, written into ``out_dir``.

    Args:
        table: Group labels.
        pairset: The evaluated :class:`~facegate.data.pairs.PairSet`.
        result: Its :class:`~facegate.evaluate.runner.EvalResult`.
        embedder: The model (its ``default_threshold`` is the one its version ships with).
        out_dir: Where the report goes.
    """
    report, _ = write_group_report(
        table,
        pairset.left,
        pairset.right,
        result.same,
        result.scores,
        float(embedder.default_threshold),
        out_dir,
        failed_pairs=result.failed_pairs,
        failed_images=result.failed_keys,
        threshold_source=f"deployment threshold of {embedder.name} {embedder.version}",
    )
    return report


def run_groups(groups_csv: str | Path, pairset: Any, result: Any, embedder: Any, out_dir: str | Path) -> list[str]:
    """``facegate evaluate --groups``: :func:`report_evaluation` with a group CSV; summary lines for the terminal."""
    from facegate.evaluate.groups import load_groups

    report = report_evaluation(load_groups(groups_csv), pairset, result, embedder, out_dir)
    return [*summary_lines(report), f"group report: {Path(out_dir) / 'groups.json'}"]
