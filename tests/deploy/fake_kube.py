"""A Kubernetes API server small enough to read, for running the real helm offline (no cluster on CI machines).

It serves what helm 3's kube client uses: discovery (legacy ``/api`` and ``/apis`` lists), and get/list/create/
update/patch/delete of namespaced objects of the kinds it is told about, in memory. Helm's ``secrets`` storage
driver keeps releases in Secrets here, so ``helm history``, ``--reuse-values`` and ``helm rollback`` run for
real. Patches: helm sends a JSON merge patch for custom resources (the InferenceService, what these tests check)
and a strategic merge patch for built-in kinds, approximated here by a merge patch without ``$`` directives.

RBAC: given ``rbac`` (identity -> namespace -> Role rules), a request as one of those identities is allowed only
what the rules grant (verbs, API groups, resources, resourceNames as the API server's RBAC authorizer reads them)
and answered 403 otherwise; ``denied`` records each refusal. Other identities are unrestricted (the cluster admin).
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: (group, version, kind, plural) served; the chart's kinds plus what helm itself stores (Secrets).
KINDS = (
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    ("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
    ("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
    ("serving.kserve.io", "v1alpha1", "ServingRuntime", "servingruntimes"),
    ("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices"),
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch; keys starting with ``$`` (strategic-merge directives) are dropped."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """(field number, value) of one protobuf message: varints as int, length-delimited as bytes."""
    out: list[tuple[int, bytes | int]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(data):
        key = varint()
        if key & 7 == 0:
            out.append((key >> 3, varint()))
        elif key & 7 == 2:
            n = varint()
            out.append((key >> 3, data[i : i + n]))
            i += n
        else:
            raise ValueError(f"unsupported protobuf wire type {key & 7}")
    return out


def _pb_map(entries: list[bytes]) -> dict[str, bytes]:
    pairs = [dict(_fields(e)) for e in entries]
    return {bytes(p.get(1, b"")).decode(): bytes(p.get(2, b"")) for p in pairs}  # type: ignore[arg-type]


def secret_from_protobuf(data: bytes) -> dict[str, Any]:
    """The JSON form of a Secret sent as Kubernetes protobuf (magic ``k8s\\0``, an ``Unknown`` envelope).

    Only what helm's storage driver sets is read: name, namespace, labels, data and type (field numbers from
    k8s.io/api/core/v1/generated.proto and apimachinery's ObjectMeta).
    """
    envelope = dict(_fields(data[4:]))
    secret = _fields(bytes(envelope[2]))  # type: ignore[arg-type]
    meta_fields = _fields(next(bytes(v) for f, v in secret if f == 1))  # type: ignore[arg-type]
    meta = {k: bytes(v).decode() for f, v in meta_fields if (k := {1: "name", 3: "namespace"}.get(f))}  # type: ignore[arg-type]
    labels = _pb_map([bytes(v) for f, v in meta_fields if f == 11])  # type: ignore[arg-type]
    values = _pb_map([bytes(v) for f, v in secret if f == 2])  # type: ignore[arg-type]
    kind = next((bytes(v).decode() for f, v in secret if f == 3), "Opaque")  # type: ignore[arg-type]
    return {
        "apiVersion": "v1", "kind": "Secret", "type": kind,
        "metadata": {**meta, "labels": {k: v.decode() for k, v in labels.items()}},
        "data": {k: base64.b64encode(v).decode() for k, v in values.items()},
    }  # fmt: skip


Rules = list[dict[str, Any]]


def allows(rules: Rules, verb: str, group: str, resource: str, name: str | None) -> bool:
    """Whether any Role rule grants ``verb`` on ``group``/``resource`` (named ``name``).

    As Kubernetes RBAC: ``*`` matches anything; a rule with resourceNames never matches a request without a name
    (create, list, watch), which is why those verbs cannot be narrowed to names.
    """
    for rule in rules:
        if not ({"*", verb} & set(rule.get("verbs") or [])):
            continue
        if not ({"*", group} & set(rule.get("apiGroups") or [])):
            continue
        if not ({"*", resource} & set(rule.get("resources") or [])):
            continue
        names = rule.get("resourceNames") or []
        if names and (name is None or name not in names):
            continue
        return True
    return False


class FakeKube:
    """The server; ``objects[(plural, namespace, name)]`` is the stored state, ``url`` its address."""

    def __init__(self, rbac: dict[str, dict[str, Rules]] | None = None) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rbac = rbac or {}
        self.denied: list[tuple[str, str, str, str, str | None]] = []  # (token, verb, namespace, resource, name)
        self.lock = threading.Lock()
        self._rv = 0
        kube = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                if "protobuf" in (self.headers.get("Content-Type") or ""):
                    return secret_from_protobuf(data)  # helm's typed client stores releases as protobuf Secrets
                return json.loads(data) if data else None

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                if url.path.endswith("/openapi/v2"):
                    # An OpenAPI document without schemas (gnostic protobuf: swagger "2.0", info {title, version}):
                    # helm's validation then finds no schema for any kind and checks nothing, as for CRDs.
                    info = b"\x0a\x04fake\x12\x07v1.33.0"
                    data = b"\x0a\x032.0\x12" + bytes([len(info)]) + info
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                # The identity rides in the server URL's path (kubeconfig): client-go sends no bearer token over
                # plain HTTP, and this server speaks no TLS.
                path, token = url.path, None
                if path.startswith("/as/"):
                    who, _, rest = path[4:].partition("/")
                    path, token = "/" + rest, unquote(who)
                code, body = kube.handle(method, path, parse_qs(url.query), self._body(), token=token)
                self._send(code, body)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKube:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, namespace: str, token: str = "fake") -> str:
        """A kubeconfig (YAML text) pointing at this server as the identity ``token``."""
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"{self.url}/as/{quote(token, safe='')}"}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        })  # fmt: skip

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return copy.deepcopy(self.objects.get((plural, namespace, name)))

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                      "message": message, "code": code}  # fmt: skip

    def _discovery(self, path: str) -> tuple[int, Any] | None:
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for g, v, _, _ in KINDS:
                if g and v not in groups.setdefault(g, []):
                    groups[g].append(v)
            items = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                      "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                     for g, vs in groups.items()]  # fmt: skip
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}
        for g, v in {(g, v) for g, v, _, _ in KINDS}:
            if path == (f"/apis/{g}/{v}" if g else f"/api/{v}"):
                verbs = ["create", "delete", "get", "list", "patch", "update"]
                res = [{"name": p, "singularName": k.lower(), "namespaced": True, "kind": k, "verbs": verbs}
                       for gg, vv, k, p in KINDS if (gg, vv) == (g, v)]  # fmt: skip
                return 200, {"kind": "APIResourceList", "groupVersion": f"{g}/{v}" if g else v, "resources": res}
        return None

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, token: str | None = None
    ) -> tuple[int, Any]:
        """One request: ``(status, JSON body)``."""
        found = self._discovery(path) if method == "GET" else None
        if found is not None:
            return found  # discovery is open to every authenticated user (system:discovery)
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1] if len(parts) > 1 else ""
        # /api/v1/namespaces/NS/PLURAL[/NAME] or /apis/G/V/namespaces/NS/PLURAL[/NAME]
        parts = parts[2:] if parts[0] == "api" else parts[3:]
        if len(parts) < 3 or parts[0] != "namespaces":
            return self._status(404, "NotFound", f"no route {path}")
        namespace, plural, name = parts[1], parts[2], parts[3] if len(parts) > 3 else None
        if token in self.rbac:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            if verb is None:
                verb = "get" if name else "watch" if (query.get("watch") or [""])[0] in ("1", "true") else "list"
            if not allows(self.rbac[token].get(namespace, []), verb, group, plural, name):
                with self.lock:
                    self.denied.append((token, verb, namespace, plural, name))
                what = f"{plural}{'.' + group if group else ''}" + (f' "{name}"' if name else "")
                return self._status(403, "Forbidden", f'{token} cannot {verb} {what} in the namespace "{namespace}"')
        with self.lock:
            return self._crud(method, plural, namespace, name, query, body)

    def _crud(
        self, method: str, plural: str, ns: str, name: str | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        if name is None and method == "GET":
            wanted = dict(kv.split("=", 1) for kv in (query.get("labelSelector") or [""])[0].split(",") if "=" in kv)
            items = [o for (p, n, _), o in sorted(self.objects.items()) if p == plural and n == ns
                     and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]  # fmt: skip
            g, v, kind = next((g, v, k) for g, v, k, p in KINDS if p == plural)
            # Typed clients (helm's storage driver) decode only their own list kind, e.g. SecretList.
            return 200, {"kind": f"{kind}List", "apiVersion": f"{g}/{v}" if g else v,
                         "metadata": {"resourceVersion": str(self._rv)}, "items": items}  # fmt: skip
        if name is None and method == "POST":
            name = body["metadata"]["name"]
            if (plural, ns, name) in self.objects:
                return self._status(409, "AlreadyExists", f"{plural} {name} already exists")
            return 201, self._store(plural, ns, name, body, new=True)
        key = (plural, ns, str(name))
        current = self.objects.get(key)
        if current is None:
            return self._status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return 200, current
        if method == "DELETE":
            del self.objects[key]
            return 200, current
        if method == "PUT":
            return 200, self._store(plural, ns, str(name), body, new=False)
        if method == "PATCH":
            return 200, self._store(plural, ns, str(name), merge_patch(current, body), new=False)
        return self._status(405, "MethodNotAllowed", method)

    def _store(self, plural: str, ns: str, name: str, obj: dict[str, Any], *, new: bool) -> dict[str, Any]:
        self._rv += 1
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=ns, name=name, resourceVersion=str(self._rv))
        if new:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp="2026-01-01T00:00:00Z", generation=1)
        if plural == "secrets" and "stringData" in obj:  # as the API server does
            data = obj.setdefault("data", {})
            data.update({k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()})
        self.objects[(plural, ns, name)] = obj
        return copy.deepcopy(obj)
