"""The MLflow Model Registry: register, aliases, `models:/` URIs wherever a bundle path works."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from facegate.cli import app

pytestmark = pytest.mark.integration


def _bundle(path: Path, version: str, threshold: float) -> Path:
    path.mkdir(parents=True)
    (path / "facegate.json").write_text(json.dumps({"model": "sface", "version": version, "threshold": threshold}))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def test_alias_round_trip_and_models_uri(home: Path, tmp_path: Path) -> None:
    from facegate.bundles import load_embedder
    from facegate.registry.models import RegistryError, get_version, list_versions, register_bundle, set_alias

    v1 = register_bundle(_bundle(tmp_path / "b1", "sface-a", 0.40), alias="champion", tags={"accuracy": 0.99})
    v2 = register_bundle(_bundle(tmp_path / "b2", "sface-b", 0.45), tags={"dataset_hash": "abc"})
    assert (v1.version, v2.version) == ("1", "2")
    assert get_version("models:/facegate@champion").model_version == "sface-a"
    chall = get_version("models:/facegate@challenger")
    assert chall.version == "2" and chall.tags["dataset_hash"] == "abc" and chall.tags["threshold"] == "0.45"
    assert "git_commit" in chall.tags and chall.storage_uri.startswith("file://")
    # The artifacts live under the configured home, never beside wherever the test ran.
    assert Path(chall.storage_uri.removeprefix("file://")).resolve().is_relative_to(home.resolve())

    emb = load_embedder("models:/facegate@champion")
    assert (emb.version, emb.default_threshold) == ("sface-a", 0.40)
    assert load_embedder("models:/facegate/2").version == "sface-b"
    assert any((home / "registry" / "facegate").glob("1-*/facegate.json"))  # cached per immutable version

    # Promote: champion -> 2; then roll the registry back: champion -> 1.
    set_alias("facegate", "champion", "2")
    assert load_embedder("models:/facegate@champion").version == "sface-b"
    assert [v.aliases for v in list_versions()] == [("challenger", "champion"), ()]
    set_alias("facegate", "champion", "1")
    assert get_version("models:/facegate@champion").model_version == "sface-a"

    with pytest.raises(RegistryError, match="no alias 'nobody'") as missing:
        get_version("models:/facegate@nobody")
    assert missing.value.code == "not_registered"
    with pytest.raises(RegistryError, match="expected models:/NAME@ALIAS"):
        get_version("models:/facegate")
    with pytest.raises(RegistryError):
        set_alias("facegate", "champion", "99")


def test_unreachable_registry_is_not_an_empty_one(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gate must never read "the registry did not answer" as "no champion yet" (it would promote unchecked)."""
    from facegate.registry.models import RegistryError, get_version

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(RegistryError) as err:
        get_version("models:/facegate@champion")
    assert err.value.code == "registry_error" and "did not answer" in err.value.message


def test_registry_cli(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        app, ["registry", "register", str(_bundle(tmp_path / "b", "sface-cli", 0.4)), "--alias", "champion"]
    )
    assert out.exit_code == 0, out.output
    assert "registered models:/facegate/1 (sface-cli) as facegate@champion" in out.output
    out = runner.invoke(app, ["registry", "list"])
    assert out.exit_code == 0 and "models:/facegate/1" in out.output and "champion" in out.output
    out = runner.invoke(app, ["registry", "show", "models:/facegate@champion"])
    assert json.loads(out.output)["model_version"] == "sface-cli"
    out = runner.invoke(app, ["registry", "alias", "challenger", "1"])
    assert out.exit_code == 0 and "facegate@challenger -> models:/facegate/1" in out.output
    out = runner.invoke(app, ["registry", "show", "models:/facegate@nope"])
    assert out.exit_code == 2 and "[not_registered]" in out.output


@pytest.mark.e2e
def test_serve_models_uri(home: Path, tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`facegate serve --model models:/facegate@champion` serves the registered version and its threshold."""
    from facegate.registry.models import register_bundle
    from facegate.rollout.procs import ServeProcess
    from facegate.serve.gallery import KeyRing

    register_bundle(_bundle(tmp_path / "b", "sface-served", 0.3), alias="champion")
    monkeypatch.setenv("FACEGATE_GALLERY_KEYS", KeyRing.generate("k1"))
    gallery = f"sqlite:///{tmp_path / 'gallery.db'}"
    with ServeProcess("models:/facegate@champion", gallery) as server:  # 127.0.0.1, stopped by its pid
        photo = base64.b64encode((photos / "train" / "obama" / "obama.jpg").read_bytes()).decode()
        auth = {"Authorization": f"Bearer {server.admin_key}"}
        r = httpx.put(server.url + "/admin/v1/students/S1", json={"photos": [photo]}, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "sface-served"
