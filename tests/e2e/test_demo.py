"""The README's `make demo` job, run through the CLI into a temporary directory, with no ../shared in reach."""

import json

import pytest
from typer.testing import CliRunner

from facegate.cli import app

pytestmark = pytest.mark.e2e


def test_demo_end_to_end(tmp_path, monkeypatch):
    # The demo must run on a machine without ../shared: point every path it could guess at nowhere.
    monkeypatch.setenv("FACEGATE_SHARED", str(tmp_path / "no-shared"))
    # The demo sets these for its pipeline's subprocesses; monkeypatch puts them back afterwards.
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEGATE_GALLERY_KEYS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "demo"
    res = CliRunner().invoke(app, ["-q", "demo", "--workdir", str(work)])
    assert res.exit_code == 0, res.output
    summary = json.loads((work / "summary.json").read_text())
    assert summary["ingest"]["failed"] == 3
    assert summary["ingest"]["failure_reasons"] == {"empty": 1, "not_an_image": 1, "no_face": 1}
    assert summary["ingest"]["aligned"] >= 30
    assert summary["verify_same_person"]["match"] is True
    assert summary["verify_different_people"]["match"] is False
    assert summary["evaluate"]["auc"] > 0.9
    for name in ("metrics.json", "roc.png", "scores.png", "config.yaml"):
        assert (work / "eval" / name).is_file()

    # The training pipeline ran locally and the gate kept the tiny challenger out, with its numbers.
    pipe = summary["pipeline"]
    assert pipe["decision"] == "keep"
    md = pipe["gate_markdown"]
    assert "KEEP the champion" in md and "McNemar" in md and "| accuracy |" in md
    assert "gate decision: KEEP the champion" in res.stdout and "McNemar" in res.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in res.stdout and str(work.resolve()) in res.stdout
    from facegate.registry.models import list_versions

    versions = {v.version: v for v in list_versions(home=work)}
    assert set(versions) == {"1", "2"}
    assert versions["1"].aliases == ("champion",) and versions["2"].aliases == ("challenger",)
    tags = versions["2"].tags
    for key in ("dataset_hash", "git_commit", "config", "threshold", "metric.holdout.accuracy", "gate.mcnemar_p"):
        assert tags.get(key), key
    assert tags["gate.decision"] == "keep"
    assert json.loads(tags["config"])["model"]["backbone"] == "iresnet18"
    # Typed artifacts the KFP UI draws: the ROC, every metric, and the HTML report with its plots embedded.
    from pathlib import Path

    run = Path(pipe["run"])
    ev = json.loads((run / "evaluate" / "executor_output.json").read_text())["artifacts"]
    roc = ev["roc"]["artifacts"][0]["metadata"]["confidenceMetrics"]
    assert len(roc) >= 10 and {"falsePositiveRate", "recall", "confidenceThreshold"} <= set(roc[0])
    assert 0.5 < ev["metrics"]["artifacts"][0]["metadata"]["holdout_accuracy"] <= 1.0
    assert (run / "evaluate" / "report").read_text().count("data:image/png;base64,") == 2

    # The champion (SFace, from the registry) served the check-ins.
    serve = summary["serve"]
    assert serve["model"] == "models:/facegate@champion"
    checks = serve["checks"]
    assert checks["same person"]["decision"] == "accept"
    assert checks["different person"]["decision"] == "reject"
    assert (checks["no face"]["decision"], checks["no face"]["reason"]) == ("retry", "no_face")
    assert serve["no_key_status"] == 401 and serve["url"].startswith("http://127.0.0.1:")
    assert "facegate demo — summary" in res.stdout


def test_console_script_and_module_entry_points():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("facegate")
    exe = str(script) if script.exists() else shutil.which("facegate")
    assert exe, "the facegate console script is not installed"
    for cmd in ([exe, "--version"], [sys.executable, "-m", "facegate", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
        assert out.stdout.startswith("facegate ")
