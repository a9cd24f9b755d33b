"""The verifier service: KServe's v1/v2 endpoints, the admin API, the gatekeeper, metrics and the server.

Routes:

- open: ``/`` and ``/v2/health/{live,ready}`` (Kubernetes probes), ``/v2``, ``/v2/models/{name}[/ready]``,
  ``/v1/models/{name}`` (metadata and readiness) and ``/metrics``;
- kiosk key: ``/v2/models/{name}/infer`` and ``/v1/models/{name}:predict``;
- admin key: ``/admin/v1/...`` (students, enroll, delete, reindex, audit, API keys) and ``/v2/repository/...``.

The gatekeeper (a plain ASGI middleware) runs before any body is read: it authenticates (401 without a valid key,
403 for a kiosk key on an admin route), applies the per-key rate limit (429 with ``Retry-After``), refuses a
declared or streamed body over the size limit (413) and writes one JSON access line per request. Every error is a
JSON object ``{"error": message, "code": code}``; facegate's own errors map to 4xx by code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, exposition
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from facegate.config import Settings
from facegate.errors import FacegateError, ImageError, ModelError
from facegate.serve.auth import ApiKeyStore, Principal, RateLimiter, claimed_key_id
from facegate.serve.fastpath import FastInfer, observe_stage
from facegate.serve.http_edges import framing_error, open_request_id
from facegate.serve.kserve_compat import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ModelRepository,
    ModelRepositoryExtension,
    register_v1_endpoints,
    register_v2_endpoints,
)
from facegate.serve.memory import Trimmer, limit_arenas
from facegate.serve.metrics import HTTP_REQUESTS, REJECTED_REQUESTS, child
from facegate.serve.models import (
    PRINCIPAL_HEADER,
    EmbedModel,
    Runtime,
    VerifierModel,
    build_runtime,
    plain_request_id,
    student_tag,
)
from facegate.serve.opsmetrics import prime_checkins, watch_load
from facegate.serve.protocol import StrictDataPlane
from facegate.serve.triton_config import ModelStats, install_triton_routes, is_stats_path
from facegate.serve.web import install_web

__all__ = ["Gatekeeper", "create_app", "serve"]

log = logging.getLogger("facegate.serve")
access_log = logging.getLogger("facegate.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: HTTP status per facegate error code; other facegate errors are 400 (the client's input), ModelError 500.
STATUS_BY_CODE = {
    "too_large": 413,
    "too_many_pixels": 413,
    "unknown_student": 404,
    "student_not_found": 404,
    "no_usable_photo": 422,
    "no_face": 422,
    "multiple_faces": 422,
    "face_too_small": 422,
    "blurry": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "rate_limited": 429,
    # Server-side gallery faults (missing or wrong encryption key): not the client's doing.
    "no_key": 500,
    "bad_key": 500,
    "bad_crop": 500,
}


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def route_class(path: str) -> str:
    """``open``, ``inference``, ``admin`` or ``unsupported`` for a request path.

    ``unsupported``: KServe routes facegate does not serve and KServe answers with a 500 (model versions in the
    path, ``:explain``) or that would let an admin unload the verifier while readiness stays green (the model
    repository extension). They get a 404 before anything else runs.
    """
    if path.startswith("/v2/repository/") or "/versions/" in path or path.endswith(":explain"):
        return "unsupported"
    if path.startswith("/admin/"):
        return "admin"
    if is_stats_path(path):
        return "keyed"  # any valid key: traffic figures are not for anyone who can reach the port
    if path.startswith("/v2/models/") and path.rstrip("/").endswith("/infer"):
        return "inference"
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return "inference"
    return "open"


def _log_path(path: str) -> str:
    """The path for the access log, with a student id in an admin path replaced by its digest."""
    prefix = "/admin/v1/students/"
    if path.startswith(prefix) and len(path) > len(prefix):
        return prefix + student_tag(path[len(prefix) :])  # ASGI paths arrive percent-decoded
    return path[:200]


class _ThrottleLog:
    """One log line per window for throttled guesses, instead of one per guess (a flood would flood the logs)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.started = time.monotonic()
        self.count = 0
        self.clients: dict[str, int] = {}

    def add(self, client: str) -> None:
        """Count one throttled attempt from ``client``."""
        self.count += 1
        if client in self.clients or len(self.clients) < 100:
            self.clients[client] = self.clients.get(client, 0) + 1
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Write the window's summary when it has ended (or now, when forced) and there is one."""
        now = time.monotonic()
        if not self.count or (not force and now - self.started < self.window_s):
            if not self.count:
                self.started = now
            return
        top = sorted(self.clients.items(), key=lambda kv: -kv[1])[:5]
        log.warning(
            "auth_throttled",
            extra={"fields": {"count": self.count, "seconds": round(now - self.started, 1),
                              "clients": len(self.clients), "top_clients": dict(top)}},
        )  # fmt: skip
        self.count, self.clients, self.started = 0, {}, now


def _networks(specs: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(s, strict=False) for s in specs]


def client_address(
    peer: str, forwarded: bytes | None, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy and says who it forwards for.

    ``X-Forwarded-For`` is read right to left, skipping trusted proxies; the first other address is the client.
    With no trusted proxies (the default), forwarded headers are ignored, whoever sends them.
    """

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not trusted or forwarded is None or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return peer  # garbage from a trusted proxy's client: fall back to the proxy itself
    return peer


class Gatekeeper:
    """Authentication, throttling, admission, body-size limits and access logging, before the app sees a request.

    Args:
        app: The wrapped ASGI application.
        keys: API key store.
        limiter: Per-key rate limiter.
        max_bytes: Body limit of inference routes.
        max_admin_bytes: Body limit of admin routes (enrollment carries several photos).
        trusted_proxies: Addresses or CIDRs whose ``X-Forwarded-For`` is believed.
        max_inflight_per_key: Inference requests one key may have in flight (more: 429).
        max_inflight: Inference requests in flight in all (more: 503).
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeyStore,
        limiter: RateLimiter,
        max_bytes: int,
        max_admin_bytes: int,
        *,
        trusted_proxies: tuple[str, ...] = (),
        max_inflight_per_key: int = 2,
        max_inflight: int = 32,
    ) -> None:
        self.app, self.keys, self.limiter = app, keys, limiter
        #: Set by :func:`create_app`: the inner FastAPI app and the runtime it serves (tests and tools reach in).
        self.fastapi: FastAPI | None = None
        self.runtime: Runtime | None = None
        self.max_bytes, self.max_admin_bytes = max_bytes, max_admin_bytes
        self.trusted = _networks(trusted_proxies)
        #: Failed authentications per client address (30 at once, then 30 a minute) and per claimed key id (10,
        #: then 10 a minute). Only failures are throttled: a valid key is checked first and always passes.
        self.failures = RateLimiter(rate_per_minute=30, burst=30)
        self.key_failures = RateLimiter(rate_per_minute=10, burst=10)
        self.max_inflight_per_key, self.max_inflight = max_inflight_per_key, max_inflight
        self.inflight: dict[str, int] = {}
        self.inflight_total = 0
        self.throttle_log = _ThrottleLog()
        self.trimmer = Trimmer()
        self.stats = ModelStats()  # per-model counters behind Triton's statistics route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Gate one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        kind = route_class(scope["path"])
        raw = {k.lower(): v for k, v in scope.get("headers", [])}
        # One id per request: the client's x-request-id or a fresh one, replaced by a valid v2 body id once parsed.
        ids = open_request_id(plain_request_id(raw.get(b"x-request-id", b"").decode("latin-1")) or uuid.uuid4().hex)
        status_box = [0]
        principal: Principal | None = None
        peer = str((scope.get("client") or ("?", 0))[0])
        client = client_address(peer, raw.get(b"x-forwarded-for"), self.trusted)
        refused = [False]
        quiet = [False]  # throttled guesses are summed up by the throttle log, not logged one by one
        admitted: list[str] = []

        async def send_wrapped(message: Message) -> None:
            if refused[0]:
                return  # the gatekeeper already answered 413; whatever the app says after that is dropped
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", ids.value.encode("latin-1"))]
            await send(message)

        async def respond(resp: Response) -> None:
            # Refused before the body was read: close the connection after answering, so a client that keeps
            # streaming (a chunked upload after a 413) cannot hold it open.
            resp.headers["connection"] = "close"
            await resp(scope, receive, send_wrapped)

        try:
            ambiguous = framing_error(scope.get("headers", []))
            if ambiguous is not None:  # refused before anything else: a request-smuggling attempt behind a proxy
                REJECTED_REQUESTS.labels("ambiguous_framing").inc()
                await respond(_error(400, ambiguous, "ambiguous_framing"))
                return
            if kind == "unsupported":
                await respond(_error(404, "not supported by this server", "not_supported"))
                return
            if kind != "open":
                t_auth = time.perf_counter()
                principal = await self._authenticate(raw, kind, respond, client, quiet)
                observe_stage("auth", time.perf_counter() - t_auth)
                if principal is None:
                    return
            limit = self.max_admin_bytes if kind == "admin" else self.max_bytes
            declared = raw.get(b"content-length")
            if declared is not None:
                if not declared.isdigit():
                    REJECTED_REQUESTS.labels("bad_length").inc()
                    await respond(_error(400, "Content-Length is not a number", "bad_request"))
                    return
                if int(declared) > limit:
                    # Refused on the header alone: not one byte of the body is read, let alone decoded.
                    REJECTED_REQUESTS.labels("too_large").inc()
                    await respond(_error(413, f"request body over the {limit}-byte limit", "too_large"))
                    return
            if kind == "inference" and principal is not None:
                if not await self._admit(principal.name, respond):
                    return
                admitted.append(principal.name)
            internal = (PRINCIPAL_HEADER.encode(), b"x-request-id")  # set below, never taken from the client as is
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in internal]
            if principal is not None:
                headers.append((PRINCIPAL_HEADER.encode(), f"{principal.name}:{principal.role}".encode()))
            headers.append((b"x-request-id", ids.value.encode("latin-1")))
            scope = dict(scope, headers=headers)
            seen = [0]

            async def receive_limited() -> Message:
                if refused[0]:
                    return {"type": "http.disconnect"}
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > limit and status_box[0] == 0:
                        # A streamed body crossed the limit: answer 413 now and tell the app the client left, so
                        # the rest is never buffered (raising here would be turned into a 400 by FastAPI).
                        REJECTED_REQUESTS.labels("too_large").inc()
                        await respond(_error(413, f"request body over the {limit}-byte limit", "too_large"))
                        refused[0] = True
                        return {"type": "http.disconnect"}
                return message

            try:
                await self.app(scope, receive_limited, send_wrapped)
            except Exception:
                if not refused[0]:
                    raise
                # The app failed reading a body the gatekeeper cut off (ClientDisconnect): already answered 413.
        finally:
            for name in admitted:
                self._release(name)
            status = status_box[0] or 500
            child(HTTP_REQUESTS, kind, str(status)).inc()
            if admitted:
                self.stats.record(scope["path"], status, time.perf_counter() - t0)
            if quiet[0]:
                self.throttle_log.add(client)
            else:
                self.throttle_log.flush()
                access_log.info(
                    "request",
                    extra={"fields": {"request_id": ids.value, "method": scope.get("method"),
                                      "path": _log_path(scope["path"]), "status": status,
                                      "ms": round((time.perf_counter() - t0) * 1000, 2), "client": client,
                                      "principal": principal.name if principal else None}},
                )  # fmt: skip

    async def _admit(self, name: str, respond: Callable[[Response], Awaitable[None]]) -> bool:
        """Take an in-flight slot for ``name``; answer 429 (this key's share is taken) or 503 (all are) if none.

        Nothing waits here: a refused request is answered at once with ``Retry-After``, so the queue in front of
        the worker threads stays bounded by ``max_inflight`` and one key can hold at most its share of them.
        """
        if self.inflight.get(name, 0) >= self.max_inflight_per_key:
            REJECTED_REQUESTS.labels("key_busy").inc()
            await respond(
                _error(
                    429,
                    f"this key already has {self.max_inflight_per_key} requests in flight; retry shortly",
                    "too_many_inflight",
                    {"Retry-After": "1"},
                )
            )
            return False
        if self.inflight_total >= self.max_inflight:
            REJECTED_REQUESTS.labels("overloaded").inc()
            await respond(_error(503, "the verifier is at capacity; retry shortly", "overloaded", {"Retry-After": "1"}))
            return False
        self.inflight[name] = self.inflight.get(name, 0) + 1
        self.inflight_total += 1
        return True

    def _release(self, name: str) -> None:
        left = self.inflight.get(name, 1) - 1
        if left > 0:
            self.inflight[name] = left
        else:
            self.inflight.pop(name, None)
        self.inflight_total -= 1
        if self.inflight_total == 0:
            self.trimmer.maybe()  # idle again: hand the burst's freed image buffers back to the system

    async def _authenticate(
        self,
        raw: dict[bytes, bytes],
        kind: str,
        respond: Callable[[Response], Awaitable[None]],
        client: str,
        quiet: list[bool],
    ) -> Principal | None:
        auth = raw.get(b"authorization", b"").decode("latin-1")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else raw.get(b"x-api-key", b"").decode("latin-1")
        challenge = {"WWW-Authenticate": 'Bearer realm="facegate"'}
        if not key:
            REJECTED_REQUESTS.labels("no_key").inc()
            await respond(
                _error(401, "an API key is required (Authorization: Bearer KEY)", "unauthenticated", challenge)
            )
            return None
        try:
            # The key table lives in memory; only its periodic re-read touches the database, off the event loop.
            if self.keys.fresh():
                principal = self.keys.authenticate(key)
            else:
                principal = await asyncio.get_running_loop().run_in_executor(None, self.keys.authenticate, key)
        except Exception:  # the key store (database) is down: say so, without details
            log.exception("API key lookup failed")
            await respond(_error(503, "authentication is unavailable; retry shortly", "auth_unavailable"))
            return None
        if principal is None:
            # Failures are throttled per address and per claimed key id. A valid key never gets here, so no
            # client's guessing can lock out another kiosk, whatever address they share.
            kid = claimed_key_id(key)
            wait = self.failures.acquire(client)
            if kid is not None:
                wait = max(wait, self.key_failures.acquire(kid))
            if wait > 0:
                REJECTED_REQUESTS.labels("auth_throttled").inc()
                quiet[0] = True
                retry = {"Retry-After": str(max(1, int(wait + 0.999)))}
                await respond(_error(429, "too many failed authentications", "rate_limited", retry))
                return None
            REJECTED_REQUESTS.labels("bad_key").inc()
            await respond(_error(401, "invalid or revoked API key", "unauthenticated", challenge))
            return None
        if kind == "admin" and principal.role != "admin":
            REJECTED_REQUESTS.labels("forbidden").inc()
            await respond(_error(403, "this route needs an admin key", "forbidden"))
            return None
        wait = self.limiter.acquire(principal.name)
        if wait > 0:
            REJECTED_REQUESTS.labels("rate_limited").inc()
            seconds = str(max(1, int(wait + 0.999)))
            await respond(
                _error(429, f"rate limit exceeded; retry in {seconds} s", "rate_limited", {"Retry-After": seconds})
            )
            return None
        return principal


class EnrollBody(BaseModel):
    """``PUT /admin/v1/students/{id}``: 1..N photos, base64."""

    photos: list[str] = Field(min_length=1, max_length=20)


def _admin_router(runtime: Runtime, keys: ApiKeyStore) -> APIRouter:
    router = APIRouter(prefix="/admin/v1", tags=["admin"])
    gallery = runtime.gallery

    def who(request: Request) -> str:
        return request.headers.get(PRINCIPAL_HEADER, "admin:admin").partition(":")[0]

    @router.get("/students")
    async def list_students() -> Any:
        return {"students": await runtime.run(gallery.students)}

    @router.put("/students/{student_id}")
    async def enroll(student_id: str, body: EnrollBody, request: Request) -> Any:
        photos = []
        for i, b64 in enumerate(body.photos):
            try:
                photos.append(base64.b64decode(b64, validate=True))
            except (binascii.Error, ValueError):
                return _error(400, f"photo {i + 1} is not valid base64", "bad_base64")
        admin = who(request)

        def run() -> Any:
            return gallery.enroll(
                student_id, photos, runtime.embedder, runtime.aligner(), limits=runtime.limits, admin=admin
            )

        res = await runtime.run(run)
        log.info("enroll", extra={"fields": {"admin": admin, "accepted": res.accepted, "rejected": len(res.rejected)}})
        return {
            "student_id": res.student_id,
            "accepted": res.accepted,
            "rejected": res.rejected,
            "model_version": res.model_version,
        }

    @router.delete("/students/{student_id}")
    async def delete(student_id: str, request: Request) -> Any:
        if not await runtime.run(lambda: gallery.delete(student_id, admin=who(request))):
            return _error(404, "no such student", "student_not_found")
        return {"student_id": student_id, "deleted": True}

    @router.post("/reindex")
    async def reindex() -> Any:
        n = await runtime.run(gallery.reindex, runtime.embedder)
        return {"students": n, "model_version": runtime.embedder.version}

    @router.get("/audit")
    async def audit(limit: int = 100) -> Any:
        return {"entries": await runtime.run(gallery.audit, max(1, min(limit, 10_000)))}

    @router.get("/keys")
    async def list_keys() -> Any:
        return {"keys": await runtime.run(keys.list)}

    @router.post("/keys/{name}")
    async def create_key(name: str, role: str = "kiosk") -> Any:
        if role not in ("kiosk", "admin"):
            return _error(400, "role must be 'kiosk' or 'admin'", "bad_role")
        key = await runtime.run(keys.create, name, role)
        return {"name": name, "role": role, "key": key}

    @router.delete("/keys/{name}")
    async def revoke_key(name: str) -> Any:
        if not await runtime.run(keys.revoke, name):
            return _error(404, "no active key by that name", "key_not_found")
        return {"name": name, "revoked": True}

    @router.get("/model")
    async def model_info() -> Any:
        return {**runtime.embedder.describe(), "threshold": runtime.threshold}

    return router


def _install_error_handlers(app: FastAPI) -> None:
    async def facegate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FacegateError)
        status = STATUS_BY_CODE.get(exc.code, 500 if isinstance(exc, ModelError) else 400)
        if isinstance(exc, ImageError) and exc.code not in STATUS_BY_CODE:
            status = 400
        return _error(status, exc.message, exc.code)

    async def invalid_input(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc), "bad_request")

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Name the fields, never echo the input (it may be an image or an id).
        where = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return _error(422, f"malformed request: {where}"[:1000], "malformed_request")

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, str(exc), "model_not_found")

    async def not_ready(request: Request, exc: Exception) -> Response:
        return _error(503, str(exc), "model_not_ready")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), "http_error", dict(exc.headers or {}))

    async def not_supported(request: Request, exc: Exception) -> Response:
        return _error(404, "not supported by this server", "not_supported")

    async def disconnected(request: Request, exc: Exception) -> Response:
        return _error(400, "the client went away before the request was read", "client_disconnected")

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("internal error", exc_info=exc)
        return _error(500, "internal error", "internal")

    app.add_exception_handler(FacegateError, facegate_error)
    app.add_exception_handler(InvalidInput, invalid_input)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(ModelNotFound, not_found)
    app.add_exception_handler(ModelNotReady, not_ready)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(NotImplementedError, not_supported)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Exception, internal)


def start_metrics_server(settings: Settings) -> tuple[str, Callable[[], None]]:
    """Serve Prometheus ``/metrics`` on ``serve.metrics_host:serve.metrics_port`` in a daemon thread.

    Not on the API port: the metrics need no key, so they get their own listener, on loopback unless configured
    otherwise (the chart binds 0.0.0.0 and a NetworkPolicy admits only Prometheus).

    Returns:
        The metrics URL (with the port actually bound, when port 0 asked for a free one) and a function that stops
        the listener.
    """
    sv = settings.serve
    httpd, thread = exposition.start_wsgi_server(sv.metrics_port, addr=sv.metrics_host, registry=REGISTRY)
    host = sv.metrics_host if ":" not in sv.metrics_host else f"[{sv.metrics_host}]"

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return f"http://{host}:{httpd.server_port}/metrics", stop


def create_app(settings: Settings, runtime: Runtime | None = None, keys: ApiKeyStore | None = None) -> Gatekeeper:
    """Build the service: load models, register KServe's endpoints, wrap everything in the gatekeeper.

    Args:
        settings: Resolved settings.
        runtime: A built runtime (built from ``settings`` when omitted).
        keys: API key store (on the gallery database when omitted).

    Returns:
        The ASGI application (``.fastapi`` is the inner FastAPI app, ``.runtime`` the runtime).
    """
    owned = runtime is None
    rt = runtime or build_runtime(settings)
    store = keys or ApiKeyStore(rt.gallery.engine)
    store.on_reload = prime_checkins
    store.preload()  # the first kiosk must not wait for the key table's first read
    repo = ModelRepository()
    for model in (VerifierModel(settings.serve.model_name, rt), EmbedModel("embed", rt)):
        model.load()
        repo.update(model)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:  # a runtime the caller passed in stays usable after this app stops
            rt.close()

    app = FastAPI(
        title="facegate verifier",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=JSONResponse,
        lifespan=lifespan,
    )
    dataplane = StrictDataPlane(model_registry=repo)
    extension = ModelRepositoryExtension(model_registry=repo)
    app.add_api_route("/", dataplane.live, methods=["GET"])
    stats = ModelStats()
    install_triton_routes(app, repo, stats)  # before KServe's /v2/models/{name}, which would take /v2/models/stats
    register_v1_endpoints(app, dataplane, extension)
    register_v2_endpoints(app, dataplane, extension)
    app.include_router(_admin_router(rt, store))
    install_web(app, rt)  # the kiosk and console pages, and the console's read-only admin routes
    _install_error_handlers(app)
    sv = settings.serve
    gate = Gatekeeper(
        FastInfer(app, dataplane),  # well-formed v2 inference requests skip FastAPI's validation (fastpath.py)
        store,
        RateLimiter(sv.rate_per_minute, sv.rate_burst),
        sv.max_request_bytes,
        sv.max_admin_request_bytes,
        trusted_proxies=sv.trusted_proxies,
        max_inflight_per_key=sv.max_inflight_per_key,
        max_inflight=sv.max_inflight,
    )
    gate.fastapi, gate.runtime, gate.stats = app, rt, stats
    watch_load(gate, rt.batcher)  # the dashboards' in-flight and queue gauges
    return gate


def uvicorn_config(settings: Settings, app: ASGIApp) -> Any:
    """The uvicorn configuration of the service: timeouts, connection cap, and no forwarded-header trust.

    uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default; here it believes nobody, and the gatekeeper
    reads the header only from ``serve.trusted_proxies``.
    """
    import uvicorn

    from facegate.serve.timeouts import guarded_h11

    sv = settings.serve
    return uvicorn.Config(
        app,
        host=sv.host,
        port=sv.port,
        http=guarded_h11(sv.header_timeout_s, sv.body_timeout_s),
        proxy_headers=False,
        forwarded_allow_ips="",
        timeout_keep_alive=int(max(1, round(sv.keepalive_s))),
        limit_concurrency=sv.max_connections,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )


def serve(settings: Settings, model: str | None = None) -> None:
    """Run the service with uvicorn on ``serve.host:serve.port`` until SIGINT/SIGTERM, metrics on their own port.

    Binds 127.0.0.1 by default; in a pod, set ``serve.host=0.0.0.0`` (the chart does).
    """
    import uvicorn

    limit_arenas()  # before any worker thread: fewer glibc arenas holding freed image buffers
    rt = build_runtime(settings, model)
    app = create_app(settings, rt)
    metrics_url, stop_metrics = start_metrics_server(settings)
    log.info(
        "starting",
        extra={"fields": {"host": settings.serve.host, "port": settings.serve.port, "model": rt.embedder.name,
                          "model_version": rt.embedder.version, "threshold": rt.threshold,
                          "metrics_url": metrics_url}},
    )  # fmt: skip
    try:
        uvicorn.Server(uvicorn_config(settings, app)).run()
    finally:
        stop_metrics()
