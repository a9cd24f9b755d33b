"""The MLflow Model Registry: which model version serves.

A registered version *is* a facegate model bundle (the directory every stage reads and writes, see
``facegate.models.base``), logged as the artifacts of an MLflow run and registered under one name (``facegate`` by
default). Two aliases carry the rollout state:

- ``champion``: the version the kiosks are served;
- ``challenger``: the newest candidate, set when a pipeline registers it and moved to ``champion`` on promotion.

Each version's tags hold what identifies it: its metrics, its threshold, the dataset hash, the git commit and the
training config. ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` work wherever a bundle path does
(:func:`facegate.models.load_embedder` resolves them through :func:`fetch_bundle`), so ``evaluate``, ``verify``,
``export`` and ``serve`` take either. Versions are immutable, so a fetched bundle is cached under
``<home>/registry/NAME/VERSION-RUN`` and never downloaded twice; an alias is resolved to its version on every use,
since aliases move.

The tracking store is ``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store under ``FACEGATE_HOME``
(``./.facegate``): the same rule as training runs (:func:`facegate.registry.tracking.tracking_uri`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facegate.errors import FacegateError
from facegate.registry.tracking import TELEMETRY_ENV, tracking_uri

__all__ = [
    "ALIASES",
    "DEFAULT_NAME",
    "NOT_REGISTERED",
    "RegisteredVersion",
    "RegistryError",
    "fetch_bundle",
    "get_version",
    "is_model_uri",
    "list_versions",
    "parse_model_uri",
    "register_bundle",
    "registry_home",
    "set_alias",
    "storage_uri_of",
]

DEFAULT_NAME = "facegate"
#: ``RegistryError.code`` when a name, alias or version does not exist (as opposed to a registry that failed).
NOT_REGISTERED = "not_registered"
ALIASES = ("champion", "challenger")
EXPERIMENT = "facegate-registry"
_URI = re.compile(r"^models:/(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")
#: Tag values are strings in MLflow and limited in length; longer values (a config) are cut, never dropped silently.
_TAG_LIMIT = 5000


class RegistryError(FacegateError):
    """A registered model, version or alias does not exist, or the registry cannot be reached."""

    code = "registry_error"


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model.

    Attributes:
        name: Registered model name.
        version: MLflow's version number, as a string.
        model_version: The bundle's own version string (``facegate.json`` ``version``): what serving reports and the
            gallery keys its templates by.
        storage_uri: Where the bundle's files live (``s3://...`` on the cluster, ``file://...`` on a laptop); what a
            KServe ``storageUri`` points at.
        aliases: Aliases pointing at this version.
        tags: The version's tags (metrics, threshold, dataset hash, git commit, config, ...).
        run_id: The MLflow run holding the bundle.
        source: MLflow's own artifact URI (what MLflow clients download from; ``storage_uri`` may be its object-store
            equivalent, see :func:`storage_uri_of`).
    """

    name: str
    version: str
    model_version: str
    storage_uri: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    source: str = ""

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``."""
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "model_version": self.model_version,
            "storage_uri": self.storage_uri,
            "aliases": list(self.aliases),
            "run_id": self.run_id,
            "tags": dict(self.tags),
        }


def is_model_uri(ref: str | Path) -> bool:
    """Whether ``ref`` is a ``models:/`` URI rather than a bundle path or a built-in model name."""
    return str(ref).startswith("models:/")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` into ``(name, alias, version)``.

    Raises:
        RegistryError: If the URI has another form.
    """
    m = _URI.match(uri)
    if not m:
        raise RegistryError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION", code="bad_model_uri")
    return m["name"], m["alias"], m["version"]


def registry_home() -> Path:
    """``FACEGATE_HOME`` (default ``.facegate``): where the embedded store and the bundle cache live."""
    return Path(os.environ.get("FACEGATE_HOME") or ".facegate")


def _client(home: str | Path | None) -> Any:
    for k, v in TELEMETRY_ENV.items():
        os.environ.setdefault(k, v)
    from mlflow import MlflowClient

    uri = tracking_uri(home if home is not None else registry_home())
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


#: Where a proxying MLflow server (``--serve-artifacts``) really keeps artifacts (its ``--artifacts-destination``).
ARTIFACTS_DESTINATION_ENV = "FACEGATE_MLFLOW_ARTIFACTS_DESTINATION"


def storage_uri_of(source: str) -> str:
    """The URI a KServe storage initializer can fetch for an MLflow artifact ``source``.

    A proxying MLflow server hands out ``mlflow-artifacts:/<path>`` URIs that only MLflow clients understand;
    with ``FACEGATE_MLFLOW_ARTIFACTS_DESTINATION`` (``s3://bucket/prefix``, the server's destination) they become
    the object-store URI the bytes live at. Any other source is returned as is.
    """
    from urllib.parse import urlparse

    dest = os.environ.get(ARTIFACTS_DESTINATION_ENV, "")
    if source.startswith("mlflow-artifacts:") and dest:
        return dest.rstrip("/") + "/" + urlparse(source).path.lstrip("/")
    return source


def _version_from(mv: Any) -> RegisteredVersion:
    tags = dict(mv.tags or {})
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        model_version=tags.get("model_version", ""),
        storage_uri=storage_uri_of(str(mv.source)),
        source=str(mv.source),
        aliases=tuple(sorted(getattr(mv, "aliases", None) or ())),
        tags=tags,
        run_id=mv.run_id,
    )


def get_version(ref: str, *, home: str | Path | None = None) -> RegisteredVersion:
    """Look up ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Raises:
        RegistryError: If the name, alias or version does not exist.
    """
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(ref)
    client = _client(home)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version}"
        # Only "it does not exist" may read as "nothing registered": an unreachable or broken registry must never
        # look like an empty one (a gate would then promote without comparing).
        missing = exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc)
        )
        if missing:
            raise RegistryError(f"{ref}: no {what} of registered model {name!r}", code=NOT_REGISTERED) from None
        raise RegistryError(f"{ref}: the registry did not answer ({_short(exc)})") from None
    return _version_from(mv)


def list_versions(name: str = DEFAULT_NAME, *, home: str | Path | None = None) -> list[RegisteredVersion]:
    """Every version of ``name``, newest first (empty when the model is not registered yet)."""
    from dataclasses import replace

    client = _client(home)
    found = client.search_model_versions(f"name = '{_quote(name)}'")
    if not found:
        return []
    # Searches do not fill in aliases; the registered model holds the alias -> version map.
    by_version: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    out = [replace(v, aliases=tuple(sorted(by_version.get(v.version, [])))) for v in map(_version_from, found)]
    return sorted(out, key=lambda v: int(v.version), reverse=True)


def set_alias(name: str, alias: str, version: str, *, home: str | Path | None = None) -> RegisteredVersion:
    """Point ``alias`` at ``version`` (moving it from wherever it pointed).

    Raises:
        RegistryError: If the version does not exist.
    """
    from mlflow.exceptions import MlflowException

    client = _client(home)
    try:
        client.get_model_version(name, version)
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise RegistryError(f"cannot set {name}@{alias} -> {version}: {_short(exc)}") from None
    return get_version(f"models:/{name}/{version}", home=home)


def register_bundle(
    bundle: str | Path,
    *,
    name: str = DEFAULT_NAME,
    alias: str | None = "challenger",
    tags: dict[str, Any] | None = None,
    home: str | Path | None = None,
    experiment: str = EXPERIMENT,
) -> RegisteredVersion:
    """Log a model bundle as an MLflow run's artifacts and register it as a new version of ``name``.

    The version's tags get the bundle's version, format, threshold and evaluations, plus ``tags`` (the caller's:
    metrics, dataset hash, git commit, config); values that are not strings are stored as JSON.

    Args:
        bundle: A bundle directory (``facegate.json`` + weights).
        name: Registered model name.
        alias: Alias to point at the new version (``None``: none).
        tags: More tags.
        home: ``FACEGATE_HOME`` for the embedded store (default: the environment's).
        experiment: Experiment holding the registration runs.

    Raises:
        RegistryError: If ``bundle`` is not a bundle.
    """
    from facegate.models.base import BUNDLE_FILE
    from facegate.registry.provenance import provenance_tags
    from facegate.registry.tracking import ensure_experiment

    path = Path(bundle)
    meta_file = path / BUNDLE_FILE
    if not meta_file.is_file():
        raise RegistryError(f"{path}: not a model bundle (no {BUNDLE_FILE})", code="not_a_bundle")
    meta = json.loads(meta_file.read_text())
    client = _client(home)
    exp_id = ensure_experiment(experiment, home if home is not None else registry_home())
    all_tags: dict[str, Any] = {
        "model_version": str(meta.get("version") or ""),
        "model": str(meta.get("model", "")),
        "format": str(meta.get("format", "")),
        "threshold": meta.get("threshold"),
        **provenance_tags(),
    }
    if meta.get("evaluations"):
        all_tags["evaluations"] = meta["evaluations"]
    all_tags.update(tags or {})
    str_tags = {k: _tag(v) for k, v in all_tags.items() if v is not None}
    run = client.create_run(exp_id, run_name=f"register-{name}", tags={"facegate.kind": "registration"})
    try:
        client.log_artifacts(run.info.run_id, str(path), artifact_path="bundle")
        for k, v in str_tags.items():
            client.set_tag(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id)
    except Exception:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    source = f"{client.get_run(run.info.run_id).info.artifact_uri.rstrip('/')}/bundle"
    if not client.search_registered_models(f"name = '{_quote(name)}'"):
        client.create_registered_model(name, description="facegate face-verification bundles")
    mv = client.create_model_version(name, source, run_id=run.info.run_id, tags=str_tags)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return get_version(f"models:/{name}/{mv.version}", home=home)


def fetch_bundle(ref: str, *, home: str | Path | None = None) -> Path:
    """A local copy of a registered bundle (downloaded once per version into ``<home>/registry/NAME/VERSION``).

    Raises:
        RegistryError: If the reference does not resolve or the download is not a bundle.
    """
    from mlflow.artifacts import download_artifacts

    from facegate.models.base import BUNDLE_FILE

    mv = get_version(ref, home=home)
    root = Path(home if home is not None else registry_home()) / "registry" / mv.name
    # Keyed by version *and* run: a reset or different store reuses version numbers, never run ids.
    final = root / f"{mv.version}-{(mv.run_id or 'norun')[:12]}"
    if (final / BUNDLE_FILE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Download beside the cache and rename: a crash mid-download never leaves a half bundle that looks complete.
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        uri = tracking_uri(home if home is not None else registry_home())
        got = Path(download_artifacts(artifact_uri=mv.source or mv.storage_uri, dst_path=tmp, tracking_uri=uri))
        if not (got / BUNDLE_FILE).is_file():
            raise RegistryError(f"{ref}: {mv.storage_uri} holds no {BUNDLE_FILE}", code="not_a_bundle")
        if final.exists():
            shutil.rmtree(final)
        got.rename(final)
    return final


def _tag(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _TAG_LIMIT else text[: _TAG_LIMIT - 14] + "...[truncated]"


def _quote(name: str) -> str:
    return name.replace("'", "''")


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
