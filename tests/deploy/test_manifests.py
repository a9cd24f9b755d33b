"""The kustomize overlays (built with the real kubectl from make validate-tools): names the pipelines rely on and the
placement of GPU work."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.conftest import of_kind, one, require_tool

pytestmark = pytest.mark.integration

KUBECTL = REPO / ".tools" / "bin" / "kubectl"
V100_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}


def build(overlay: str) -> list[dict[str, Any]]:
    kubectl = require_tool(KUBECTL)
    out = subprocess.run(
        [str(kubectl), "kustomize", str(REPO / "manifests" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_chameleon_runs_ddp_and_tuning_on_the_v100_pool() -> None:
    objects = build("chameleon")
    runtime = one(objects, "ClusterTrainingRuntime", "facegate-ddp-v100")
    assert runtime["spec"]["mlPolicy"]["numNodes"] == 2
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"facegate.io/pool": "gpu-v100"} and V100_TOLERATION in pod["tolerations"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["containers"][0]["command"][:4] == ["torchrun", "-m", "facegate", "train"]

    ray = one(objects, "RayCluster", "facegate-tune")
    assert ray["metadata"]["namespace"] == "facegate-ml"
    (workers,) = ray["spec"]["workerGroupSpecs"]
    assert workers["minReplicas"] == 0 and workers["maxReplicas"] == 2
    assert V100_TOLERATION in workers["template"]["spec"]["tolerations"]


def test_dev_workloads_need_no_gpu_and_no_node_pool() -> None:
    objects = build("dev")
    for kind, name in (("ClusterTrainingRuntime", "facegate-ddp-v100"), ("RayCluster", "facegate-tune")):
        text = yaml.safe_dump(one(objects, kind, name))
        assert "nvidia.com/gpu" not in text and "facegate.io/pool" not in text, kind


@pytest.mark.parametrize("overlay", ["dev", "chameleon"])
def test_pipeline_runner_may_only_touch_the_verifier_in_the_serving_namespace(overlay: str) -> None:
    objects = build(overlay)
    assert one(objects, "Namespace", "facegate-ml")
    assert not of_kind(objects, "Profile"), "nothing installs the Profile CRD next to standalone Kubeflow Pipelines"
    rollout = one(objects, "Role", "facegate-rollout")
    assert rollout["metadata"]["namespace"] == "facegate"
    # Read the verifier, write a rollout request: every rule by name, no Secrets, Pods or Jobs (which could mount
    # the gallery keys); the rollout executor, under its own account, does the helm upgrade.
    allowed = {("serving.kserve.io", "facegate-verifier"): {"get"}, ("", "facegate-rollout-request"): {"get", "patch"}}
    for rule in rollout["rules"]:
        for group in rule["apiGroups"]:
            assert rule["resourceNames"] and all((group, n) in allowed for n in rule["resourceNames"]), rule
            assert all(set(rule["verbs"]) <= allowed[(group, n)] for n in rule["resourceNames"]), rule
        assert not {"secrets", "pods", "jobs"} & set(rule["resources"]), rule
    executor = one(objects, "Deployment", "facegate-rollout-executor")["spec"]["template"]["spec"]
    assert executor["serviceAccountName"] == "facegate-rollout-executor"
    executor_binding = one(objects, "RoleBinding", "facegate-rollout-executor")
    assert executor_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "facegate-rollout-executor", "namespace": "facegate"}
    ]
    binding = one(objects, "RoleBinding", "facegate-pipeline-runner-rollout")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "facegate-ml"}]
    assert all(o["kind"] != "ClusterRole" or o["rules"][0]["resourceNames"] == ["facegate-ddp-v100"] for o in objects)
