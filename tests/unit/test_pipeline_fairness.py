"""Equal treatment in the training pipeline: the group-report step, the gate's inputs, the margin parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facegate.errors import DataError
from facegate.pipeline.fairness import fairness_policy, flat_group_numbers, gate_groups, group_report_step

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_training_yaml_has_a_typed_group_report_and_the_gate_gets_the_labels() -> None:
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "training.yaml").read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["group_labels"]["defaultValue"] == ""
    assert params["fairness_margins"]["defaultValue"] == ["fnmr_ratio=0.25", "fmr_ratio=0.5", "fdr=0.01"]
    comp = spec["components"]["comp-group-report"]
    outs = comp["outputDefinitions"]["artifacts"]
    assert outs["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    dag = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]  # the steps run inside the exit handler
    grp = dag["group-report"]
    # It reports on the registered version: the bundle that would ship, with the threshold it ships with.
    assert grp["inputs"]["parameters"]["model"]["taskOutputParameter"]["producerTask"] == "register"
    assert grp["inputs"]["parameters"]["group_labels"]["componentInputParameter"] == "pipelinechannel--group_labels"
    gate = dag["gate"]["inputs"]["parameters"]
    assert gate["group_labels"]["componentInputParameter"] == "pipelinechannel--group_labels"
    assert gate["fairness_margins"]["componentInputParameter"] == "pipelinechannel--fairness_margins"


def test_tuning_pipeline_is_untouched_by_the_group_step() -> None:
    assert "group-report" not in (REPO / "pipelines" / "tuning.yaml").read_text()


def test_fairness_margins_parse() -> None:
    p = fairness_policy(["fnmr_ratio=0.1", "fdr=0.02"])
    assert (p.fnmr_ratio_margin, p.fmr_ratio_margin, p.fdr_margin) == (0.1, 0.5, 0.02)
    with pytest.raises(DataError, match="unknown fairness margin"):
        fairness_policy(["accuracy=0.1"])
    with pytest.raises(DataError, match="MEASURE=NUMBER"):
        fairness_policy(["fdr"])
    with pytest.raises(DataError, match="MEASURE=NUMBER"):
        fairness_policy(["fdr=lots"])


def test_without_labels_the_step_reports_nothing_and_the_gate_has_no_groups(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert group_report_step("models:/facegate/1", ["holdout"], "", report_path=str(out)) == {}
    assert "No group labels" in out.read_text()
    assert gate_groups("", []) == []


def test_gate_groups_and_flat_numbers_from_a_file_uri(tmp_path: Path) -> None:
    import numpy as np

    from facegate.data.pairs import ArraySource, PairSet
    from facegate.evaluate.groups import group_report, load_groups

    csv = tmp_path / "g.csv"
    csv.write_text("identity,sex,age\na,f,young\nb,m,old\n")
    ps = PairSet(
        "s",
        ["a/1.jpg", "a/1.jpg"],
        ["a/2.jpg", "b/1.jpg"],
        np.array([True, False]),
        np.array([0, 1]),
        ArraySource(np.zeros((0, 112, 112, 3), np.uint8)),
    )
    cols = gate_groups(f"file://{csv}", [("s", ps)])
    assert [c.column for c in cols] == ["sex", "age"]
    with pytest.raises(DataError, match="not found"):
        gate_groups(str(tmp_path / "none.csv"), [("s", ps)])
    rep = group_report(load_groups(csv), ps.left, ps.right, ps.same, np.array([0.9, 0.1]), 0.5)
    flat = flat_group_numbers(rep)
    assert flat["sex.f.fnmr"] == 0.0 and flat["sex.f.genuine_pairs"] == 1.0
    assert "sex.fnmr_ratio" not in flat  # no group is large enough to rank
