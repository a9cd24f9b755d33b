"""Issue 18 §5: the MLflow commit tags name facegate's own commit, the image digest, and the caller's repo apart."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import facegate
from facegate.registry.provenance import provenance_tags
from facegate.registry.tracking import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

PKG = Path(facegate.__file__).resolve().parent


def _git(cwd: Path, *args: str) -> str:
    ident = (("NAME", "t"), ("EMAIL", "t@x.invalid"))
    who = {f"GIT_{role}_{part}": v for role in ("AUTHOR", "COMMITTER") for part, v in ident}
    env = {**os.environ, **who}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def _facegate_checkout() -> str | None:
    """facegate's commit when the tests run from a checkout that tracks the imported package, else None."""
    try:
        top = Path(_git(PKG, "rev-parse", "--show-toplevel"))
        _git(top, "ls-files", "--error-unmatch", str(PKG / "__init__.py"))
        return _git(top, "rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return None


@pytest.fixture
def other_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """Another project's repository with one commit, as the current directory."""
    repo = tmp_path / "other-project"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.yaml").write_text("epochs: 1\n")
    _git(repo, "add", "train.yaml")
    _git(repo, "commit", "-q", "-m", "other project")
    monkeypatch.chdir(repo)
    for var in ("FACEGATE_GIT_COMMIT", "FACEGATE_IMAGE", "FACEGATE_IMAGE_DIGEST"):
        monkeypatch.delenv(var, raising=False)
    return repo, _git(repo, "rev-parse", "HEAD")


def test_run_from_another_project_names_facegate_not_the_project(other_repo: tuple[Path, str]) -> None:
    _, other_sha = other_repo
    tags = provenance_tags()
    assert tags["facegate_version"] == facegate.__version__
    assert other_sha not in tags["git_commit"] and other_sha not in git_commit()
    assert tags["caller_git_commit"] == other_sha
    own = _facegate_checkout()
    if own is not None:  # an editable install from a checkout: its commit (dirty or not)
        assert tags["git_commit"].split("+")[0] == own
    else:  # a wheel: facegate's commit is not known, and certainly not the caller's
        assert tags["git_commit"] == "unknown"
    assert "image_digest" not in tags


def test_image_commit_and_digest_from_the_pod(other_repo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    digest = "sha256:" + "ab" * 32
    monkeypatch.setenv("FACEGATE_GIT_COMMIT", "0123abc")
    monkeypatch.setenv("FACEGATE_IMAGE", f"ghcr.io/facegate/facegate-pipeline@{digest}")
    tags = provenance_tags()
    assert tags["git_commit"] == "0123abc" and tags["image_digest"] == digest
    monkeypatch.setenv("FACEGATE_IMAGE", "ghcr.io/facegate/facegate-pipeline:0.1.0")  # a tag says no digest
    assert "image_digest" not in provenance_tags()
    monkeypatch.setenv("FACEGATE_IMAGE_DIGEST", digest)
    assert provenance_tags()["image_digest"] == digest


def test_run_from_facegates_own_checkout_has_no_caller_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    own = _facegate_checkout()
    if own is None:
        pytest.skip("facegate is not imported from a git checkout (a wheel install)")
    monkeypatch.delenv("FACEGATE_GIT_COMMIT", raising=False)
    monkeypatch.chdir(PKG)
    tags = provenance_tags()
    assert tags["git_commit"].split("+")[0] == own and "caller_git_commit" not in tags
