"""The chart's dashboard ConfigMaps are what facegate.dashboards generates, labelled for Grafana's sidecar."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from facegate.dashboards.panels import DASHBOARDS
from tests.deploy.conftest import CHART, Objects, of_kind

pytestmark = pytest.mark.integration


def test_committed_dashboard_files_are_the_generator_output() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="needs the dashboards extra (grafana-foundation-sdk)")
    from facegate.dashboards.build import main, render_all

    files = render_all()
    assert sorted(files) == sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    for name, text in files.items():
        assert (CHART / "dashboards" / name).read_text() == text, f"{name} is stale: run python -m facegate.dashboards"
    assert main(["--check"]) == 0
    for spec in DASHBOARDS:  # every panel of the spec, with every query, reached the JSON
        board = json.loads(files[f"{spec.uid}.json"])
        exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
        assert exprs == [t.expr for p in spec.panels for t in p.targets]
        assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"])


def test_chart_ships_each_dashboard_as_a_sidecar_configmap(render: Callable[..., Objects]) -> None:
    maps = {m["metadata"]["name"]: m for m in of_kind(render(), "ConfigMap") if "dashboard" in m["metadata"]["name"]}
    assert sorted(maps) == sorted(f"facegate-dashboard-{d.uid.removeprefix('facegate-')}" for d in DASHBOARDS)
    for spec in DASHBOARDS:
        cm = maps[f"facegate-dashboard-{spec.uid.removeprefix('facegate-')}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / name).read_text())
        assert json.loads(text)["uid"] == spec.uid
    off = render("values.yaml", "metrics.dashboards.enabled=false")
    assert not [m for m in of_kind(off, "ConfigMap") if "dashboard" in m["metadata"]["name"]]
