"""The chart's Prometheus rules through promtool: every rule parses, and the covariate alert fires on the bin that
departs from the others and on no other (promtool's own rule unit tests over synthetic counter series)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import Objects, one

PROMTOOL = shutil.which("promtool")
ALERT = "FacegateCovariateBinDeparts"
Render = Callable[..., Objects]
REFUSED, OTHERS = "facegate:covariate_refused:ratio_rate1h", "facegate:covariate_refused_others:ratio_rate1h"


def _rules_file(render: Render, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    spec = one(render(), "PrometheusRule")["spec"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": spec["groups"]}, sort_keys=False))
    alert = next(r for g in spec["groups"] for r in g["rules"] if r.get("alert") == ALERT)
    return path, alert


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.skip("needs promtool (Debian: prometheus package)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def test_every_rule_of_the_chart_passes_promtool(render: Render, tmp_path: Path) -> None:
    path, _ = _rules_file(render, tmp_path)
    res = _promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def _series(covariate: str, bin_: str, decision: str, reason: str, per_minute: float) -> dict[str, str]:
    labels = f'covariate="{covariate}",bin="{bin_}",decision="{decision}",reason="{reason}"'
    return {"series": f"facegate_covariate_decisions_total{{{labels}}}", "values": f"0+{per_minute}x180"}


def test_covariate_alert_fires_on_the_departing_bin_only(render: Render, tmp_path: Path) -> None:
    rules, alert = _rules_file(render, tmp_path)
    labels = {"severity": "warning", "covariate": "illumination", "bin": "dark"}
    notes = {
        k: v.replace("{{ $labels.covariate }}", "illumination")
        .replace("{{ $labels.bin }}", "dark")
        .replace("{{ $value | humanizePercentage }}", "50%")
        for k, v in alert["annotations"].items()
    }
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # Illumination: 2 % of well-lit photos are sent back, half of the dark ones: the dark bin departs.
                    _series("illumination", "normal", "accept", "match", 10),
                    _series("illumination", "normal", "retry", "no_face", 0.2),
                    _series("illumination", "dark", "accept", "match", 1),
                    _series("illumination", "dark", "retry", "no_face", 1),
                    # Pose: turned heads refused 4.8 % against 0 %: a ratio without bound, but under the 5-point
                    # floor, so no page.
                    _series("pose", "frontal", "accept", "match", 10),
                    _series("pose", "turned", "accept", "match", 1),
                    _series("pose", "turned", "reject", "mismatch", 0.05),
                    # Sharpness: a bin refused half the time but with too few check-ins to judge (12 in an hour).
                    _series("sharpness", "sharp", "accept", "match", 10),
                    _series("sharpness", "soft", "accept", "match", 0.1),
                    _series("sharpness", "soft", "retry", "blurry", 0.1),
                ],
                "promql_expr_test": [
                    {
                        # Per mille, rounded: promtool compares floats exactly.
                        "expr": f'round(1000 * {REFUSED}{{covariate="illumination"}})',
                        "eval_time": "120m",
                        "exp_samples": [
                            {"labels": '{covariate="illumination",bin="dark"}', "value": 500},
                            {"labels": '{covariate="illumination",bin="normal"}', "value": 20},
                        ],
                    },
                    {
                        "expr": f'round(1000 * {OTHERS}{{covariate="illumination",bin="dark"}})',
                        "eval_time": "120m",
                        "exp_samples": [{"labels": '{covariate="illumination",bin="dark"}', "value": 20}],
                    },
                ],
                "alert_rule_test": [
                    {
                        "alertname": ALERT,
                        "eval_time": "120m",
                        "exp_alerts": [{"exp_labels": labels, "exp_annotations": notes}],
                    },
                    {"alertname": ALERT, "eval_time": "15m", "exp_alerts": []},  # not yet held for 30 minutes
                ],
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    res = _promtool("test", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
