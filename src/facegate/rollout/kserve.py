"""The verifier's KServe ``InferenceService``: build it for a model version, move traffic, apply it.

One object, ``facegate-verifier`` in namespace ``facegate`` (the names the Helm chart uses), serves the kiosks. Its
predictor is the ``facegate-openvino`` ServingRuntime loading the bundle at ``storageUri``. A rollout is a change
of that one object, as KServe's canary model works (Knative mode, i.e. Knative revisions):

- **canary** ``P``: the new ``storageUri`` with ``canaryTrafficPercent: P``; KServe creates a revision for it and
  sends it P % of requests, the rest staying on the last rolled-out revision;
- **promote**: the field removed, so 100 % goes to the latest revision (which becomes the rolled-out one);
- **rollback**: ``canaryTrafficPercent: 0`` with the canary's spec kept, which pins every request to the previous
  rolled-out revision (changing ``storageUri`` back would instead start yet another revision).

Canaries need Knative, so the deployment mode is set explicitly (a cluster defaulting to RawDeployment would
otherwise ignore the canary field). The mode is ``Knative``, its name since KServe v0.16; the older ``Serverless``
is only a deprecated alias in v0.20 (the pinned release), so :func:`deployment_mode` turns a caller's
``Serverless`` into ``Knative`` with a warning rather than writing a name a later KServe may drop.
The Helm release owns the object: :func:`canary`, :func:`promote` and
:func:`rollback` change the release's values (:mod:`facegate.rollout.helm`, ``helm upgrade --reuse-values``), so a
later ``helm upgrade`` keeps the model and ``helm history`` records each step; the chart renders exactly the fields
:func:`inference_service` builds here (``--dry-run`` prints them). :func:`apply` (server-side apply as field manager
``facegate``) remains for clusters without the chart.

Before any traffic moves to a version, the gallery must hold templates for it (``facegate gallery reindex``):
otherwise every student would get ``unknown_student`` from the canary. :func:`require_templates` refuses it.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facegate.errors import FacegateError

if TYPE_CHECKING:
    from facegate.rollout.executor import RemoteRelease
    from facegate.rollout.helm import HelmRelease
    from facegate.serve.gallery import Gallery

__all__ = [
    "API_VERSION",
    "DEFAULT_NAME",
    "DEFAULT_NAMESPACE",
    "FIELD_MANAGER",
    "MODEL_VERSION_KEY",
    "RolloutError",
    "apply",
    "canary",
    "deployment_mode",
    "get_status",
    "inference_service",
    "model_version_label",
    "promote",
    "require_templates",
    "rollback",
    "to_yaml",
]

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
DEFAULT_NAME = "facegate-verifier"
DEFAULT_NAMESPACE = "facegate"
RUNTIME = "facegate-openvino"
MODEL_FORMAT = "facegate"
FIELD_MANAGER = "facegate"
#: Label (sanitised) and annotation (exact) carrying the bundle's version on the object and on predictor pods,
#: which is how Prometheus attributes a pod's metrics to a model version (see the README's canary section).
MODEL_VERSION_KEY = "facegate.io/model-version"
STORAGE_URI_KEY = "facegate.io/storage-uri"
DEPLOYMENT_MODE_KEY = "serving.kserve.io/deploymentMode"
#: KServe's name (v0.16+) for the mode with Knative revisions, the one canaryTrafficPercent works in.
DEPLOYMENT_MODE = "Knative"
#: The pre-v0.16 name of the same mode: still accepted by KServe v0.20 as a deprecated alias.
LEGACY_DEPLOYMENT_MODE = "Serverless"


class RolloutError(FacegateError):
    """A rollout step was refused or failed (no templates, bad percent, cluster unreachable, ...)."""

    code = "rollout_error"


def model_version_label(model_version: str) -> str:
    """``model_version`` as a valid Kubernetes label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric ends).

    Characters outside the set become ``-``; a version that had to be shortened gets a digest suffix so that two
    long versions never share a label.
    """
    import hashlib

    text = re.sub(r"[^A-Za-z0-9._-]", "-", model_version)
    if len(text) > 63:
        text = text[:54] + "-" + hashlib.sha256(model_version.encode()).hexdigest()[:8]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", text) or "unknown"


def deployment_mode(mode: str = DEPLOYMENT_MODE) -> str:
    """The deployment mode to write: ``Knative``; a user's legacy ``Serverless`` is mapped to it with a warning.

    Raises:
        RolloutError: ``bad_mode`` for any other mode (RawDeployment ignores ``canaryTrafficPercent``).
    """
    if mode == LEGACY_DEPLOYMENT_MODE:
        import warnings

        warnings.warn(
            "deploymentMode 'Serverless' is KServe's pre-v0.16 name, a deprecated alias in v0.20: writing 'Knative'",
            FutureWarning,
            stacklevel=2,
        )
        return DEPLOYMENT_MODE
    if mode != DEPLOYMENT_MODE:
        msg = f"deployment mode {mode!r} cannot run canaries: use {DEPLOYMENT_MODE!r} (Knative revisions)"
        raise RolloutError(msg, code="bad_mode")
    return mode


def inference_service(
    storage_uri: str,
    model_version: str,
    *,
    canary_percent: int | None = None,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    mode: str = DEPLOYMENT_MODE,
) -> dict[str, Any]:
    """The InferenceService fields a rollout owns, for ``storage_uri`` (a facegate bundle), optionally as a canary.

    Only what a rollout changes is set: the Helm chart owns the rest of the object (scaling, service account,
    security context), and server-side apply merges the two field managers' parts.

    Args:
        storage_uri: Where the bundle lives (``s3://bucket/prefix``, what the storage initializer downloads).
        model_version: The bundle's version string (``facegate.json`` ``version``).
        canary_percent: ``spec.predictor.canaryTrafficPercent`` (0-100), or ``None`` for no canary field.
        name: Object name.
        namespace: Namespace.
        mode: KServe deployment mode (``Knative``; the legacy ``Serverless`` is mapped, see :func:`deployment_mode`).

    Returns:
        The object as a plain dict.
    """
    mode = deployment_mode(mode)
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise RolloutError(f"canary percent must be 0-100, got {canary_percent}", code="bad_percent")
    label = model_version_label(model_version)
    predictor: dict[str, Any] = {
        # Predictor labels land on the revision's pods: per-version metrics come from there.
        "labels": {MODEL_VERSION_KEY: label},
        "annotations": {MODEL_VERSION_KEY: model_version},
        "model": {"modelFormat": {"name": MODEL_FORMAT}, "runtime": RUNTIME, "storageUri": storage_uri},
    }
    if canary_percent is not None:
        predictor = {"canaryTrafficPercent": canary_percent, **predictor}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MODEL_VERSION_KEY: label},
            "annotations": {
                DEPLOYMENT_MODE_KEY: mode,
                MODEL_VERSION_KEY: model_version,
                STORAGE_URI_KEY: storage_uri,
            },
        },
        "spec": {"predictor": predictor},
    }


def _open_gallery(gallery: Gallery | str) -> Gallery:
    """``gallery`` itself, or the gallery at that URL (keys from the environment, else a count-only key)."""
    if not isinstance(gallery, str):
        return gallery
    from facegate.serve.gallery import Gallery, GalleryError, KeyRing

    try:
        keys = KeyRing.from_env()
    except GalleryError:
        # Counting templates decrypts nothing: an operator without the crop keys may still run the check.
        keys = KeyRing([("count-only", secrets.token_bytes(32))])
    return Gallery(gallery, keys)


def require_templates(gallery: Gallery | str, model_version: str, *, baseline_version: str | None = None) -> int:
    """Refuse to move traffic to ``model_version`` unless the gallery holds its templates.

    Args:
        gallery: A :class:`facegate.serve.gallery.Gallery` or its SQLAlchemy URL.
        model_version: The version about to take traffic.
        baseline_version: The version serving now: the new one must have at least as many templates (every
            student the champion can verify, the canary can too).

    Returns:
        The number of templates for ``model_version``.

    Raises:
        RolloutError: ``no_templates`` or ``incomplete_templates``, naming the reindex command to run.
    """
    g = _open_gallery(gallery)
    n = int(g.template_count(model_version))
    fix = f"run `facegate gallery reindex --model <bundle of {model_version}>` first"
    if n == 0:
        raise RolloutError(
            f"refusing to route traffic to model version {model_version!r}: the gallery has no templates for it; {fix}",
            code="no_templates",
        )
    if baseline_version is not None and baseline_version != model_version:
        base = int(g.template_count(baseline_version))
        if n < base:
            raise RolloutError(
                f"refusing to route traffic to model version {model_version!r}: {n} templates, but "
                f"{baseline_version!r} serves {base}; {fix}",
                code="incomplete_templates",
            )
    return n


def to_yaml(obj: dict[str, Any]) -> str:
    """The object as YAML, keys in the order built (``apiVersion`` and ``kind`` first, as kubectl prints)."""
    import yaml

    return str(yaml.safe_dump(obj, sort_keys=False))


def _api_client(api_client: Any) -> Any:
    if api_client is not None:
        return api_client
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # KUBECONFIG read now, not when the kubernetes package was imported (its default is fixed at import).
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, OSError) as exc:
            raise RolloutError(
                f"no Kubernetes configuration (in-cluster or kubeconfig): {exc}", code="no_cluster"
            ) from None
    return client.ApiClient()


def _path(name: str, namespace: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def apply(obj: dict[str, Any], *, api_client: Any = None, crd_dir: str | Path | None = None) -> dict[str, Any]:
    """Server-side apply ``obj`` as field manager ``facegate`` (conflicts forced: this tool owns rollouts).

    Args:
        obj: The InferenceService.
        api_client: A ``kubernetes.client.ApiClient`` (from in-cluster config or kubeconfig when omitted).
        crd_dir: When given, the object is validated against the CRDs there first.

    Returns:
        The object as the API server stored it.

    Raises:
        RolloutError: If the API server refuses it or cannot be reached.
    """
    if crd_dir is not None:
        from facegate.rollout.crds import validate

        validate(obj, crd_dir)
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = _api_client(api_client)
    meta = obj["metadata"]
    try:
        # kubernetes 30's typed patch methods force a merge-patch content type, so the apply call is made directly.
        result = api.call_api(
            _path(meta["name"], meta["namespace"]),
            "PATCH",
            query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            body=obj,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=30,
        )
    except ApiException as exc:
        raise RolloutError(f"the API server refused {KIND} {meta['name']}: {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise RolloutError(f"cannot reach the Kubernetes API server: {exc}", code="no_cluster") from None
    return dict(result)


def get_object(name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE, *, api_client: Any = None) -> Any:
    """The InferenceService as stored, or ``None`` if it does not exist."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = _api_client(api_client)
    try:
        return api.call_api(
            _path(name, namespace),
            "GET",
            header_params={"Accept": "application/json"},
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=30,
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise RolloutError(f"cannot read {KIND} {name}: {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise RolloutError(f"cannot reach the Kubernetes API server: {exc}", code="no_cluster") from None


@dataclass(frozen=True)
class RolloutStatus:
    """What serves now.

    Attributes:
        name: Object name.
        namespace: Namespace.
        model_version: The latest (canary or promoted) model version, from the annotation.
        storage_uri: The latest bundle's URI.
        canary_percent: ``canaryTrafficPercent`` (``None``: no canary; 0: rolled back).
        ready: The ``Ready`` condition.
        latest_rolled_out: KServe's ``latestRolledoutRevision``.
        latest_created: KServe's ``latestCreatedRevision``.
        previous_rolled_out: KServe's ``previousRolledoutRevision``.
        traffic: Percent of requests per revision (``status.components.predictor.traffic``).
    """

    name: str
    namespace: str
    model_version: str | None
    storage_uri: str | None
    canary_percent: int | None
    ready: bool
    latest_rolled_out: str | None
    latest_created: str | None
    previous_rolled_out: str | None
    traffic: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def status_of(obj: dict[str, Any]) -> RolloutStatus:
    """Summarise a stored InferenceService (pure: reads only the dict)."""
    meta = obj.get("metadata") or {}
    predictor = (obj.get("spec") or {}).get("predictor") or {}
    comp = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    traffic = {
        str(t.get("revisionName") or t.get("tag") or "?"): int(t.get("percent") or 0) for t in comp.get("traffic") or []
    }
    return RolloutStatus(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        model_version=(meta.get("annotations") or {}).get(MODEL_VERSION_KEY),
        storage_uri=(predictor.get("model") or {}).get("storageUri"),
        canary_percent=predictor.get("canaryTrafficPercent"),
        ready=ready,
        latest_rolled_out=comp.get("latestRolledoutRevision"),
        latest_created=comp.get("latestCreatedRevision"),
        previous_rolled_out=comp.get("previousRolledoutRevision"),
        traffic=traffic,
    )


def get_status(
    name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE, *, api_client: Any = None
) -> RolloutStatus:
    """The rollout state of the verifier on the cluster.

    Raises:
        RolloutError: ``not_deployed`` when the InferenceService does not exist, or the cluster is unreachable.
    """
    obj = get_object(name, namespace, api_client=api_client)
    if obj is None:
        raise RolloutError(f"{KIND} {namespace}/{name} does not exist", code="not_deployed")
    return status_of(dict(obj))


def _rollout(
    storage_uri: str,
    model_version: str,
    percent: int | None,
    *,
    gallery: Any,
    baseline_version: str | None,
    name: str,
    namespace: str,
    crd_dir: str | Path | None,
    dry_run: bool,
    release: HelmRelease | RemoteRelease | None,
    action: str,
) -> dict[str, Any]:
    if gallery is not None:  # None only for rollback: traffic goes back to a version that was serving
        require_templates(gallery, model_version, baseline_version=baseline_version)
    obj = inference_service(storage_uri, model_version, canary_percent=percent, name=name, namespace=namespace)
    if crd_dir is not None:
        from facegate.rollout.crds import validate

        validate(obj, crd_dir)
    if dry_run:
        return obj
    from facegate.rollout.helm import HelmRelease

    (release or HelmRelease(namespace=namespace)).set_model(storage_uri, model_version, percent, action=action)
    stored = get_object(name, namespace)
    return dict(stored) if stored is not None else obj


def canary(
    storage_uri: str,
    model_version: str,
    percent: int,
    *,
    gallery: Gallery | str,
    baseline_version: str | None = None,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    crd_dir: str | Path | None = None,
    dry_run: bool = False,
    release: HelmRelease | RemoteRelease | None = None,
) -> dict[str, Any]:
    """Send ``percent`` % of check-ins to ``model_version``, after checking its templates exist.

    Args:
        storage_uri: The new bundle's URI.
        model_version: The new bundle's version string.
        percent: 1-99.
        gallery: A Gallery or its URL (the template check cannot be skipped).
        baseline_version: The serving version (the canary must have at least its template count).
        name: InferenceService name.
        namespace: Namespace.
        crd_dir: Validate against these CRDs before applying.
        dry_run: Build (and validate) only.
        release: The Helm release to upgrade (default: ``facegate`` in ``namespace``, chart from its registry), or
            a :class:`~facegate.rollout.executor.RemoteRelease` (the pipeline: the rollout executor upgrades it).

    Returns:
        The object as the cluster holds it after the upgrade (or the one that would be).

    Raises:
        RolloutError: ``bad_percent``, ``no_templates``, ``incomplete_templates`` or an API failure.
    """
    if not 1 <= percent <= 99:
        raise RolloutError(f"a canary takes 1-99 % of traffic, got {percent} (promote sends 100 %)", code="bad_percent")
    return _rollout(
        storage_uri, model_version, percent, gallery=gallery, baseline_version=baseline_version, name=name,
        namespace=namespace, crd_dir=crd_dir, dry_run=dry_run, release=release, action="canary",
    )  # fmt: skip


def promote(
    storage_uri: str,
    model_version: str,
    *,
    gallery: Gallery | str,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    crd_dir: str | Path | None = None,
    dry_run: bool = False,
    release: HelmRelease | RemoteRelease | None = None,
) -> dict[str, Any]:
    """Send 100 % of check-ins to ``model_version`` (the release's percent back to 100); templates are checked."""
    return _rollout(
        storage_uri, model_version, None, gallery=gallery, baseline_version=None, name=name, namespace=namespace,
        crd_dir=crd_dir, dry_run=dry_run, release=release, action="promote",
    )  # fmt: skip


def rollback(
    storage_uri: str,
    model_version: str,
    *,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    crd_dir: str | Path | None = None,
    dry_run: bool = False,
    release: HelmRelease | RemoteRelease | None = None,
) -> dict[str, Any]:
    """Pin every check-in to the last rolled-out revision (``canaryTrafficPercent: 0``).

    ``storage_uri`` and ``model_version`` are the *canary's* (what the object holds now): keeping its spec is what
    makes KServe route to the previous revision rather than build a new one.
    """
    return _rollout(
        storage_uri, model_version, 0, gallery=None, baseline_version=None, name=name, namespace=namespace,
        crd_dir=crd_dir, dry_run=dry_run, release=release, action="rollback",
    )  # fmt: skip
