"""MLflow's embedded store keeps every artifact location under the configured home, ``Default`` included, and
logged models name installable requirements."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facegate.registry.tracking import ensure_experiment, installable_requirement, prepare_store

pytestmark = pytest.mark.integration  # MLflow store migrations take tens of seconds


def _locations(home: Path) -> dict[str, str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home.resolve() / 'mlflow.db'}")
    return {e.name: e.artifact_location for e in client.search_experiments()}


def test_every_artifact_location_under_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where a user happened to run the command
    home = tmp_path / "home"
    ensure_experiment("facegate", home)
    root = (home.resolve() / "mlartifacts").as_uri()
    locations = _locations(home)
    assert set(locations) == {"Default", "facegate"}
    assert all(loc.startswith(root) for loc in locations.values()), locations
    assert not os.listdir(elsewhere)  # nothing (no ./mlruns) beside the command

    # A store made before the fix, its Default pointing at the directory it ran from, is repaired.
    import shutil
    import sqlite3

    import mlflow

    old = tmp_path / "old"
    old.mkdir()
    shutil.copyfile(home / "mlflow.db", old / "mlflow.db")  # (a copy: creating a store runs slow migrations)
    with sqlite3.connect(old / "mlflow.db") as conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", ((elsewhere / "mlruns").as_uri(),)
        )
    assert _locations(old)["Default"].startswith((elsewhere / "mlruns").as_uri())
    prepare_store(old)
    assert _locations(old)["Default"].startswith((old.resolve() / "mlartifacts").as_uri())
    assert mlflow.get_tracking_uri()  # the module still works after the repair


def test_requirements_are_installable_releases() -> None:
    assert installable_requirement("torch", "2.13.0+cpu") == "torch==2.13.0"
    assert installable_requirement("torch", "2.13.0+cu126") == "torch==2.13.0"
    assert installable_requirement("numpy", "2.2.6") == "numpy==2.2.6"
