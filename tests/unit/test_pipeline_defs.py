"""Pipeline definitions: the committed YAML is what the scripts write, components are thin, cluster jobs validate."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from tests.conftest import REPO, SHARED

pytestmark = pytest.mark.unit

PIPELINES = sorted(p.stem for p in (REPO / "pipelines").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", ["training", "tuning"])
def test_pipeline_exists(name: str) -> None:
    assert name in PIPELINES


@pytest.mark.parametrize("name", PIPELINES)
def test_committed_yaml_is_what_the_script_writes(name: str, tmp_path: Path) -> None:
    """`python pipelines/X.py` writes X.yaml beside it; run it on a copy and compare with the committed file."""
    import shutil

    for folder in ("pipelines", "components"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    committed = (REPO / "pipelines" / f"{name}.yaml").read_text()
    (tmp_path / "pipelines" / f"{name}.yaml").unlink()
    subprocess.run([sys.executable, f"pipelines/{name}.py"], cwd=tmp_path, check=True, timeout=120)
    written = (tmp_path / "pipelines" / f"{name}.yaml").read_text()
    assert written == committed, f"pipelines/{name}.yaml is stale: run `python pipelines/{name}.py`"


def _executors(name: str) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all((REPO / "pipelines" / f"{name}.yaml").read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform


def test_training_pipeline_shape() -> None:
    spec, platform = _executors("training")
    params = spec["root"]["inputDefinitions"]["parameters"]
    for p in ("dataset_uri", "config", "overrides", "verification_sets", "target_far", "gate_margin", "canary_percent"):
        assert p in params, p
    # Every step runs the project's image, versioned with the package.
    from facegate import __version__

    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"ghcr.io/facegate/facegate-pipeline:{__version__}"}
    # The train step asks for a GPU on the V100 workers; credentials come from Secrets, never parameters.
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    # A fixed count: kfp's local runner cannot resolve a resource from a pipeline parameter.
    assert train["accelerator"]["resourceCount"] == "1"
    assert platform["exec-train"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "Tesla-V100-PCIE-32GB"}
    assert platform["exec-train"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    secrets = {s["secretName"] for e in platform.values() for s in e.get("secretAsEnv", [])}
    assert secrets == {"facegate-s3", "facegate-gallery-db", "facegate-gallery-keys"}
    assert {s["secretName"] for s in platform["exec-train"]["secretAsEnv"]} == {"facegate-s3"}
    assert "facegate-gallery-keys" in {s["secretName"] for s in platform["exec-reindex"]["secretAsEnv"]}
    text = (REPO / "pipelines" / "training.yaml").read_text().lower()
    for word in ("password", "secret_key", "access_key"):
        assert f"{word}:" not in text
    # The gate guards the rollout branch; the exit handler records failures.
    dag = spec["root"]["dag"]["tasks"]
    assert (
        "record-failure" in dag and dag["record-failure"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    )
    inner = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert inner["condition-2"]["triggerPolicy"]["condition"].endswith("== 'promote'")
    rollout = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    loop = next(k for k in rollout if k.startswith("for-loop-"))
    assert set(rollout) == {loop, "canary", "analyze-canary", "finish-rollout"}
    assert loop in rollout["canary"]["dependentTasks"]  # every reindex shard before the canary
    shards = spec["components"][rollout[loop]["componentRef"]["name"]]["dag"]["tasks"]["reindex"]
    assert set(shards["inputs"]["parameters"]) == {"model", "shard", "shard_ids"}
    assert rollout[loop]["parameterIterator"]["items"]["inputParameter"].endswith("reindex_shards")
    assert spec["root"]["inputDefinitions"]["parameters"]["reindex_shards"]["defaultValue"] == [0, 1, 2]


def test_components_call_exactly_one_facegate_function() -> None:
    tree = ast.parse((REPO / "components" / "steps.py").read_text())
    components = [
        f
        for f in tree.body
        if isinstance(f, ast.FunctionDef)
        and any((isinstance(d, ast.Name) and d.id == "component") for d in f.decorator_list)
    ]
    assert len(components) >= 12
    for fn in components:
        body = (
            fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
        )
        imports = [n for n in body if isinstance(n, ast.ImportFrom)]
        assert len(imports) == 1 and imports[0].module.startswith("facegate."), fn.name
        imported = {a.asname or a.name for a in imports[0].names}
        calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
        assert len(calls) == 1, f"{fn.name} makes {len(calls)} calls: no logic belongs in a component"
        assert isinstance(calls[0].func, ast.Name) and calls[0].func.id in imported, fn.name
        assert len(body) == 2, f"{fn.name}: an import and one call, nothing else"


@pytest.mark.skipif(not (SHARED / "crds").is_dir(), reason="needs ../shared/crds (CI always has it)")
def test_cluster_jobs_validate_against_their_crds() -> None:
    from facegate.pipeline.cluster import ray_job, train_job
    from facegate.rollout.crds import CrdValidationError, validate
    from facegate.train.config import load_train_config

    cfg = load_train_config(REPO / "configs" / "tiny_cpu.yaml")
    tj = train_job(cfg, nodes=3, gpus_per_node=2)
    validate(tj, SHARED / "crds" / "kubeflow-trainer")
    assert tj["spec"]["trainer"]["numNodes"] == 3 and "--nproc_per_node 2" in tj["spec"]["trainer"]["args"][0]
    env = {e["name"]: e for e in tj["spec"]["trainer"]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "facegate-s3"
    assert yaml.safe_load(env["FACEGATE_TRAIN_CONFIG"]["value"])["model"]["backbone"] == cfg.model.backbone
    rj = ray_job(cfg, 8)
    validate(rj, SHARED / "crds" / "kuberay")
    assert (
        rj["spec"]["clusterSelector"] == {"ray.io/cluster": "facegate-tune"}
        and "--samples 8" in rj["spec"]["entrypoint"]
    )
    tj["spec"]["trainer"]["numNodez"] = 2  # a misspelt field must not pass
    with pytest.raises(CrdValidationError, match="numNodez"):
        validate(tj, SHARED / "crds" / "kubeflow-trainer")


class _FakeCustomObjects:
    """Stands in for kubernetes.client.CustomObjectsApi: records the create, then plays a status sequence."""

    def __init__(self, statuses: list[dict]) -> None:
        self.created: list[tuple] = []
        self.statuses = statuses

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):  # type: ignore[no-untyped-def]
        self.created.append((group, version, namespace, plural, body["metadata"]["name"]))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):  # type: ignore[no-untyped-def]
        return {"status": self.statuses.pop(0)}


def test_submit_and_wait_follows_job_status() -> None:
    from facegate.pipeline.cluster import ClusterJobError, ray_job, submit_and_wait, train_job
    from facegate.train.config import load_train_config

    cfg = load_train_config(REPO / "configs" / "tiny_cpu.yaml")
    api = _FakeCustomObjects([{}, {"conditions": [{"type": "Created", "status": "True"}]},
                              {"conditions": [{"type": "Complete", "status": "True"}]}])  # fmt: skip
    seen: list[dict] = []
    submit_and_wait(train_job(cfg, name="t1"), api=api, poll_s=0, on_poll=seen.append)
    assert api.created == [("trainer.kubeflow.org", "v1alpha1", "facegate-ml", "trainjobs", "t1")] and len(seen) == 3
    api = _FakeCustomObjects([{"jobStatus": "RUNNING"}, {"jobStatus": "FAILED", "message": "trial OOM"}])
    with pytest.raises(ClusterJobError, match="FAILED: trial OOM"):
        submit_and_wait(ray_job(cfg, 2, name="r1"), api=api, poll_s=0)
    api = _FakeCustomObjects([{}] * 100)
    with pytest.raises(ClusterJobError, match="did not finish"):
        submit_and_wait(train_job(cfg, name="t2"), api=api, poll_s=0, timeout_s=0)


class _FakeKfpClient:
    """Records what `facegate pipeline run` (no --local) asks of kfp.Client."""

    calls: ClassVar[list[tuple]] = []

    def __init__(self, host=None, namespace=None):  # type: ignore[no-untyped-def]
        self.calls.append(("init", host, namespace))

    def get_pipeline_id(self, name):  # type: ignore[no-untyped-def]
        self.calls.append(("get_pipeline_id", name))
        return "pid-1"

    def upload_pipeline_version(self, package, pipeline_version_name, pipeline_id):  # type: ignore[no-untyped-def]
        text = Path(package).read_text()
        self.calls.append(("upload_version", pipeline_id, "facegate-training" in text))
        return type("V", (), {"pipeline_version_id": "vid-7"})()

    def create_experiment(self, name, namespace=None):  # type: ignore[no-untyped-def]
        self.calls.append(("experiment", name, namespace))
        return type("E", (), {"experiment_id": "exp-3"})()

    def run_pipeline(self, experiment_id, job_name, params, pipeline_id, version_id):  # type: ignore[no-untyped-def]
        self.calls.append(("run", experiment_id, params, pipeline_id, version_id))
        return type("R", (), {"run_id": "run-42"})()

    def _get_url_prefix(self) -> str:
        return "https://kubeflow.example.edu/pipeline"


def test_remote_run_uploads_a_version_and_starts_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp
    from typer.testing import CliRunner

    from facegate.cli import app

    monkeypatch.setattr(kfp, "Client", _FakeKfpClient)
    _FakeKfpClient.calls = []
    res = CliRunner().invoke(
        app,
        ["pipeline", "run", "training", "--host", "https://kfp.example", "--namespace", "facegate-ml",
         "-p", "dataset_uri=s3://b/raw", "-p", "canary_percent=20", "-p", "target_far=1e-3", "-p", "gate_margin=0",
         "-p", "overrides=epochs=1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "https://kubeflow.example.edu/pipeline/#/runs/details/run-42" in res.output
    kinds = [c[0] for c in _FakeKfpClient.calls]
    assert kinds == ["init", "get_pipeline_id", "upload_version", "experiment", "run"]
    assert _FakeKfpClient.calls[2] == ("upload_version", "pid-1", True)
    run = _FakeKfpClient.calls[-1]
    # Command-line values become the declared KFP types (YAML alone reads 1e-3 as a string, 0 as an int).
    params = {"dataset_uri": "s3://b/raw", "canary_percent": 20, "target_far": 1e-3, "gate_margin": 0.0,
              "overrides": ["epochs=1"]}  # fmt: skip
    assert run[1:] == ("exp-3", params, "pid-1", "vid-7")
    assert isinstance(run[2]["gate_margin"], float)
    for bad in ("canary_percent=ten", "target_far=low", "nope=1"):
        res = CliRunner().invoke(app, ["pipeline", "run", "training", "-p", bad])
        assert res.exit_code == 2 and "[pipeline_error]" in res.output, res.output


def test_train_job_stages_inputs_and_fetches_the_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's pods cannot see the step pod's files: faces go through object storage, the config points at
    where the job pulls them, and the bundle the job pushed comes back."""
    from facegate.data.storage import open_storage
    from facegate.pipeline.cluster import run_train_job
    from facegate.train.config import load_train_config

    store_root = tmp_path / "store"
    monkeypatch.setenv("FACEGATE_STORAGE__URL", str(store_root))
    faces = tmp_path / "faces" / "alice"
    faces.mkdir(parents=True)
    (faces / "0.jpg").write_bytes(b"face")
    cfg = load_train_config(REPO / "configs" / "tiny_cpu.yaml", ["data.kind=folder", f"data.path={faces.parent}"])

    class Api(_FakeCustomObjects):
        def create_namespaced_custom_object(self, group, version, namespace, plural, body):  # type: ignore[no-untyped-def]
            super().create_namespaced_custom_object(group, version, namespace, plural, body)
            self.body = body
            name = body["metadata"]["name"]  # what the job's rank 0 would push
            open_storage(str(store_root)).put_bytes(f"runs/{name}/model/facegate.json", b'{"model": "x"}')

    api = Api([{"conditions": [{"type": "Complete", "status": "True"}]}])
    run_train_job(cfg, tmp_path / "model", api=api)
    name = api.body["metadata"]["name"]
    assert (store_root / "runs" / name / "inputs" / "data" / "alice" / "0.jpg").read_bytes() == b"face"
    trainer = api.body["spec"]["trainer"]
    env = {e["name"]: e for e in trainer["env"]}
    assert yaml.safe_load(env["FACEGATE_TRAIN_CONFIG"]["value"])["data"]["path"] == "/work/inputs/data"
    assert f"facegate data pull runs/{name}/inputs /work/inputs" in trainer["args"][0]
    assert (tmp_path / "model" / "facegate.json").is_file()


def test_proxied_mlflow_artifacts_map_to_their_object_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from facegate.registry.models import storage_uri_of

    src = "mlflow-artifacts:/3/0123abcd/artifacts/bundle"
    assert storage_uri_of(src) == src  # without the server's destination there is nothing to map to
    monkeypatch.setenv("FACEGATE_MLFLOW_ARTIFACTS_DESTINATION", "s3://facegate/mlflow/")
    assert storage_uri_of(src) == "s3://facegate/mlflow/3/0123abcd/artifacts/bundle"
    assert (
        storage_uri_of("mlflow-artifacts://mlflow:5000/3/x/artifacts/bundle")
        == "s3://facegate/mlflow/3/x/artifacts/bundle"
    )
    assert storage_uri_of("s3://other/bundle") == "s3://other/bundle"


def test_holdout_pairs_are_all_pairs_or_a_fixed_sample(tmp_path: Path) -> None:
    import csv

    from facegate.pipeline.steps._common import _all_pairs_csv, _pairsets

    for ident in range(30):
        d = tmp_path / "held" / f"id{ident:02d}"
        d.mkdir(parents=True)
        for k in range(2):
            (d / f"{k}.jpg").write_bytes(b"x")
    _all_pairs_csv(tmp_path / "held", tmp_path / "all.csv")
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert sum(r["same"] == "1" for r in rows) == 30 and sum(r["same"] == "0" for r in rows) == 4 * 435
    _all_pairs_csv(tmp_path / "held", tmp_path / "a.csv", max_impostors=500)
    _all_pairs_csv(tmp_path / "held", tmp_path / "b.csv", max_impostors=500)
    sampled = list(csv.DictReader((tmp_path / "a.csv").open()))
    impostors = [(r["image_a"], r["image_b"]) for r in sampled if r["same"] == "0"]
    assert len(impostors) == len(set(impostors)) == 500
    assert all(a.split("/")[0] != b.split("/")[0] for a, b in impostors)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()  # every step scores the same pairs
    # A pairs path with "=" in it is a path, not NAME=PATH.
    odd = tmp_path / "x=y"
    odd.mkdir()
    (odd / "p.csv").write_text("image_a,image_b,same\nid00/0.jpg,id00/1.jpg,1\nid00/0.jpg,id01/0.jpg,0\n")
    [(name, ps)] = _pairsets([f"{odd / 'p.csv'}|{tmp_path / 'held'}"], None)
    assert name == "p" and len(ps) == 2


def test_local_runs_clean_only_their_own_temp_folders(tmp_path, monkeypatch):
    # kfp's local runner writes each task's source to $(mktemp -d); a second run's folder in the shared temp
    # folder must survive this run's clean-up.
    import tempfile

    from facegate.pipeline.runner import private_tmpdir

    shared = Path(tempfile.gettempdir())
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with private_tmpdir() as scratch:
        made = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip())
        (made / "ephemeral_component.py").write_text("# this run's task")
        other = Path(tempfile.mkdtemp(prefix="tmp.", dir=shared))  # a concurrent run's task folder
        (other / "ephemeral_component.py").write_text("# another run's task")
        assert made.parent == scratch
    try:
        assert not scratch.exists() and not made.exists()
        assert (other / "ephemeral_component.py").is_file()
        assert os.environ["TMPDIR"] == str(tmp_path)
    finally:
        shutil.rmtree(other, ignore_errors=True)
