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
