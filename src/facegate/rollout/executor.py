"""Rollouts from the training pipeline without handing it the Helm release: a request ConfigMap and an executor.

The release owns the served model (:mod:`facegate.rollout.helm`), and Helm keeps the release in Secrets of the
serving namespace. Whoever may run ``helm upgrade`` there must list and write Secrets there, which includes reading
the gallery's keys; and whoever may create a Pod or Job there can mount any Secret of the namespace, whatever its
ServiceAccount. So the pipeline runner (which runs arbitrary pipeline code) gets neither. Instead:

- the pipeline writes a :class:`RolloutRequest` (action, storage URI, model version, percent: nothing else) into
  the ConfigMap ``facegate-rollout-request`` (RBAC: get/patch of that one ConfigMap by name) and waits for the
  answer in the same ConfigMap (:class:`RemoteRelease`, a drop-in for :class:`~facegate.rollout.helm.HelmRelease`);
- the rollout executor, a Deployment in the serving namespace under its own ServiceAccount (manifests/), reads the
  request, checks it, and runs the same ``helm upgrade --reuse-values`` as ``facegate rollout`` does
  (:func:`execute_once`), then writes the result. The chart, release name and every other value are the
  executor's, so the pipeline can move traffic between model versions but cannot change images, commands or mounts.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facegate.errors import FacegateError
from facegate.rollout.kserve import DEFAULT_NAMESPACE, RolloutError, _api_client

if TYPE_CHECKING:
    from facegate.rollout.helm import HelmRelease

__all__ = ["REQUEST_CONFIGMAP", "RemoteRelease", "RolloutRequest", "execute_once", "run_executor"]

#: The ConfigMap (in the serving namespace, created by manifests/) that carries requests and results.
REQUEST_CONFIGMAP = "facegate-rollout-request"
ACTIONS = ("canary", "promote", "rollback")
# The chart's schema for the same values (tools/validate/chart_docs.py): checked here first so that a bad request
# gets a clear answer instead of a helm schema error, and so nothing else can ride along in a value.
_STORAGE_URI = re.compile(r"^(s3|gs|https?|pvc)://[^\s]+$")
_MODEL_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class RolloutRequest:
    """One rollout step asked of the executor.

    Attributes:
        id: A fresh hex id; the result carries it back.
        action: ``canary``, ``promote`` or ``rollback``.
        storage_uri: The bundle's URI.
        model_version: Its version string.
        percent: ``verifier.canaryTrafficPercent`` (``None``: 100).
    """

    id: str
    action: str
    storage_uri: str
    model_version: str
    percent: int | None

    def __post_init__(self) -> None:
        problems = []
        if not _ID.match(str(self.id)):
            problems.append("id is not 32 hex digits")
        if self.action not in ACTIONS:
            problems.append(f"action {self.action!r} is not one of {', '.join(ACTIONS)}")
        if not isinstance(self.storage_uri, str) or not _STORAGE_URI.match(self.storage_uri):
            problems.append(f"storage URI {self.storage_uri!r} is not s3://, gs://, http(s):// or pvc://")
        if not isinstance(self.model_version, str) or not _MODEL_VERSION.match(self.model_version):
            problems.append(f"model version {self.model_version!r} has characters a chart value may not")
        if self.percent is not None and (type(self.percent) is not int or not 0 <= self.percent <= 100):
            problems.append(f"percent {self.percent!r} is not an integer 0-100")
        if problems:
            raise RolloutError("bad rollout request: " + "; ".join(problems), code="bad_request")

    def to_json(self) -> str:
        """The request as stored in the ConfigMap."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutRequest:
        """Parse and check a stored request.

        Raises:
            RolloutError: ``bad_request`` when it is not a well-formed request.
        """
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in ("id", "action", "storage_uri", "model_version", "percent")})
        except (ValueError, TypeError, KeyError) as exc:
            raise RolloutError(f"bad rollout request: {exc}", code="bad_request") from None


def _core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(_api_client(api_client))


def _read(core: Any, name: str, namespace: str) -> dict[str, str]:
    """The ConfigMap's data (``request`` and ``result`` JSON texts)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        cm = core.read_namespaced_config_map(name, namespace, _request_timeout=30)
    except ApiException as exc:
        hint = " (apply manifests/: it holds the rollout executor)" if exc.status == 404 else ""
        raise RolloutError(f"cannot read ConfigMap {namespace}/{name}: {exc.status} {exc.reason}{hint}") from None
    except HTTPError as exc:
        raise RolloutError(f"cannot reach the Kubernetes API server: {exc}", code="no_cluster") from None
    return dict(cm.data or {})


def _write(core: Any, name: str, namespace: str, key: str, value: str) -> None:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        core.patch_namespaced_config_map(name, namespace, {"data": {key: value}}, _request_timeout=30)
    except ApiException as exc:
        raise RolloutError(f"cannot write ConfigMap {namespace}/{name}: {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise RolloutError(f"cannot reach the Kubernetes API server: {exc}", code="no_cluster") from None


def _pending(data: dict[str, str]) -> str | None:
    """The id of a request that has no result yet, if any."""
    try:
        request_id = json.loads(data.get("request") or "{}").get("id")
        result_id = json.loads(data.get("result") or "{}").get("id")
    except (ValueError, AttributeError):
        return None
    return str(request_id) if request_id and request_id != result_id else None


@dataclass(frozen=True)
class RemoteRelease:
    """The Helm release as the pipeline sees it: :meth:`set_model` asks the rollout executor and waits.

    Attributes:
        namespace: The serving namespace (where the executor and the ConfigMap are).
        configmap: The request ConfigMap.
        timeout_s: How long to wait for the answer (the executor's upgrade runs the re-index hook: up to 65 min).
        poll_s: Seconds between reads.
        api_client: A ``kubernetes.client.ApiClient`` (in-cluster config or kubeconfig when omitted).
    """

    namespace: str = DEFAULT_NAMESPACE
    configmap: str = REQUEST_CONFIGMAP
    timeout_s: float = 75 * 60.0
    poll_s: float = 2.0
    api_client: Any = None

    def set_model(self, storage_uri: str, model_version: str, canary_percent: int | None, *, action: str) -> int:
        """Have the executor upgrade the release with these values; returns the new revision.

        A request still pending (another run's) is waited for first: requests never overwrite each other.

        Raises:
            RolloutError: ``bad_request``, ``rollout_failed`` (the executor's helm error), or ``no_executor`` when
                nothing answers in time.
        """
        request = RolloutRequest(uuid.uuid4().hex, action, storage_uri, model_version, canary_percent)
        core = _core(self.api_client)
        deadline = time.monotonic() + self.timeout_s
        while (other := _pending(_read(core, self.configmap, self.namespace))) is not None:
            if time.monotonic() > deadline:
                raise RolloutError(f"rollout request {other} is still pending: is the executor running?", code="busy")
            time.sleep(self.poll_s)
        _write(core, self.configmap, self.namespace, "request", request.to_json())
        while True:
            raw = _read(core, self.configmap, self.namespace).get("result") or "{}"
            result = json.loads(raw)
            if result.get("id") == request.id:
                if result.get("ok"):
                    return int(result.get("revision") or 0)
                raise RolloutError(f"the rollout executor failed: {result.get('error')}", code="rollout_failed")
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"no answer to rollout request {request.id} in {self.timeout_s:.0f} s: is the rollout executor "
                    f"(Deployment facegate-rollout-executor in {self.namespace}) running?",
                    code="no_executor",
                )
            time.sleep(self.poll_s)


def execute_once(
    release: HelmRelease,
    *,
    configmap: str = REQUEST_CONFIGMAP,
    api_client: Any = None,
) -> dict[str, Any] | None:
    """Carry out the pending request, if any, on ``release`` and write its result.

    Args:
        release: The release to upgrade (its namespace is the ConfigMap's).
        configmap: The request ConfigMap.
        api_client: A ``kubernetes.client.ApiClient``.

    Returns:
        The result written (``{"id", "ok", "revision"|"error", ...}``), or ``None`` when nothing was pending.
    """
    core = _core(api_client)
    data = _read(core, configmap, release.namespace)
    request_id = _pending(data)
    if request_id is None:
        return None
    result: dict[str, Any] = {"id": request_id, "ok": False}
    try:
        request = RolloutRequest.from_json(data["request"])
        revision = release.set_model(request.storage_uri, request.model_version, request.percent, action=request.action)
        result.update(ok=True, revision=revision, action=request.action, model_version=request.model_version)
    except FacegateError as exc:
        result["error"] = f"[{exc.code}] {exc.message}"[-2000:]
    _write(core, configmap, release.namespace, "result", json.dumps(result, sort_keys=True))
    return result


def run_executor(
    release: HelmRelease,
    *,
    configmap: str = REQUEST_CONFIGMAP,
    poll_s: float = 5.0,
    api_client: Any = None,
    max_polls: int | None = None,
    heartbeat: Path | None = None,
) -> None:
    """Serve rollout requests until stopped (``max_polls``: stop after that many looks, for tests).

    A failed look (API server unreachable) is printed and retried: the executor outlives API server restarts.
    ``heartbeat`` is touched before each look (the Deployment's probes check its age).
    """
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        if heartbeat is not None:
            heartbeat.touch()
        try:
            result = execute_once(release, configmap=configmap, api_client=api_client)
        except RolloutError as exc:
            print(f"[facegate] rollout executor: {exc.message}", flush=True)
            result = None
        if result is not None:
            print(f"[facegate] rollout executor: {json.dumps(result, sort_keys=True)}", flush=True)
        if max_polls is None or polls < max_polls:
            time.sleep(poll_s)
