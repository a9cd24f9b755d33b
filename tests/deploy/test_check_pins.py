"""The pins check (tools/validate/check_pins.py) against ../shared/upstream: the tree's pins pass; an unknown tag,
chart name, chart version or install path, a pin newer than the snapshot, and each finding of issue 15 section 2
fail it, naming the pin."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED

CHECK = REPO / "tools" / "validate" / "check_pins.py"
UPSTREAM = SHARED / "upstream"
VERSIONS = "ansible/group_vars/all/versions.yml"
KSERVE_ROLE = "ansible/roles/knative_kserve/tasks/main.yml"
LOCK = "terraform/chameleon/.terraform.lock.hcl"
PARTS = ("ansible", "helm", "manifests", "terraform", "docker", "tools/validate", "tools/images", "pyproject.toml")


def run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), "--root", str(root), "--upstream", str(UPSTREAM), "--today", "2026-12-02"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Callable[..., Path]:
    """tree((path, old, new), ...) -> a copy of the deployment files with each `old` replaced by `new` in `path`."""
    if not (UPSTREAM / "index.json").exists():
        pytest.skip(f"needs {UPSTREAM} (the upstream release snapshot in ../shared; CI always has it)")
    root = tmp_path / "main"
    for part in PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__", ".terraform"))
        else:
            shutil.copy2(source, root / part)

    def _edit(*edits: tuple[str, str, str]) -> Path:
        for path, old, new in edits:
            target = root / path
            text = target.read_text()
            assert re.search(old, text, flags=re.M), f"{old!r} not in {path}"
            target.write_text(re.sub(old, new, text, count=1, flags=re.M))
        return root

    return _edit


def failures(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    return "\n".join(line for line in result.stdout.splitlines() if line.startswith(("WRONG", "UNVERIFIABLE")))


def test_the_trees_pins_pass(tree: Callable[..., Path]) -> None:
    result = run(tree())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WRONG" not in result.stdout and "UNVERIFIABLE" not in result.stdout
    # Every kind of check ran on a real pin.
    for what in ("tag v1.", "chart kserve-resources", "manifests/kustomize/env/platform-agnostic exists", "LTS"):
        assert what in result.stdout, what


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        # An unknown tag below the snapshot's newest: wrong, not merely unverifiable.
        (
            (VERSIONS, r"^kubeflow_pipelines_version: .*$", 'kubeflow_pipelines_version: "2.16.9"'),
            "no stable tag 2.16.9",
        ),
        # An unknown chart name, and a chart version that was never published.
        ((KSERVE_ROLE, r"charts/kserve-resources$", "charts/kserve-controller"), "no chart named 'kserve-controller'"),
        ((VERSIONS, r"^kuberay_operator_chart_version: .*$", 'kuberay_operator_chart_version: "1.3.9"'), "1.3.9"),
        # An install path the pinned tag does not have.
        (
            ("ansible/roles/kubeflow_pipelines/tasks/main.yml", r"env/platform-agnostic", "env/platform-agnostic-pns"),
            "platform-agnostic-pns",
        ),
        # Newer than the snapshot: unverifiable, which fails unless acknowledged with a reason.
        ((VERSIONS, r"^kserve_chart_version: .*$", "kserve_chart_version: v0.21.0"), "UNVERIFIABLE"),
        # A pin no check knows about.
        ((VERSIONS, r"^facegate_version:", 'istio_version: "1.27.1"\nfacegate_version:'), "no check knows this pin"),
    ],
)
def test_an_unknown_pin_fails(tree: Callable[..., Path], edit: tuple[str, str, str], named: str) -> None:
    assert named in failures(run(tree(edit)))


def test_an_acknowledged_unverifiable_pin_passes(tree: Callable[..., Path]) -> None:
    pin = "kube_prometheus_stack_chart_version"
    root = tree((VERSIONS, rf"^{pin}: .*$", f'{pin}: "99.0.0"'))
    assert "UNVERIFIABLE" in failures(run(root))
    acknowledged = root / "tools/validate/pins-unverifiable.yaml"
    acknowledged.write_text(acknowledged.read_text() + f'"{pin}=99.0.0": released after the snapshot was taken\n')
    result = run(root)
    assert result.returncode == 0, result.stdout
    assert "acknowledged" in result.stdout


@pytest.mark.parametrize(
    ("edits", "named"),
    [
        # 2.1: the chart `kserve` stops at v0.16.0.
        (((KSERVE_ROLE, r"charts/kserve-resources$", "charts/kserve"),), "chart kserve has no version v0.20.0"),
        # 2.2: Trainer's chart 2.0.0 exists in git but predates the OCI publishing (from 2.1.0).
        (((VERSIONS, r"^kubeflow_trainer_chart_version: .*$", 'kubeflow_trainer_chart_version: "2.0.0"'),), "predates"),
        # 2.5: the old stack, one skew at a time.
        (((VERSIONS, r"^kubeflow_pipelines_version: .*$", 'kubeflow_pipelines_version: "2.5.0"'),), "SDK kfp==2.17"),
        (
            (
                (VERSIONS, r"^kubernetes_minor: .*$", 'kubernetes_minor: "1.32"'),
                (VERSIONS, r"^kubernetes_version: .*$", 'kubernetes_version: "1.32.9"'),
                (VERSIONS, r"^kubernetes_apt_version: .*$", 'kubernetes_apt_version: "1.32.9-1.1"'),
            ),
            "among the three newest minors",
        ),
        (((VERSIONS, r"^containerd_version: .*$", 'containerd_version: "2.2.7"'),), "end of life November 6, 2026"),
        (((VERSIONS, r"^containerd_version: .*$", 'containerd_version: "2.1.9"'),), "2.1.9 vs"),
        (((VERSIONS, r"^knative_serving_version: .*$", 'knative_serving_version: "1.19.0"'),), "Serving 1.19.0 vs"),
        (
            ((VERSIONS, r"^knative_operator_chart_version: .*$", "knative_operator_chart_version: v1.19.0"),),
            "1.21.1 vs knative-v1.19.0",
        ),
        (((VERSIONS, r"^helm_version: .*$", "helm_version: v3.17.2"),), "client-go v0.32.2"),
        # 2.6: a floating provider constraint.
        ((("terraform/chameleon/versions.tf", r'version = "3.4.0"', 'version = "~> 3.0"'),), "floats"),
        # The provider lock: the version it locks, its constraint, and the release-archive hashes it checks.
        (((LOCK, r'version     = "3.4.0"', 'version     = "3.3.2"'),), "does not lock openstack 3.4.0"),
        (((LOCK, r'constraints = "3.4.0"', 'constraints = "~> 3.0"'),), "not the exact pin"),
        (((LOCK, r'^    "zh:.*",\n', ""),) * 15, "no zh: (release archive) hashes"),
        (((LOCK, r'"zh:11b3c88e', '"zh:11b3c88'),), "malformed hashes"),
        # A storage-initializer image that does not match the KServe release.
        ((("helm/facegate/values.yaml", r"storage-initializer:v0.20.0", "storage-initializer:v0.19.0"),), "!= KServe"),
    ],
)
def test_each_finding_of_the_audit_fails(
    tree: Callable[..., Path], edits: tuple[tuple[str, str, str], ...], named: str
) -> None:
    assert named in failures(run(tree(*edits)))


def test_a_missing_provider_lock_fails(tree: Callable[..., Path]) -> None:
    root = tree()
    (root / LOCK).unlink()
    assert "missing: commit the provider lock file" in failures(run(root))


def test_without_the_snapshot_the_check_refuses(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(CHECK), "--root", str(REPO), "--upstream", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "upstream snapshot not found" in result.stderr


def test_the_pipeline_images_helm_must_be_a_helm_release_in_skew(tree: Callable[..., Path]) -> None:
    # The rollout executor's helm (tools/images/helm.pins): a tag helm never made, and one built for Kubernetes 1.32.
    found = failures(run(tree(("tools/images/helm.pins", r"^HELM_IMAGE_VERSION=.*$", "HELM_IMAGE_VERSION=v3.99.1"))))
    assert "WRONG         image_helm_version=v3.99.1 (tools/images/helm.pins): helm/helm has no stable tag" in found
    found = failures(run(tree(("tools/images/helm.pins", r"^HELM_IMAGE_VERSION=.*$", "HELM_IMAGE_VERSION=v3.17.2"))))
    assert "WRONG         image_helm_version=v3.17.2 client-go skew: v3.17.2 (2025-03-13) go.mod" in found
