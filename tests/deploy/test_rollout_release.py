"""One owner for the served model: `facegate rollout` changes the Helm release, so a later upgrade keeps the model.

The real helm (make validate-tools) installs and upgrades the chart against tests/deploy/fake_kube.py, an in-memory
API server, with helm's own Secret storage: `--reuse-values`, `helm history` and `helm rollback` run for real.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from facegate.rollout.kserve import model_version_label
from facegate.serve.gallery import Gallery, KeyRing
from tests.deploy.conftest import CHART
from tests.deploy.fake_kube import FakeKube
from tests.integration.test_rollout import _bundle

pytestmark = pytest.mark.integration

NS = "facegate"


@pytest.fixture
def cluster(helm: Path, tmp_path: Path) -> Iterator[tuple[FakeKube, dict[str, str]]]:
    """A fake API server with the chart installed (release `facegate`, revision 1) and the environment to reach it."""
    with FakeKube() as kube:
        (tmp_path / "kubeconfig").write_text(kube.kubeconfig(NS))
        env = {"KUBECONFIG": str(tmp_path / "kubeconfig"), "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
               "HELM_CONFIG_HOME": str(tmp_path / "helm-config"), "HELM_DATA_HOME": str(tmp_path / "helm-data"),
               "FACEGATE_HELM": str(helm), "FACEGATE_HELM_CHART": str(CHART)}  # fmt: skip
        # The re-index hook Job would wait for a Job controller this server does not have.
        _helm(env, "install", "facegate", str(CHART), "--set", "reindex.enabled=false")
        yield kube, env


def _helm(env: dict[str, str], *args: str) -> str:
    cmd = [env["FACEGATE_HELM"], *args, "--namespace", NS]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _isvc(kube: FakeKube) -> dict[str, Any]:
    obj = kube.get("inferenceservices", NS, "facegate-verifier")
    assert obj is not None
    return obj


def _served(kube: FakeKube) -> tuple[str, str, int, str]:
    """(storageUri, version annotation, canary percent, pod label) of the verifier as stored."""
    obj = _isvc(kube)
    predictor = obj["spec"]["predictor"]
    return (predictor["model"]["storageUri"], obj["metadata"]["annotations"]["facegate.io/model-version"],
            predictor["canaryTrafficPercent"], predictor["labels"]["facegate.io/model-version"])  # fmt: skip


def test_a_promotion_survives_an_unrelated_upgrade_and_helm_rollback_undoes_it(
    cluster: tuple[FakeKube, dict[str, str]], tmp_path: Path, photos: Path, aligner: Any, monkeypatch: Any
) -> None:
    from facegate.bundles import load_embedder
    from facegate.cli import app

    kube, env = cluster
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the CLI's kubernetes client and helm read KUBECONFIG from here
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    g = Gallery(url, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")}))
    g.enroll("S-1", [(photos / "train" / "obama" / "obama.jpg").read_bytes()],
             load_embedder(_bundle(tmp_path / "v1", "0.1.0")), aligner)  # fmt: skip
    version = "fg-v2+build.7"  # '+' is not a label character: the chart sanitises it as the rollout code does
    g.reindex(load_embedder(_bundle(tmp_path / "v2", version)))
    g.engine.dispose()
    runner = CliRunner()
    base = ["--storage-uri", "s3://b/v2", "--model-version", version, "--db", url]
    out = runner.invoke(app, ["rollout", "canary", "--percent", "10", *base])
    assert out.exit_code == 0, out.output
    assert _served(kube) == ("s3://b/v2", version, 10, model_version_label(version))
    out = runner.invoke(app, ["rollout", "promote", *base])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["model_version"] == version
    assert _served(kube)[:2] == ("s3://b/v2", version)

    # An operator's unrelated upgrade (more replicas) keeps the promoted model, in every object that uses it: the
    # admin API's bundle download and version label come from the same values as the verifier's.
    _helm(env, "upgrade", "facegate", str(CHART), "--reuse-values", "--set", "verifier.maxReplicas=6")
    admin = kube.get("deployments", NS, "facegate-admin")
    assert admin is not None
    pod = admin["spec"]["template"]
    assert pod["spec"]["initContainers"][0]["args"][0] == "s3://b/v2"
    assert pod["metadata"]["labels"]["facegate.io/model-version"] == model_version_label(version)
    assert _served(kube) == ("s3://b/v2", version, 100, model_version_label(version))
    assert _isvc(kube)["spec"]["predictor"]["maxReplicas"] == 6
    # ...because the release holds it, with a record of each step.
    history = json.loads(_helm(env, "history", "facegate", "--output", "json"))
    assert [h["description"] for h in history[1:3]] == [
        f"facegate rollout canary {version} 10%",
        f"facegate rollout promote {version}",
    ]
    values = json.loads(_helm(env, "get", "values", "facegate", "--output", "json"))
    assert values["model"] == {"storageUri": "s3://b/v2", "version": version}

    # Rolling the promotion back is `helm rollback` to the canary's revision.
    _helm(env, "rollback", "facegate", str(history[1]["revision"]))
    assert _served(kube)[2] == 10
    # And `facegate rollout rollback` (read from the cluster) pins traffic to the previous revision: 0 %.
    out = runner.invoke(app, ["rollout", "rollback"])
    assert out.exit_code == 0, out.output
    assert _served(kube) == ("s3://b/v2", version, 0, model_version_label(version))
    assert _isvc(kube)["spec"]["predictor"]["maxReplicas"] == 4  # the rollback restored revision 2's values


def test_a_rollout_on_a_missing_release_fails_and_says_so(helm: Path, tmp_path: Path, monkeypatch: Any) -> None:
    from facegate.cli import app

    with FakeKube() as kube:
        (tmp_path / "kubeconfig").write_text(kube.kubeconfig(NS))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        out = CliRunner().invoke(app, ["rollout", "rollback", "--storage-uri", "s3://b/v2", "--model-version", "v2",
                                       "--helm", str(helm), "--chart", str(CHART)])  # fmt: skip
    assert out.exit_code != 0
    assert "[not_deployed]" in out.output and "is not installed" in out.output
