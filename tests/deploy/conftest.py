"""Fixtures of the deployment tests: the real helm (make validate-tools) and the chart rendered per values file.

Tests here skip, with the reason, when `.tools/bin/helm`, `.venv-validate` or ../shared are missing: `make test` runs
before `make validate-tools` in CI, and `make validate` runs them again once the tools are installed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, SHARED

CHART = REPO / "helm" / "facegate"
HELM = REPO / ".tools" / "bin" / "helm"
#: The pipeline image's helm (tools/images/helm.pins): what the rollout executor runs.
HELM_IMAGE = REPO / ".tools" / "bin" / "helm-image"
VALIDATE_VENV = REPO / ".venv-validate" / "bin"
VALUES_FILES = ("values.yaml", "values-dev.yaml", "values-chameleon.yaml")

Objects = list[dict[str, Any]]


def require_tool(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path.relative_to(REPO)}: run `make validate-tools` (make validate does)")
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    return require_tool(HELM)


@pytest.fixture(scope="session")
def image_helm() -> Path:
    return require_tool(HELM_IMAGE)


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Objects]:
    """render(values_file, *--set overrides) -> the objects `helm template` produces (cached per arguments)."""
    cache: dict[tuple[str, ...], Objects] = {}

    def _render(values: str = "values.yaml", *sets: str) -> Objects:
        key = (values, *sets)
        if key not in cache:
            cmd = [str(helm), "template", "facegate", str(CHART), "--namespace", "facegate"]
            cmd += ["--values", str(CHART / values)]
            for item in sets:
                cmd += ["--set", item]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            cache[key] = [doc for doc in yaml.safe_load_all(out) if doc]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def crds() -> Path:
    path = SHARED / "crds"
    if not path.is_dir():
        pytest.skip(f"needs {path} (the CRD schemas in ../shared; CI always has them)")
    return path


def of_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objects: Objects) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload, the ServingRuntime's pod template included."""
    specs = []
    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "Job"):
            specs.append((f"{kind}/{obj['metadata']['name']}", spec["template"]["spec"]))
        elif kind == "CronJob":
            specs.append((f"{kind}/{obj['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "ServingRuntime":
            specs.append((f"{kind}/{obj['metadata']['name']}", spec))
    return specs
