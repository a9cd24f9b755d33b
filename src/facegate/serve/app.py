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
from facegate.serve.auth import ApiKeyStore, Principal, RateLimiter
from facegate.serve.kserve_compat import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ModelRepository,
    ModelRepositoryExtension,
    register_v1_endpoints,
    register_v2_endpoints,
)
from facegate.serve.metrics import HTTP_REQUESTS, REJECTED_REQUESTS
from facegate.serve.models import PRINCIPAL_HEADER, EmbedModel, Runtime, VerifierModel, build_runtime, student_tag
from facegate.serve.protocol import StrictDataPlane

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


class Gatekeeper:
    """Authentication, rate limits, body-size limits and access logging, before the application sees a request.

    Args:
        app: The wrapped ASGI application.
        keys: API key store.
        limiter: Per-key rate limiter.
        max_bytes: Body limit of inference routes.
        max_admin_bytes: Body limit of admin routes (enrollment carries several photos).
    """

    def __init__(
        self, app: ASGIApp, keys: ApiKeyStore, limiter: RateLimiter, max_bytes: int, max_admin_bytes: int
    ) -> None:
        self.app, self.keys, self.limiter = app, keys, limiter
        #: Set by :func:`create_app`: the inner FastAPI app and the runtime it serves (tests and tools reach in).
        self.fastapi: FastAPI | None = None
        self.runtime: Runtime | None = None
        self.max_bytes, self.max_admin_bytes = max_bytes, max_admin_bytes
        #: Failed authentications per client address: 30 at once, then 30 a minute.
        self.failures = RateLimiter(rate_per_minute=30, burst=30)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Gate one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        kind = route_class(scope["path"])
        raw = {k.lower(): v for k, v in scope.get("headers", [])}
        rid = raw.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        status_box = [0]
        principal: Principal | None = None

        refused = [False]

        async def send_wrapped(message: Message) -> None:
            if refused[0]:
                return  # the gatekeeper already answered 413; whatever the app says after that is dropped
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        async def respond(resp: Response) -> None:
            await resp(scope, receive, send_wrapped)

        try:
            if kind == "unsupported":
                await respond(_error(404, "not supported by this server", "not_supported"))
                return
            if kind != "open":
                client = scope.get("client") or ("?", 0)
                principal = await self._authenticate(raw, kind, respond, str(client[0]))
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
            internal = (PRINCIPAL_HEADER.encode(), b"x-request-id")  # set below, never taken from the client as is
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in internal]
            if principal is not None:
                headers.append((PRINCIPAL_HEADER.encode(), f"{principal.name}:{principal.role}".encode()))
            headers.append((b"x-request-id", rid.encode("latin-1")))
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
            status = status_box[0] or 500
            HTTP_REQUESTS.labels(kind, str(status)).inc()
            access_log.info(
                "request",
                extra={"fields": {"request_id": rid, "method": scope.get("method"), "path": _log_path(scope["path"]),
                                  "status": status, "ms": round((time.perf_counter() - t0) * 1000, 2),
                                  "principal": principal.name if principal else None}},
            )  # fmt: skip

    async def _authenticate(
        self, raw: dict[bytes, bytes], kind: str, respond: Callable[[Response], Awaitable[None]], client: str
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
        # A client address that keeps presenting bad keys is slowed down before it costs a database lookup. Keys
        # that authenticated recently still pass: behind an ingress or NAT, every kiosk shares the guesser's address.
        throttled = self.failures.peek(client)
        if throttled > 0 and not self.keys.recently_valid(key):
            REJECTED_REQUESTS.labels("auth_throttled").inc()
            retry = {"Retry-After": str(max(1, int(throttled + 0.999)))}
            await respond(_error(429, "too many failed authentications", "rate_limited", retry))
            return None
        try:
            # Off the event loop: a cache miss is a database round trip.
            principal = await asyncio.get_running_loop().run_in_executor(None, self.keys.authenticate, key)
        except Exception:  # the key store (database) is down: say so, without details
            log.exception("API key lookup failed")
            await respond(_error(503, "authentication is unavailable; retry shortly", "auth_unavailable"))
            return None
        if principal is None:
            REJECTED_REQUESTS.labels("bad_key").inc()
            self.failures.acquire(client)
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


async def _metrics(request: Request) -> Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept", ""))
    return Response(content=encoder(REGISTRY), headers={"content-type": content_type})


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
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    register_v1_endpoints(app, dataplane, extension)
    register_v2_endpoints(app, dataplane, extension)
    app.include_router(_admin_router(rt, store))
    _install_error_handlers(app)
    sv = settings.serve
    gate = Gatekeeper(
        app, store, RateLimiter(sv.rate_per_minute, sv.rate_burst), sv.max_request_bytes, sv.max_admin_request_bytes
    )
    gate.fastapi, gate.runtime = app, rt
    return gate


def serve(settings: Settings, model: str | None = None) -> None:
    """Run the service with uvicorn on ``serve.host:serve.port`` until SIGINT/SIGTERM.

    Binds 127.0.0.1 by default; in a pod, set ``serve.host=0.0.0.0`` (the chart does).
    """
    import uvicorn

    rt = build_runtime(settings, model)
    app = create_app(settings, rt)
    log.info(
        "starting",
        extra={"fields": {"host": settings.serve.host, "port": settings.serve.port, "model": rt.embedder.name,
                          "model_version": rt.embedder.version, "threshold": rt.threshold}},
    )  # fmt: skip
    config = uvicorn.Config(
        app,
        host=settings.serve.host,
        port=settings.serve.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    uvicorn.Server(config).run()
