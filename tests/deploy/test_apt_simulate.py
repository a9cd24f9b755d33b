"""tools/validate/apt_simulate.sh resolves the roles' Debian pins in Debian's archive: the old NVIDIA driver pin, and
the current one without non-free for bookworm-security, both fail with apt's own reason (issue 15, finding 2.3).

Needs root, debootstrap's cached root (.tools/debootstrap, built by `make validate-apt`) and Debian's mirror; skips
otherwise. The passing case is `make validate-apt` itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "tools" / "validate" / "apt_simulate.sh"
TARBALL = REPO / ".tools" / "debootstrap" / "bookworm-minbase.tar"


@pytest.fixture
def ansible_copy(tmp_path: Path) -> Path:
    if os.geteuid() != 0 or not TARBALL.exists() or not (REPO / ".venv-validate").exists():
        pytest.skip(f"needs root, {TARBALL.relative_to(REPO)} and .venv-validate (make validate-apt builds them)")
    shutil.copytree(REPO / "ansible", tmp_path / "ansible")
    return tmp_path


def simulate(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACEGATE_ROOT": str(root)}
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_a_driver_gone_from_the_archive_fails(ansible_copy: Path) -> None:
    versions = ansible_copy / "ansible/group_vars/all/versions.yml"
    edit(
        versions,
        'nvidia_driver_apt_version: "535.309.01-0+deb12u1"',
        'nvidia_driver_apt_version: "535.247.01-1~deb12u1"',
    )
    result = simulate(ansible_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Version '535.247.01-1~deb12u1' for 'nvidia-driver' was not found" in result.stderr


def test_the_driver_needs_non_free_for_security(ansible_copy: Path) -> None:
    defaults = ansible_copy / "ansible/roles/nvidia/defaults/main.yml"
    # The role as it was: non-free for the release and -updates pockets only.
    edit(defaults, "  - name: debian-security-nonfree\n    uri: http://deb.debian.org/debian-security\n", "")
    edit(defaults, "    suites: [bookworm-security]\n", "")
    result = simulate(ansible_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Version '535.309.01-0+deb12u1' for 'nvidia-driver' was not found" in result.stderr
