"""A failed pipeline run's MLflow record names the step that failed and its error class, not KFP's generic status.

The step functions are called as the components call them, in this process: the pipeline run is what the
environment says (a local run id, or the pod's name on a cluster), exactly as in a step's subprocess or pod.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WORKFLOW = "facegate-training-x7k2p"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = (tmp_path / "home").resolve()
    monkeypatch.setenv("FACEGATE_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "FACEGATE_PIPELINE_RUN_ID", "KFP_POD_NAME", "FACEGATE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home


def _runs(home: Path) -> list:
    from mlflow import MlflowClient

    from facegate.registry.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(home))
    exp = client.get_experiment_by_name("facegate-pipelines")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _fail_ingest(tmp_path: Path) -> None:
    from facegate.errors import DataError
    from facegate.pipeline.steps import ingest_step

    with pytest.raises(DataError, match="dataset not found"):
        ingest_step(str(tmp_path / "nowhere"), str(tmp_path / "train"), str(tmp_path / "held"))


def test_local_run_records_the_failing_step_and_its_error_class(home: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from facegate.pipeline.failures import local_run
    from facegate.pipeline.steps import record_failure_step
    from facegate.registry.tracking import tracking_uri

    with local_run():
        _fail_ingest(tmp_path)
        # What kfp's local runner hands the exit handler: its own generic line.
        run_id = record_failure_step("FAILED", "Task exit-handler-1 failed.", "facegate-training-2026-12-02")
    runs = _runs(home)
    assert [r.info.run_id for r in runs] == [run_id]  # one record per failed pipeline run: the step's note, completed
    tags = runs[0].data.tags
    assert tags["failed_step"] == "ingest" and tags["error_class"] == "DataError"
    assert tags["error"].startswith("DataError: ") and "dataset not found" in tags["error"]
    assert tags["state"] == "FAILED" and tags["facegate.kind"] == "pipeline-failure"
    assert tags["pipeline_run"] == "facegate-training-2026-12-02" and runs[0].info.status == "FAILED"
    path = MlflowClient(tracking_uri=tracking_uri(home)).download_artifacts(run_id, "error.txt", str(tmp_path))
    assert Path(path).read_text().startswith("DataError: ")


def test_cluster_exit_handler_finds_its_own_workflows_failure(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two concurrent runs fail in different steps: each exit handler names its own run's step (pod names as Argo
    gives them: ``<workflow>-system-container-impl-<hash>``)."""
    from facegate.errors import ModelError
    from facegate.pipeline.failures import note_step_failure
    from facegate.pipeline.steps import record_failure_step

    monkeypatch.setenv("KFP_POD_NAME", f"{WORKFLOW}-system-container-impl-1311401386")
    _fail_ingest(tmp_path)
    monkeypatch.setenv("KFP_POD_NAME", "facegate-training-x7k2q-retry-system-container-impl-99")
    note_step_failure("train", ModelError("models:/facegate/7: not registered"))
    monkeypatch.setenv("KFP_POD_NAME", f"{WORKFLOW}-system-container-impl-2750203714")
    run_id = record_failure_step("FAILED", "", "nightly")
    tags = {r.info.run_id: r.data.tags for r in _runs(home)}
    assert tags[run_id]["failed_step"] == "ingest" and tags[run_id]["error_class"] == "DataError"
    other = next(t for i, t in tags.items() if i != run_id)
    assert other["failed_step"] == "train" and other["facegate.kind"] == "step-failure"  # still unclaimed


def test_without_a_note_the_record_says_so(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod killed before Python could write (OOM): KFP's status is all there is, and the record says so."""
    from facegate.pipeline.steps import record_failure_step

    monkeypatch.setenv("KFP_POD_NAME", f"{WORKFLOW}-system-container-impl-2750203714")
    run_id = record_failure_step("FAILED", "", "nightly")
    (run,) = _runs(home)
    assert run.info.run_id == run_id and run.data.tags["failed_step"] == "unknown"


def test_a_step_outside_a_pipeline_run_writes_nothing(home: Path, tmp_path: Path) -> None:
    _fail_ingest(tmp_path)
    assert not (home / "mlflow.db").exists()


def test_the_message_never_carries_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from facegate.errors import StorageError
    from facegate.pipeline.failures import safe_message

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-K7MDENG")
    exc = StorageError("s3://AKIA:wJalrXUtnFEMI-K7MDENG@minio/raw: denied (key wJalrXUtnFEMI-K7MDENG)\ntrace")
    text = safe_message(exc)
    assert text.startswith("StorageError: s3://***@minio/raw: denied") and "wJalr" not in text and "trace" not in text


@pytest.mark.parametrize(
    ("pod", "prefix"),
    [
        (f"{WORKFLOW}-system-container-impl-2750203714", f"{WORKFLOW}-"),  # Argo pod names v2
        (f"{WORKFLOW}-2750203714", f"{WORKFLOW}-"),  # v1: the node id
        ("facegate-training-12345-retry-system-container-impl-7", "facegate-training-12345-"),
        ("facegate-training-12345-metadata-1-2-system-container-impl-7", "facegate-training-12345-"),
        ("not-a-pod-name", ""),
    ],
)
def test_the_exit_handler_takes_its_workflow_off_its_pod_name(
    pod: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facegate.pipeline.failures import LOCAL_RUN_ENV, _run_prefix

    monkeypatch.delenv(LOCAL_RUN_ENV, raising=False)
    monkeypatch.setenv("KFP_POD_NAME", pod)
    assert _run_prefix() == prefix
