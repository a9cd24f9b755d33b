"""Each deployment validator can fail: a broken copy of the tree makes `tools/validate/validate.sh STEP` exit
non-zero, naming the problem. The unbroken tree passes the same steps in `make validate`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED
from tests.deploy.conftest import HELM, VALIDATE_VENV, require_tool

pytestmark = pytest.mark.integration

VALIDATE = REPO / "tools" / "validate" / "validate.sh"
TREE = ("helm", "manifests", "docker", "terraform", "ansible", "tools/validate")


@pytest.fixture
def broken_tree(tmp_path: Path) -> Callable[[str, Callable[[str], str]], Path]:
    """A copy of the deployment tree with one file rewritten by `edit`."""
    require_tool(HELM)
    require_tool(VALIDATE_VENV / "checkov")
    root = tmp_path / "main"
    for part in TREE:
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns(".terraform", "__pycache__"))

    def _break(path: str, edit: Callable[[str], str]) -> Path:
        target = root / path
        before = target.read_text() if target.exists() else ""
        after = edit(before)
        assert after != before, f"the edit did not change {path}"
        target.write_text(after)
        return root

    return _break


def run_step(root: Path, *steps: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACEGATE_ROOT": str(root), "SHARED": str(SHARED)}
    return subprocess.run([str(VALIDATE), *steps], env=env, capture_output=True, text=True, timeout=300)


def assert_fails(result: subprocess.CompletedProcess[str], needle: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"validator passed a broken tree:\n{output[-3000:]}"
    assert needle in output, f"{needle!r} not in the validator's output:\n{output[-3000:]}"


def test_broken_value_fails_helm(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree(
        "helm/facegate/values-chameleon.yaml",
        lambda s: s.replace("canaryTrafficPercent: 10", "canaryTrafficPercent: 150"),
    )
    assert_fails(run_step(root, "chart"), "canaryTrafficPercent: Must be less than or equal to 100")


def test_unknown_value_fails_helm(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree("helm/facegate/values-dev.yaml", lambda s: s + "verifier:\n  canaryTraficPercent: 5\n")
    assert_fails(run_step(root, "chart"), "Additional property canaryTraficPercent is not allowed")


def test_undocumented_value_fails_the_values_table(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree("helm/facegate/values.yaml", lambda s: s.replace("    # -- Scrape interval.\n", ""))
    assert_fails(run_step(root, "chart"), "values without a `# --` comment: metrics.serviceMonitor.interval")


def test_bad_crd_field_fails_schema_validation(broken_tree: Callable[..., Path]) -> None:
    if not (SHARED / "crds").is_dir():
        pytest.skip(f"needs {SHARED / 'crds'}")
    root = broken_tree(
        "manifests/base/raycluster.yaml",
        lambda s: s.replace("  enableInTreeAutoscaling: true", "  enableAutoscaling: true"),
    )
    assert_fails(run_step(root, "k8s"), "'enableAutoscaling' was unexpected")


def test_unknown_builtin_field_fails_kubernetes_validate(broken_tree: Callable[..., Path]) -> None:
    if not (SHARED / "crds").is_dir():
        pytest.skip(f"needs {SHARED / 'crds'}")
    root = broken_tree(
        "helm/facegate/templates/mlflow.yaml", lambda s: s.replace("revisionHistoryLimit: 3", "revisionHistory: 3")
    )
    assert_fails(run_step(root, "k8s"), "'revisionHistory' was unexpected")


def test_ssh_open_security_group_fails_checkov(broken_tree: Callable[..., Path]) -> None:
    rule = """
resource "openstack_networking_secgroup_rule_v2" "ssh_world" {
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 22
  port_range_max    = 22
  remote_ip_prefix  = "0.0.0.0/0"
  security_group_id = openstack_networking_secgroup_v2.cluster.id
}
"""
    root = broken_tree("terraform/chameleon/main.tf", lambda s: s + rule)
    assert_fails(run_step(root, "checkov-terraform"), "CKV_OPENSTACK_2")


def test_root_container_fails_checkov(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree(
        "helm/facegate/templates/_helpers.tpl",
        lambda s: s.replace("runAsNonRoot: true", "runAsNonRoot: false").replace("runAsUser: 10001", "runAsUser: 0"),
    )
    assert_fails(run_step(root, "checkov-k8s"), "CKV_K8S_23")


def test_root_user_in_dockerfile_fails_hadolint(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree("docker/serve.Dockerfile", lambda s: s.replace("USER 10001:10001", "USER root"))
    assert_fails(run_step(root, "docker"), "DL3002")


def test_unformatted_terraform_fails_fmt(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree("terraform/chameleon/outputs.tf", lambda s: s.replace("  value       =", "  value =    "))
    assert_fails(run_step(root, "terraform"), "outputs.tf")


def test_ansible_lint_rejects_a_bare_command(broken_tree: Callable[..., Path]) -> None:
    task = "\n- name: Restart kubelet by hand\n  ansible.builtin.command: systemctl restart kubelet\n"
    root = broken_tree("ansible/roles/kuberay/tasks/main.yml", lambda s: s + task)
    assert_fails(run_step(root, "ansible"), "no-changed-when")


def test_overlong_yaml_line_fails_yamllint(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree("manifests/base/namespace.yaml", lambda s: s + "# " + "a long comment " * 10 + "\n")
    assert_fails(run_step(root, "yaml"), "line too long")


def test_broken_inventory_module_fails_terraform_test(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree(
        "terraform/modules/inventory/main.tf", lambda s: s.replace('node_pool = "gpu-v100"', 'node_pool = "gpu"')
    )
    assert_fails(run_step(root, "terraform"), "GPU workers must be labelled for the gpu-v100 pool")


def test_unknown_play_keyword_fails_the_syntax_check(broken_tree: Callable[..., Path]) -> None:
    root = broken_tree(
        "ansible/site.yml", lambda s: s.replace("  become: true\n", "  become: true\n  becom: true\n", 1)
    )
    assert_fails(run_step(root, "ansible"), "becom")


def test_dockerfile_without_healthcheck_fails_checkov(broken_tree: Callable[..., Path]) -> None:
    def drop_healthcheck(text: str) -> str:
        lines = text.splitlines(keepends=True)
        start = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK"))
        return "".join(lines[:start] + lines[start + 2 :])

    root = broken_tree("docker/serve.Dockerfile", drop_healthcheck)
    assert_fails(run_step(root, "checkov-docker"), "CKV_DOCKER_2")


def test_a_kind_nothing_installs_fails_k8s(broken_tree: Callable[..., Path]) -> None:
    # Standalone Kubeflow Pipelines installs no Profile CRD: a Profile in the manifests must fail, not be waved through.
    profile = "---\napiVersion: kubeflow.org/v1\nkind: Profile\nmetadata:\n  name: facegate-ml\nspec: {}\n"
    root = broken_tree("manifests/base/namespace.yaml", lambda s: s + profile)
    assert_fails(run_step(root, "k8s"), "no schema for kubeflow.org/v1 Profile")


@pytest.mark.skipif(not (SHARED / "crds").is_dir(), reason=f"needs {SHARED / 'crds'}")
def test_the_old_serverless_mode_name_fails_k8s(broken_tree: Callable[..., Path]) -> None:
    # KServe v0.16 renamed the mode to Knative; the chart maps a user's Serverless value, but a template that wrote
    # the old name itself would deploy on a deprecated alias.
    template = "helm/facegate/templates/inferenceservice.yaml"
    current = 'deploymentMode: {{ include "facegate.deploymentMode" . }}'
    root = broken_tree(template, lambda s: s.replace(current, "deploymentMode: Serverless"))
    assert_fails(run_step(root, "k8s"), "serving.kserve.io/deploymentMode: Serverless is deprecated, write Knative")
