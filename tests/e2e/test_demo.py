"""The README's `make demo` job, run through the CLI into a temporary directory."""

import json

import pytest
from typer.testing import CliRunner

from facegate.cli import app

pytestmark = pytest.mark.e2e


def test_demo_end_to_end(tmp_path):
    work = tmp_path / "demo"
    res = CliRunner().invoke(app, ["-q", "demo", "--workdir", str(work)])
    assert res.exit_code == 0, res.output
    summary = json.loads((work / "summary.json").read_text())
    assert summary["ingest"]["failed"] == 3
    assert summary["ingest"]["failure_reasons"] == {"empty": 1, "not_an_image": 1, "no_face": 1}
    assert summary["ingest"]["aligned"] >= 12
    assert summary["verify_same_person"]["match"] is True
    assert summary["verify_different_people"]["match"] is False
    assert summary["evaluate"]["auc"] > 0.9
    checks = summary["serve"]["checks"]
    assert checks["same person"]["decision"] == "accept"
    assert checks["different person"]["decision"] == "reject"
    assert (checks["no face"]["decision"], checks["no face"]["reason"]) == ("retry", "no_face")
    assert summary["serve"]["no_key_status"] == 401 and summary["serve"]["url"].startswith("http://127.0.0.1:")
    for name in ("metrics.json", "roc.png", "scores.png", "config.yaml"):
        assert (work / "eval" / name).is_file()
    assert "facegate demo — summary" in res.stdout


def test_demo_uses_nothing_from_shared(tmp_path, monkeypatch):
    # The demo must run on a machine without ../shared: point every path it could guess at nowhere.
    monkeypatch.setenv("FACEGATE_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["-q", "demo"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / ".facegate" / "demo" / "summary.json").is_file()


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
