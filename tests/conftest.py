"""Shared fixtures. Tests that need ../shared skip with a reason when it is absent (a user's machine)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEGATE_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "data" / "photos"
LFW = SHARED / "data" / "lfw-aligned"

# Telemetry off and no GUI backend for anything the tests start.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the read-only ../shared data beside the checkout; CI always has it)")
    return path


@pytest.fixture(scope="session")
def photos() -> Path:
    """Real unaligned photos: train/<person>/*.jpg and assorted test photos."""
    return _require(PHOTOS)


@pytest.fixture(scope="session")
def lfw() -> Path:
    """LFW aligned to 112x112 with the official pairs.txt."""
    return _require(LFW / "pairs.txt").parent


@pytest.fixture(scope="session")
def lfw_gender() -> Path:
    """Manually verified gender labels of LFW images (``image,gender``; see its README)."""
    return _require(SHARED / "data" / "lfw-groups" / "gender.csv")


@pytest.fixture(scope="session")
def sface():  # type: ignore[no-untyped-def]
    from facegate.models import create_embedder

    return create_embedder("sface")


@pytest.fixture(scope="session")
def aligner():  # type: ignore[no-untyped-def]
    from facegate.faces.pipeline import FaceAligner

    return FaceAligner()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _pg_tool(name: str) -> str | None:
    import glob
    import shutil

    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)


@pytest.fixture(scope="session")
def postgres_url():  # type: ignore[no-untyped-def]
    """A throwaway PostgreSQL server on a Unix socket (no TCP port), as a SQLAlchemy URL; stopped afterwards."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl (Debian package postgresql) for the PostgreSQL gallery")
    # Not under pytest's tmp dir: when run as root, the server runs as 'postgres' (initdb refuses root), and that
    # user must be able to reach its data and socket folders.
    root = Path(tempfile.mkdtemp(prefix="facegate-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        for p in (root, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    opts = f"-c listen_addresses='' -k {sock} -c fsync=off -c full_page_writes=off"
    try:
        subprocess.run(
            [*run_as, initdb, "-D", str(data), "-U", "facegate", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o", opts, "start"],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start a test PostgreSQL: {exc}; {getattr(exc, 'stderr', b'')!r} {log}") from None
    try:
        yield f"postgresql+psycopg:///postgres?host={sock}&user=facegate"  # trust auth: no password
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
