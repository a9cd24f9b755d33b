"""The pipeline's equal-treatment steps on real data: the group report lands on the MLflow model version, and the
gate judges (and records) equal treatment when given group labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facegate.data.pairs import load_lfw_pairs

pytestmark = pytest.mark.integration


class _Metrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def log_metric(self, metric: str, value: float) -> None:
        self.values[metric] = value


def _bundle(path: Path, version: str, threshold: float) -> Path:
    path.mkdir(parents=True)
    (path / "facegate.json").write_text(json.dumps({"model": "sface", "version": version, "threshold": threshold}))
    return path


def test_group_report_and_gate_on_registered_versions(
    lfw: Path, lfw_gender: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from facegate.pipeline.fairness import group_report_step
    from facegate.pipeline.steps import gate_step
    from facegate.registry.models import register_bundle
    from facegate.registry.tracking import tracking_uri

    home = tmp_path / "home"
    monkeypatch.setenv("FACEGATE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ps = load_lfw_pairs(lfw / "pairs.txt", lfw)
    keep = np.concatenate(
        [np.flatnonzero(ps.same & (ps.folds == 0))[:40], np.flatnonzero(~ps.same & (ps.folds == 0))[:40]]
    )
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "image_a,image_b,same\n" + "".join(f"{ps.left[i]},{ps.right[i]},{int(ps.same[i])}\n" for i in keep)
    )
    sets = [f"lfw={pairs}|{lfw}"]
    register_bundle(_bundle(tmp_path / "b1", "sface-champ", 0.30), alias="champion", home=home)
    chall = register_bundle(_bundle(tmp_path / "b2", "sface-chall", 0.363), home=home)

    metrics, html = _Metrics(), tmp_path / "groups.html"
    meta: dict[str, Any] = {}
    out = group_report_step(
        chall.uri, sets, str(lfw_gender), metrics=metrics, report_path=str(html), report_metadata=meta
    )
    assert set(out) == {"lfw"} and "gender.female.fnmr" in out["lfw"]
    assert meta["groups_lfw"]["threshold"] == pytest.approx(0.363)  # the version's own threshold
    assert "lfw_gender_male_fnmr" in metrics.values
    assert "Equal treatment" in html.read_text() and "data:image/png;base64," in html.read_text()
    client = MlflowClient(tracking_uri=tracking_uri(home), registry_uri=tracking_uri(home))
    tags = client.get_model_version("facegate", chall.version).tags
    assert float(tags["groups.lfw.gender.female.fnmr"]) == pytest.approx(out["lfw"]["gender.female.fnmr"], abs=1e-6)
    assert "groups.lfw.gender.male.genuine_pairs" in tags
    run_files = {a.path for a in client.list_artifacts(chall.run_id, "groups/lfw")}
    assert "groups/lfw/groups.json" in run_files

    report = tmp_path / "gate.md"
    decision = gate_step(chall.uri, sets, group_labels=str(lfw_gender), report_path=str(report))
    assert decision == "keep"  # the same weights: no significant gain
    text = report.read_text()
    assert "Equal treatment across groups" in text and "**gender**: passed" in text
    tags = client.get_model_version("facegate", chall.version).tags
    assert tags["gate.fairness.gender"] == "passed"
