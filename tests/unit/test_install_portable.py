"""The install works beyond this machine kind: no machine-local path in pyproject.toml or uv.lock, torch from
PyTorch's CPU index, and the offline fallback installs only the very wheel the lock pins."""

import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# An absolute POSIX path or a file: URL inside a quoted TOML string: what uv writes for find-links folders, local
# registries and path wheels.
LOCAL_PATH = re.compile(r"""["'](?:file:/+|/)(?:[A-Za-z0-9._~+-]+/)*[A-Za-z0-9._~+-]*["']""")


def _local_paths(text: str) -> list[str]:
    return [m.group(0) for m in LOCAL_PATH.finditer(text)]


def test_detector_finds_the_paths_uv_writes():
    # The shapes the old pyproject/lock carried, so the check below cannot pass by matching nothing.
    assert _local_paths('find-links = ["/opt/wheels"]')
    assert _local_paths('source = { registry = "/opt/wheels" }')
    assert _local_paths('{ path = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" }')
    assert _local_paths('url = "file:///home/me/wheels/x.whl"')
    assert not _local_paths('source = { registry = "https://pypi.org/simple" }')
    assert not _local_paths('source = { editable = "." }')


@pytest.mark.parametrize("name", ["pyproject.toml", "uv.lock"])
def test_no_machine_local_path(name):
    assert _local_paths((REPO / name).read_text(encoding="utf-8")) == []


def test_torch_comes_from_the_pytorch_cpu_index_only():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    indexes = {i["name"]: i for i in project["tool"]["uv"]["index"]}
    source = project["tool"]["uv"]["sources"]["torch"]
    index = indexes[source["index"]]
    assert index["url"] == "https://download.pytorch.org/whl/cpu"
    assert index["explicit"] is True  # nothing else may resolve from it
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    torch = [p for p in lock["package"] if p["name"] == "torch"]
    assert [p["source"] for p in torch] == [{"registry": "https://download.pytorch.org/whl/cpu"}]
    assert all(w["hash"].startswith("sha256:") for w in torch[0]["wheels"])


def _run_locked_wheel(folder: Path, lock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "locked_wheel.py"), "demo-pkg", str(folder), str(lock)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_offline_fallback_takes_only_the_locked_bytes(tmp_path):
    wheel = tmp_path / "demo_pkg-1.0+cpu-py3-none-any.whl"
    wheel.write_bytes(b"the locked bytes")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lock = tmp_path / "uv.lock"
    lock.write_text(
        '[[package]]\nname = "demo-pkg"\nversion = "1.0+cpu"\nsource = { registry = "https://example.org/whl" }\n'
        'wheels = [{ url = "https://example.org/whl/demo_pkg-1.0%2Bcpu-py3-none-any.whl", '
        f'hash = "sha256:{digest}" }}]\n'
    )
    ok = _run_locked_wheel(tmp_path, lock)
    assert ok.returncode == 0, ok.stderr
    assert Path(ok.stdout.strip()) == wheel
    wheel.write_bytes(b"other bytes under the same name")
    tampered = _run_locked_wheel(tmp_path, lock)
    assert tampered.returncode == 1
    assert "is not the locked" in tampered.stderr
    assert _run_locked_wheel(tmp_path / "missing", lock).returncode == 1
