"""KServe's deployment mode is written as `Knative`, its name since v0.16; `Serverless` is only a deprecated alias."""

from __future__ import annotations

import re
import subprocess

import pytest

from facegate.rollout.kserve import DEPLOYMENT_MODE_KEY, RolloutError, deployment_mode, inference_service
from tests.conftest import REPO

pytestmark = pytest.mark.unit

# The old name as a value anywhere the project writes one (YAML, JSON, Python), in any shipped file.
OLD_SPELLING = re.compile(r"deploymentMode['\"]?\s*[:=]\s*['\"]?Serverless\b|DEPLOYMENT_MODE_KEY\s*:\s*['\"]Serverless")


def test_the_rollout_object_uses_knative() -> None:
    obj = inference_service("s3://b/v2", "v2", canary_percent=10)
    assert obj["metadata"]["annotations"][DEPLOYMENT_MODE_KEY] == "Knative"


def test_a_users_serverless_is_mapped_to_knative_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="deprecated alias"):
        obj = inference_service("s3://b/v2", "v2", mode="Serverless")
    assert obj["metadata"]["annotations"][DEPLOYMENT_MODE_KEY] == "Knative"


def test_a_mode_without_canaries_is_refused() -> None:
    with pytest.raises(RolloutError) as exc:
        deployment_mode("RawDeployment")
    assert exc.value.code == "bad_mode"


def test_no_shipped_file_writes_the_old_mode_name() -> None:
    files = subprocess.run(["git", "ls-files", "src", "helm", "manifests", "ansible", "docs", "components",
                            "pipelines", "docker", "README.md"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    assert files, "git ls-files found nothing: not a checkout?"
    texts = {f: (REPO / f).read_text(errors="ignore") for f in files if (REPO / f).is_file()}
    offenders = [f for f, text in texts.items() if OLD_SPELLING.search(text)]
    assert offenders == []
