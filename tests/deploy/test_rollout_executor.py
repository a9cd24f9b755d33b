"""The training pipeline's rollout on a cluster (target=cluster), under the manifests' RBAC, with the real helm.

tests/deploy/fake_kube.py enforces the Roles of manifests/base for two identities: the pipeline runner (the
pipeline's canary and finish steps, run here in-process) and the rollout executor (`facegate rollout executor`, the
Deployment's command, run here as a child process with the real helm). The steps must get the release upgraded
although the runner may not touch the release's Secrets, and no request either identity makes may be refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from facegate.rollout.kserve import model_version_label
from facegate.rollout.procs import stop_process
from facegate.serve.gallery import Gallery, KeyRing
from tests.conftest import REPO
from tests.deploy.conftest import CHART
from tests.deploy.fake_kube import FakeKube, Rules
from tests.integration.test_rollout import _bundle

pytestmark = pytest.mark.integration

NS = "facegate"
RUNNER = "system:serviceaccount:facegate-ml:pipeline-runner"
EXECUTOR = "system:serviceaccount:facegate:facegate-rollout-executor"


def manifest_rbac() -> dict[str, dict[str, Rules]]:
    """Service account (as its token names it) -> namespace -> rules, from manifests/base's Roles and bindings."""
    docs = [d for f in sorted((REPO / "manifests" / "base").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    docs = [d for d in docs if d]
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["rules"] for d in docs if d["kind"] == "Role"}
    out: dict[str, dict[str, Rules]] = {}
    for binding in (d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "Role"):
        ns = binding["metadata"]["namespace"]
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount":
                who = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
                out.setdefault(who, {}).setdefault(ns, []).extend(roles[(ns, binding["roleRef"]["name"])])
    return out


def _manifest(kind: str, name: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "manifests" / "base" / "rollout-executor.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture
def cluster(helm: Path, tmp_path: Path) -> Iterator[tuple[FakeKube, dict[str, Path]]]:
    """The chart installed by the admin, the manifests' request ConfigMap, and one kubeconfig per identity."""
    rbac = manifest_rbac()
    assert RUNNER in rbac and EXECUTOR in rbac, "the manifests bind no Role in facegate to the runner or executor"
    with FakeKube(rbac=rbac) as kube:
        configs = {}
        for who, token in (("admin", "admin"), ("runner", RUNNER), ("executor", EXECUTOR)):
            configs[who] = tmp_path / f"kubeconfig-{who}"
            configs[who].write_text(kube.kubeconfig(NS, token=token))
        code, _ = kube.handle("POST", f"/api/v1/namespaces/{NS}/configmaps", {},
                              _manifest("ConfigMap", "facegate-rollout-request"))  # fmt: skip
        assert code == 201
        env = {**os.environ, "KUBECONFIG": str(configs["admin"]), **_helm_homes(tmp_path)}
        # The re-index hook Job would wait for a Job controller this server does not have.
        cmd = [str(helm), "install", "facegate", str(CHART), "--namespace", NS, "--set", "reindex.enabled=false"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        yield kube, configs


def _helm_homes(tmp_path: Path) -> dict[str, str]:
    return {f"HELM_{k}_HOME": str(tmp_path / f"helm-{k.lower()}") for k in ("CACHE", "CONFIG", "DATA")}


@pytest.fixture
def executor(cluster: tuple[FakeKube, dict[str, Path]], image_helm: Path, tmp_path: Path) -> Iterator[Path]:
    """`facegate rollout executor` as the Deployment runs it: its identity, the image's helm; yields its heartbeat.

    The release was installed by helm 3 (as the playbook installs it); the image's helm 4 upgrades it.
    """
    _, configs = cluster
    heartbeat = tmp_path / "executor-alive"
    env = {**os.environ, "KUBECONFIG": str(configs["executor"]), "FACEGATE_HELM": str(image_helm),
           "FACEGATE_HELM_CHART": str(CHART), "HELM_DRIVER": "secret",
           **_helm_homes(tmp_path / "executor")}  # fmt: skip
    cmd = [sys.executable, "-m", "facegate", "rollout", "executor", "--poll", "0.2", "--heartbeat", str(heartbeat)]
    log = tmp_path / "executor.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        yield heartbeat
    finally:
        stop_process(proc)
    assert proc.returncode in (0, -15, 143), log.read_text()[-3000:]


def _served(kube: FakeKube) -> tuple[str, str, int, str]:
    obj = kube.get("inferenceservices", NS, "facegate-verifier")
    assert obj is not None
    predictor = obj["spec"]["predictor"]
    return (predictor["model"]["storageUri"], obj["metadata"]["annotations"]["facegate.io/model-version"],
            predictor["canaryTrafficPercent"], predictor["labels"]["facegate.io/model-version"])  # fmt: skip


def test_the_pipelines_cluster_rollout_goes_through_the_executor(
    cluster: tuple[FakeKube, dict[str, Path]],
    executor: Path,
    helm: Path,
    tmp_path: Path,
    photos: Path,
    aligner: Any,
    monkeypatch: Any,
) -> None:
    from facegate.bundles import load_embedder
    from facegate.pipeline.steps.rollout import canary_step, finish_rollout_step
    from facegate.registry.models import _client, get_version

    kube, configs = cluster
    home = tmp_path / "home"
    home.mkdir()
    step_env = {"KUBECONFIG": str(configs["runner"]), "FACEGATE_HOME": str(home), **_helm_homes(tmp_path)}
    for key, value in step_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FACEGATE_CONFIG", raising=False)
    # The gallery (settings' default, <home>/gallery.db) holds templates for the new version: the step checks it.
    version = "fg-v2+build.7"
    g = Gallery(f"sqlite:///{home / 'gallery.db'}", KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k")}))
    g.enroll("S-1", [(photos / "train" / "obama" / "obama.jpg").read_bytes()],
             load_embedder(_bundle(tmp_path / "v1", "fg-v1")), aligner)  # fmt: skip
    g.reindex(load_embedder(_bundle(tmp_path / "v2", version)))
    g.engine.dispose()
    # A registered version as the cluster's registry hands it out: an s3:// source (storage_uri_of).
    client = _client(home)
    client.create_registered_model("facegate")
    mv = client.create_model_version("facegate", "s3://facegate/mlflow/2/bundle", tags={"model_version": version})
    model = f"models:/facegate/{mv.version}"

    assert canary_step(model, 10, target="cluster") == version
    assert _served(kube) == ("s3://facegate/mlflow/2/bundle", version, 10, model_version_label(version))
    assert finish_rollout_step("promote", model, target="cluster") == f"champion=models:/facegate/{mv.version}"
    assert _served(kube)[1:3] == (version, 100)
    assert get_version("models:/facegate@champion", home=home).model_version == version
    assert executor.exists(), "the executor never touched its heartbeat"

    # The release recorded both steps, as `facegate rollout` would have.
    env = {**os.environ, "KUBECONFIG": str(configs["admin"]), **_helm_homes(tmp_path)}
    out = subprocess.run([str(helm), "history", "facegate", "-n", NS, "-o", "json"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    assert [h["description"] for h in json.loads(out)[1:]] == [
        f"facegate rollout canary {version} 10%",
        f"facegate rollout promote {version}",
    ]
    # Both identities had exactly what they needed...
    assert kube.denied == []
    request = json.loads(kube.get("configmaps", NS, "facegate-rollout-request")["data"]["result"])  # type: ignore[index]
    assert request["ok"] and request["action"] == "promote"


def test_the_pipeline_runner_cannot_run_helm_on_the_release(
    cluster: tuple[FakeKube, dict[str, Path]], helm: Path, tmp_path: Path
) -> None:
    # ...and the runner has no way to the release's Secrets (or any other Secret beside them): what the old
    # cluster path, helm in the pipeline pod, would have needed.
    from facegate.rollout.helm import HelmError, HelmRelease

    kube, configs = cluster
    release = HelmRelease(helm=str(helm), chart=str(CHART), env={"KUBECONFIG": str(configs["runner"]),
                                                                 **_helm_homes(tmp_path)})  # fmt: skip
    with pytest.raises(HelmError) as exc:
        release.set_model("s3://b/v3", "v3", 10, action="canary")
    assert f"{RUNNER} cannot list secrets" in exc.value.message
    assert any(d[0] == RUNNER and d[3] == "secrets" for d in kube.denied)


def test_a_bad_request_is_answered_and_changes_nothing(
    cluster: tuple[FakeKube, dict[str, Path]], executor: Path, monkeypatch: Any
) -> None:
    from facegate.rollout.executor import RemoteRelease, RolloutRequest
    from facegate.rollout.kserve import RolloutError

    kube, configs = cluster
    monkeypatch.setenv("KUBECONFIG", str(configs["runner"]))
    before = _served(kube)
    # A value the chart's schema would refuse is refused before it is even sent...
    with pytest.raises(RolloutError) as exc:
        RemoteRelease(timeout_s=60, poll_s=0.2).set_model("s3://b/v3", "v3\nimage: evil", 10, action="canary")
    assert exc.value.code == "bad_request"
    # ...and by the executor when a writer skips that check (an action it does not know); the answer says why.
    bad = {"id": "0" * 32, "action": "canary", "storage_uri": "s3://b/v3", "model_version": "v3", "percent": 10}
    kube.handle("PATCH", f"/api/v1/namespaces/{NS}/configmaps/facegate-rollout-request", {},
                {"data": {"request": json.dumps({**bad, "action": "install"})}})  # fmt: skip
    with pytest.raises(RolloutError):
        RolloutRequest(**{**bad, "action": "install"})
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = (kube.get("configmaps", NS, "facegate-rollout-request") or {}).get("data", {}).get("result")
        if result and json.loads(result)["id"] == bad["id"]:
            break
        time.sleep(0.2)
    answer = json.loads(result or "{}")
    assert answer["ok"] is False and "bad_request" in answer["error"]
    assert _served(kube) == before


def test_a_chart_folder_of_another_version_is_refused(
    cluster: tuple[FakeKube, dict[str, Path]], image_helm: Path, tmp_path: Path
) -> None:
    # The executor's chart is the one in its image: an image of another version must not upgrade the chart.
    import shutil

    from facegate.rollout.helm import HelmError, HelmRelease

    kube, configs = cluster
    chart = tmp_path / "facegate"
    shutil.copytree(CHART, chart)
    meta = chart / "Chart.yaml"
    meta.write_text(meta.read_text().replace("\nversion: ", "\nversion: 9.", 1))
    env = {"KUBECONFIG": str(configs["executor"]), **_helm_homes(tmp_path)}
    before = _served(kube)
    with pytest.raises(HelmError) as exc:
        HelmRelease(helm=str(image_helm), chart=str(chart), env=env).set_model("s3://b/v3", "v3", 10, action="canary")
    assert exc.value.code == "chart_mismatch"
    assert _served(kube) == before
