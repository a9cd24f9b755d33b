"""What produced an MLflow run or model version: facegate's own version and commit, the image, the caller's repo.

Tags (all strings; absent when unknown, except ``git_commit``):

- ``facegate_version``: the installed package's version;
- ``git_commit``: facegate's *own* commit: ``FACEGATE_GIT_COMMIT`` (set in the pipeline image at build time), else
  the commit of the checkout facegate is imported from, when its source files are tracked there (an editable
  install), ``+dirty`` with uncommitted changes; ``unknown`` for a wheel install. Never the repository of the
  current directory: run from another project, that is the other project's commit;
- ``image_digest``: the pipeline image's digest on the cluster, from ``FACEGATE_IMAGE_DIGEST`` or from
  ``FACEGATE_IMAGE`` when it is a by-digest reference (``...@sha256:...``); a pod sets one of them (an image
  cannot know its own digest when it is built);
- ``caller_git_commit``: the commit of the current directory's repository, when it is another repository than
  facegate's: the caller's project (configs, notebooks) that ran facegate.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

__all__ = ["caller_commit", "facegate_commit", "image_digest", "provenance_tags", "repo_commit"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _git(cwd: Path, *args: str) -> str:
    # git from PATH on purpose: read-only commands with fixed arguments.
    out = subprocess.run(  # noqa: S603
        ["git", *args],  # noqa: S607
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout.strip()


def repo_commit(path: str | Path) -> tuple[Path, str] | None:
    """``(top-level folder, commit[+dirty])`` of the git checkout holding ``path``, or ``None``."""
    try:
        top = Path(_git(Path(path), "rev-parse", "--show-toplevel")).resolve()
        sha = _git(top, "rev-parse", "HEAD")
        dirty = _git(top, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return top, sha + ("+dirty" if dirty else "")


def _package_dir() -> Path:
    import facegate

    return Path(facegate.__file__).resolve().parent


def _own_checkout() -> tuple[Path, str] | None:
    """The checkout and commit of facegate when it is imported from one whose git tracks its files, else ``None``.

    A wheel installed in a virtual environment inside some other repository is in that repository's folder but
    not tracked by it (``.venv`` is ignored): that is not facegate's commit.
    """
    pkg = _package_dir()
    found = repo_commit(pkg)
    if found is None:
        return None
    try:
        _git(found[0], "ls-files", "--error-unmatch", str(pkg / "__init__.py"))
    except (OSError, subprocess.SubprocessError):
        return None
    return found


def facegate_commit() -> str:
    """The commit of facegate itself: ``FACEGATE_GIT_COMMIT`` (an image), its checkout's, or ``unknown``."""
    env = os.environ.get("FACEGATE_GIT_COMMIT", "")
    if env not in ("", "unknown"):
        return env
    own = _own_checkout()
    return own[1] if own else "unknown"


def image_digest() -> str | None:
    """The pipeline image's digest (``sha256:...``) from the pod's environment, or ``None``."""
    for var in ("FACEGATE_IMAGE_DIGEST", "FACEGATE_IMAGE"):
        m = _DIGEST.search(os.environ.get(var, ""))
        if m:
            return m.group(0)
    return None


def caller_commit(path: str | Path = ".") -> str | None:
    """The commit of the repository at ``path`` when it is not facegate's own checkout, else ``None``."""
    found = repo_commit(path)
    if found is None:
        return None
    own = _own_checkout()
    return None if own is not None and own[0] == found[0] else found[1]


def provenance_tags(path: str | Path = ".") -> dict[str, str]:
    """The provenance tags of a run (see the module docstring); ``path`` is the caller's working directory."""
    from facegate import __version__

    tags = {"facegate_version": __version__, "git_commit": facegate_commit()}
    digest = image_digest()
    if digest:
        tags["image_digest"] = digest
    caller = caller_commit(path)
    if caller:
        tags["caller_git_commit"] = caller
    return tags
