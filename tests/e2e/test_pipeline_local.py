"""The training pipeline on kfp's local SubprocessRunner: the promotion branch end to end, and a failed run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from facegate.serve.gallery import KeyRing

    home = (tmp_path / "home").resolve()
    monkeypatch.setenv("FACEGATE_HOME", str(home))  # the steps are subprocesses: they inherit this environment
    monkeypatch.setenv("FACEGATE_GALLERY_KEYS", KeyRing.generate("t1"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FACEGATE_SERVE__GALLERY_URL", raising=False)
    return home


def test_challenger_that_wins_is_reindexed_canaried_and_promoted(home: Path, tmp_path: Path) -> None:
    """Champion: the same tiny network after one step (no better than chance); the trained challenger must win
    the gate, get gallery templates, pass a canary played on 127.0.0.1, and become champion."""
    from facegate.bundles import load_embedder
    from facegate.demo import make_raw_dataset
    from facegate.faces.pipeline import FaceAligner
    from facegate.pipeline.runner import run_local
    from facegate.pipeline.steps import ingest_step, train_step
    from facegate.registry.models import get_version, list_versions, register_bundle
    from facegate.serve.gallery import Gallery

    raw = tmp_path / "raw"
    make_raw_dataset(raw, per_identity=12)
    config = str(REPO / "configs" / "demo_cpu.yaml")
    # The weak champion, and the enrolled students the canary replays (enrolled with the champion's model).
    ingest_step(str(raw), str(tmp_path / "faces"), str(tmp_path / "held"), holdout_per_identity=4)
    train_step(config, ["max_steps=1", "epochs=1"], str(tmp_path / "faces"), str(tmp_path / "weak"))
    register_bundle(tmp_path / "weak", alias="champion", home=home)
    gallery = Gallery(f"sqlite:///{home / 'gallery.db'}")
    weak = load_embedder(tmp_path / "weak")
    aligner = FaceAligner()
    for student in ("grace_hopper", "eileen_collins", "cameraman"):
        photos = [p.read_bytes() for p in sorted((raw / student).glob("*.jpg"))[:3]]
        gallery.enroll(student, photos, weak, aligner)

    params = {"dataset_uri": str(raw), "config": config, "holdout_per_identity": 4, "canary_percent": 50,
              "train_backend": "local", "rollout_target": "local"}  # fmt: skip
    lines: list[str] = []
    run = run_local(
        "training", params, pipeline_root=tmp_path / "runs", log_path=tmp_path / "run.log", echo=lines.append
    )
    log = (tmp_path / "run.log").read_text()
    assert run.outputs["gate"]["output"] == "promote", log[-5000:]
    assert "PROMOTE the challenger" in Path(run.outputs["gate"]["report"]).read_text()
    challenger = max(list_versions(home=home), key=lambda v: int(v.version))
    # Templates for the new version exist before any traffic moved, for every enrolled student.
    assert gallery.template_count(challenger.model_version) == 3
    manifest = next(Path(run.where).glob("canary/manifest"))
    text = manifest.read_text()
    assert "canaryTrafficPercent: 50" in text and challenger.model_version.lower()[:20] in text.lower()
    decision = run.outputs["analyze-canary"]["output"]
    assert decision in ("promote", "rollback")
    champion = get_version("models:/facegate@champion", home=home)
    assert (champion.version == challenger.version) == (decision == "promote")
    assert any("-> finish-rollout" in line for line in lines)


def test_failed_run_is_recorded_by_the_exit_handler(home: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from facegate.pipeline.runner import PipelineError, run_local
    from facegate.registry.tracking import tracking_uri

    with pytest.raises(PipelineError, match="ingest"):
        run_local("training", {"dataset_uri": str(tmp_path / "nowhere"), "rollout_target": "local"},
                  pipeline_root=tmp_path / "runs", log_path=tmp_path / "run.log", echo=lambda _: None)  # fmt: skip
    client = MlflowClient(tracking_uri=tracking_uri(home))
    exp = client.get_experiment_by_name("facegate-pipelines")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["state"] == "FAILED"
    assert runs[0].data.tags["facegate.kind"] == "pipeline-failure"
    # The step that failed and why, not KFP's generic "Task exit-handler-1 failed."
    assert runs[0].data.tags["failed_step"] == "ingest" and runs[0].data.tags["error_class"] == "DataError"
    assert runs[0].data.tags["error"].startswith("DataError: ") and "dataset not found" in runs[0].data.tags["error"]
