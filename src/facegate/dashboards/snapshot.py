"""A picture of a dashboard without Grafana: its panels' queries over a Prometheus, drawn as SVG, shot by Chromium.

The README's screenshot comes from here (tests/integration/test_dashboards_prometheus.py draws the rollout
dashboard over real traffic). The page follows the dashboard's layout (same titles, units, legends and queries,
Grafana's dark colours); it is a faithful plot of the numbers, not Grafana's renderer.
"""

from __future__ import annotations

import html
import math
import re
import subprocess
import tempfile
from pathlib import Path

from facegate.dashboards.panels import Dashboard, Panel, promql

__all__ = ["Series", "fetch_series", "page_height", "render_html", "screenshot"]

#: (legend, [(unix time, value), ...]) of one query result series.
Series = tuple[str, list[tuple[float, float]]]
_COLOURS = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a")


def _legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or str(labels)


def fetch_series(
    prometheus: str, board: Dashboard, *, start: float, end: float, step: float = 15.0
) -> list[tuple[str, list[Series]]]:
    """Every panel's series between ``start`` and ``end`` (range queries; a bar chart's at ``end``)."""
    import httpx

    window = f"{max(1, math.ceil(end - start))}s"
    out: list[tuple[str, list[Series]]] = []
    with httpx.Client(base_url=prometheus, timeout=30) as client:
        for panel in board.panels:
            lines: list[Series] = []
            for target in panel.targets:
                if panel.kind == "barchart":
                    q = promql(target.expr, rate_interval=window, range_=window)
                    body = client.get("/api/v1/query", params={"query": q, "time": end}).json()
                    points = [(s["metric"], [(end, float(s["value"][1]))]) for s in body["data"]["result"]]
                else:
                    # Half the span: a short burst of traffic still draws as a line, not as scattered points.
                    rate = f"{max(math.ceil(4 * step), math.ceil((end - start) / 2))}s"
                    q = promql(target.expr, rate_interval=rate, range_=window)
                    params: dict[str, str | float] = {"query": q, "start": start, "end": end, "step": step}
                    body = client.get("/api/v1/query_range", params=params).json()
                    points = [(s["metric"], [(float(t), float(v)) for t, v in s["values"]])
                              for s in body["data"]["result"]]  # fmt: skip
                for labels, values in points:
                    finite = [(t, v) for t, v in values if math.isfinite(v)]
                    if finite:
                        lines.append((_legend(target.legend, labels), finite))
            if panel.kind == "barchart":  # score buckets in order
                lines.sort(key=lambda s: (s[0].split(" <= ")[0], _bucket(s[0])))
            out.append((panel.title, lines))
    return out


def _bucket(legend: str) -> float:
    le = legend.rpartition("<= ")[2]
    return math.inf if le in ("+Inf", "") else float(le)


def _groups(lines: list[Series]) -> dict[str, str]:
    """Colour of each bar group (the legend before `` <= ``), in sorted order: the same on every run."""
    names = sorted({name.split(" <= ")[0] for name, _ in lines})
    return {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}


def _fmt(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    return f"{value:.3g}"


def _svg(panel: Panel, lines: list[Series], width: int, height: int = 190) -> str:
    pad_l, pad_b, pad_t = 64, 20, 6
    w, h = width - pad_l - 8, height - pad_b - pad_t
    values = [v for _, pts in lines for _, v in pts]
    lo, hi = min([0.0, *values]), max([1e-9, *values])
    hi = hi + (hi - lo) * 0.08
    parts = [f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"]
    for i in range(5):  # grid and y labels
        y = pad_t + h - h * i / 4
        parts.append(f"<line x1='{pad_l}' x2='{pad_l + w}' y1='{y:.1f}' y2='{y:.1f}' stroke='#2c3235'/>")
        label = html.escape(_fmt(lo + (hi - lo) * i / 4, panel.unit))
        parts.append(f"<text x='{pad_l - 6}' y='{y + 4:.1f}' text-anchor='end'>{label}</text>")
    if panel.kind == "barchart":
        n = max(1, len(lines))
        bw = w / n
        groups = _groups(lines)
        for i, (legend, pts) in enumerate(lines):
            v = pts[-1][1]
            bh = h * (v - lo) / (hi - lo)
            colour = groups[legend.split(" <= ")[0]]
            parts.append(f"<rect class='bar' x='{pad_l + i * bw + 1:.1f}' y='{pad_t + h - bh:.1f}' "
                         f"width='{max(1.0, bw - 2):.1f}' height='{bh:.1f}' fill='{colour}'>"
                         f"<title>{html.escape(legend)}: {v:g}</title></rect>")  # fmt: skip
    else:
        times = [t for _, pts in lines for t, _ in pts]
        t0, t1 = min(times, default=0.0), max(times, default=1.0)
        span = max(t1 - t0, 1e-9)
        for i, (_, pts) in enumerate(lines):
            xy = " ".join(
                f"{pad_l + w * (t - t0) / span:.1f},{pad_t + h - h * (v - lo) / (hi - lo):.1f}" for t, v in pts
            )
            # Earlier series wider, every other one dashed: series on the same values (two versions at 100 %
            # of their own check-ins) all stay visible, the later drawn inside the earlier.
            dash = " stroke-dasharray='7 5'" if i % 2 else ""
            colour, stroke = _COLOURS[i % len(_COLOURS)], max(1.5, 5.0 - 1.5 * i)
            parts.append(f"<polyline points='{xy}' fill='none' stroke='{colour}' stroke-width='{stroke}'{dash}/>")
        parts.append(f"<text x='{pad_l}' y='{height - 4}'>{time_label(t0)}</text>")
        parts.append(f"<text x='{pad_l + w}' y='{height - 4}' text-anchor='end'>{time_label(t1)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def time_label(t: float) -> str:
    """``HH:MM:SS`` (UTC) of a Unix time, for the x axis."""
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S")


def render_html(board: Dashboard, series: list[tuple[str, list[Series]]]) -> str:
    """A self-contained page of the dashboard (panels in its order and widths, 1200 px wide)."""
    cells = []
    for panel, (_, lines) in zip(board.panels, series, strict=True):
        width = int(1200 * panel.width / 24) - 12
        if panel.kind == "barchart":
            legend = "".join(f"<span style='color:{c}'>&#9632; {html.escape(n)}</span>"
                             for n, c in _groups(lines).items())  # fmt: skip
        else:
            legend = "".join(f"<span style='color:{_COLOURS[i % len(_COLOURS)]}'>&#9632; {html.escape(name)}</span>"
                             for i, (name, _) in enumerate(lines))  # fmt: skip
        cells.append(f"<div class='panel' style='width:{width}px'><h2>{html.escape(panel.title)}</h2>"
                     f"{_svg(panel, lines, width - 16)}<div class='legend'>{legend}</div></div>")  # fmt: skip
    style = ("body{background:#111217;color:#ccccdc;font:12px Inter,Helvetica,Arial,sans-serif;margin:0;padding:12px;"
             "width:1200px}h1{font-size:18px;margin:4px 0 12px}.grid{display:flex;flex-wrap:wrap;gap:12px}"
             ".panel{background:#181b1f;border:1px solid #2c3235;border-radius:2px;padding:8px;box-sizing:border-box}"
             "h2{font-size:13px;margin:0 0 6px;font-weight:500}svg text{fill:#8e8e8e;font-size:10px}"
             ".legend span{margin-right:10px;white-space:nowrap}")  # fmt: skip
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(board.title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(board.title)}</h1>"
            f"<div class='grid'>{''.join(cells)}</div></body></html>")  # fmt: skip


def page_height(board: Dashboard) -> int:
    """Pixels the page of :func:`render_html` takes: a title, then rows of panels 24 columns wide."""
    rows, used = 0, 24
    for panel in board.panels:
        if used + panel.width > 24:
            rows, used = rows + 1, 0
        used += panel.width
    return 60 + rows * 258


def screenshot(
    page: str, out: Path, *, chromium: str = "chromium", height: int = 900, timeout_s: float = 120.0
) -> Path:
    """Shoot ``page`` (HTML text, ``height`` pixels tall, e.g. :func:`page_height`) with headless Chromium."""
    with tempfile.TemporaryDirectory(prefix="facegate-shot-") as tmp:
        src = Path(tmp) / "page.html"
        src.write_text(page)
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp}/profile", f"--window-size=1224,{height}", f"--screenshot={out}",
               src.as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)  # noqa: S603 (an argument list)
    return out
