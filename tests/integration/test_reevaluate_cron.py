"""The nightly CronWorkflow (hera → YAML, validated against Argo's CRD) and the drift report it runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import facegate
from facegate.rollout import crds
from facegate.rollout.cron import reevaluate_cron_yaml
from tests.conftest import REPO, SHARED

pytestmark = pytest.mark.integration

ARGO_CRDS = SHARED / "crds" / "argo"
COMMITTED = REPO / "pipelines" / "reevaluate_cron.yaml"


def test_committed_yaml_is_what_the_script_writes(tmp_path: Path) -> None:
    script = tmp_path / "reevaluate_cron.py"
    shutil.copy(REPO / "pipelines" / "reevaluate_cron.py", script)
    subprocess.run([sys.executable, str(script)], check=True, timeout=120, cwd=tmp_path)
    written = (tmp_path / "reevaluate_cron.yaml").read_text()
    assert written == COMMITTED.read_text() == reevaluate_cron_yaml()


def test_cron_workflow_validates_against_the_argo_crd() -> None:
    if not (ARGO_CRDS / "argoproj.io_cronworkflows.yaml").is_file():
        pytest.skip(f"needs the Argo CRDs in {ARGO_CRDS} (../shared beside the checkout; CI has it)")
    obj = yaml.safe_load(COMMITTED.read_text())
    crds.validate(obj, ARGO_CRDS)
    # The validator is strict for Argo's schema too: a misspelt or mistyped field is caught.
    obj["spec"]["workflowSpec"]["templates"][0]["container"]["imagePullPolice"] = "Always"
    obj["spec"]["concurrencyPolicy"] = "Sometimes"
    with pytest.raises(crds.CrdValidationError) as err:
        crds.validate(obj, ARGO_CRDS)
    assert len(err.value.errors) == 2, err.value.errors


def test_cron_workflow_runs_the_champion_image_with_secrets_never_parameters() -> None:
    obj = yaml.safe_load(COMMITTED.read_text())
    spec = obj["spec"]
    assert obj["kind"] == "CronWorkflow" and spec["concurrencyPolicy"] == "Forbid"
    params = {p["name"]: p["value"] for p in spec["workflowSpec"]["arguments"]["parameters"]}
    assert params["model"] == "models:/facegate@champion"
    assert not any(re.search(r"key|secret|password|token", k + v, re.I) for k, v in params.items())
    containers = [t["container"] for t in spec["workflowSpec"]["templates"] if "container" in t]
    assert len(containers) == 2
    for c in containers:
        assert c["image"] == f"ghcr.io/facegate/facegate-pipeline:{facegate.__version__}"
        for env in c["env"]:
            if re.search(r"KEY|SECRET|PASSWORD|TOKEN", env["name"]):
                assert "value" not in env and env["valueFrom"]["secretKeyRef"]["name"], env
        # Parameters reach the script as environment variables, never spliced into the shell text.
        assert "{{" not in c["command"][-1]
    scripts = "\n".join(c["command"][-1] for c in containers)
    assert "facegate evaluate --model" in scripts and "--no-record" in scripts
    assert "facegate drift" in scripts and "--fail-on-drift" in scripts
    dag = next(t["dag"] for t in spec["workflowSpec"]["templates"] if "dag" in t)
    assert [t.get("depends") for t in dag["tasks"]] == [None, "reevaluate"]


def _degrade(src: Path, dst: Path) -> None:
    """A darker, blurrier, noisier camera: what new kiosk hardware or lighting does to check-in photos."""
    import cv2

    shutil.copytree(src, dst)
    (dst / "manifest.json").unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    for p in dst.rglob("*.jpg"):
        im = cv2.GaussianBlur(cv2.imread(str(p)).astype(np.float32), (0, 0), 2.5) * 0.45
        cv2.imwrite(str(p), np.clip(im + rng.normal(0, 12, im.shape), 0, 255).astype(np.uint8))


def test_the_cron_steps_find_drift_after_evaluating_the_champion(tmp_path: Path) -> None:
    from facegate.cli import app

    runner = CliRunner()

    def ok(*args: str) -> str:
        out = runner.invoke(app, ["-q", *args])
        assert out.exit_code == 0, out.output
        return out.stdout

    ok("data", "synth", str(tmp_path / "ref"), "--identities", "8", "--per-identity", "4", "--pairs", "80")
    _degrade(tmp_path / "ref", tmp_path / "new")
    for name in ("ref", "new"):  # the CronWorkflow's evaluate step, on the reference and the new pairs
        ok("evaluate", "--model", "sface", "--pairs", str(tmp_path / name / "pairs.csv"), "--out",
           str(tmp_path / f"eval-{name}"), "--target-far", "0.05")  # fmt: skip
    same = ok("drift", str(tmp_path / "eval-ref" / "scores.csv"), "--reference", str(tmp_path / "eval-ref" /
              "scores.csv"), "--model", "sface", "--fail-on-drift")  # fmt: skip
    assert json.loads(same)["drifted"] is False
    new, ref = tmp_path / "eval-new", tmp_path / "eval-ref"
    args = ["-q", "drift", str(new / "scores.csv"), "--reference", str(ref / "scores.csv"), "--model", "sface",
            "--metrics", str(new / "metrics.json"), "--out", str(tmp_path / "drift"), "--fail-on-drift"]  # fmt: skip
    out = runner.invoke(app, args)
    assert out.exit_code == 1, out.output
    report = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert report["drifted"] and report["reasons"][0].startswith("genuine scores shifted")
    genuine = report["classes"]["genuine"]
    assert genuine["n_recent"] == genuine["n_reference"] == 40
    assert genuine["mean_recent"] < genuine["mean_reference"] and genuine["ks_p"] < 0.01
    assert report["recent_evaluation"]["n_pairs"] == 80
    assert "DRIFTED" in (tmp_path / "drift" / "drift.md").read_text()
    out = runner.invoke(app, ["drift", str(tmp_path / "eval-new" / "scores.csv"), "--reference",
                              str(tmp_path / "eval-ref" / "scores.csv")])  # fmt: skip
    assert out.exit_code == 2 and "[bad_usage]" in out.output
