"""Grafana dashboards from :mod:`facegate.dashboards.panels`, built with Grafana's Foundation SDK.

``python -m facegate.dashboards`` writes one JSON file per dashboard into ``helm/facegate/dashboards/``; the chart
ships each as a ConfigMap labelled for kube-prometheus-stack's Grafana sidecar (``metrics.dashboards``).
``--check`` exits 1 when a committed file differs from what the code generates (the tests run it too).

The SDK (``grafana-foundation-sdk``, the ``dashboards`` extra) is needed only to generate; the chart and the server
never import it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facegate.dashboards.panels import DASHBOARDS, Dashboard, Panel

__all__ = ["OUT_DIR", "dashboard_json", "main", "render_all"]

OUT_DIR = Path(__file__).resolve().parents[3] / "helm" / "facegate" / "dashboards"
_DS = "${datasource}"


def _panel(panel: Panel, x: int, y: int) -> Any:
    from grafana_foundation_sdk.builders import barchart, prometheus, stat, timeseries
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

    height = 5 if panel.kind == "stat" else 8
    builder: Any
    if panel.kind == "stat":
        builder = stat.Panel()
    elif panel.kind == "barchart":
        builder = barchart.Panel()
    else:
        builder = timeseries.Panel().fill_opacity(10).line_width(1)
    builder = (
        builder.title(panel.title)
        .description(panel.description)
        .unit(panel.unit)
        .datasource(model.DataSourceRef(type_val="prometheus", uid=_DS))
        .grid_pos(model.GridPos(h=height, w=panel.width, x=x, y=y))
    )
    for i, target in enumerate(panel.targets):
        query = prometheus.Dataquery().expr(target.expr).legend_format(target.legend).ref_id(chr(ord("A") + i))
        if panel.kind == "barchart":
            query = query.instant().format(PromQueryFormat.TABLE)
        builder = builder.with_target(query.datasource(model.DataSourceRef(type_val="prometheus", uid=_DS)))
    return builder


def dashboard_json(spec: Dashboard) -> dict[str, Any]:
    """The dashboard model (Grafana's JSON) of ``spec``: panels laid out left to right, 24 columns a row."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    board = (
        dashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["facegate"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .editable()
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    x = y = row_h = 0
    for panel in spec.panels:
        if x + panel.width > 24:
            x, y, row_h = 0, y + row_h, 0
        board = board.with_panel(_panel(panel, x, y))
        row_h = max(row_h, 5 if panel.kind == "stat" else 8)
        x += panel.width
    return dict(json.loads(json.dumps(board.build(), cls=JSONEncoder)))


def render_all() -> dict[str, str]:
    """File name -> JSON text (sorted keys, 2-space indent, final newline) of every dashboard."""
    return {f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n" for d in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) the dashboards' JSON files."""
    parser = argparse.ArgumentParser(prog="python -m facegate.dashboards", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder of the JSON files (the chart's)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file there is stale or missing")
    args = parser.parse_args(argv)
    files = render_all()
    if args.check:
        stale = sorted(
            n for n, text in files.items() if not (args.out / n).is_file() or (args.out / n).read_text() != text
        )
        extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
        for name in stale + extra:
            print(f"stale: {args.out / name} (run python -m facegate.dashboards)", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0
