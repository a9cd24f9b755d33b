"""Shared helpers for the benchmarks: locating ../shared and describing the machine."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEGATE_SHARED", REPO.parent / "shared"))


def require(path: Path) -> Path:
    """Exit with a clear message when benchmark data is absent."""
    if not path.exists():
        sys.exit(f"benchmark data not found: {path} (set FACEGATE_SHARED to the shared data folder)")
    return path


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def loadavg() -> list[float]:
    """1, 5 and 15-minute load averages (empty where /proc is absent): a loaded machine slows both sides of a ratio."""
    path = Path("/proc/loadavg")
    return [float(x) for x in path.read_text().split()[:3]] if path.exists() else []


def emit(result: dict[str, object], load_before: list[float]) -> None:
    """Print a benchmark's JSON with the load average before and after and the machine it ran on."""
    import json

    print(
        json.dumps(
            {**result, "loadavg_before": load_before, "loadavg_after": loadavg(), "machine": machine()}, indent=2
        )
    )
