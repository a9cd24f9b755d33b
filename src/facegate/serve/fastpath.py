"""A direct route for well-formed v2 inference requests, and the timers of the stages around the model.

KServe's v2 ``infer`` endpoint goes through FastAPI: the JSON body is parsed by the standard library, validated
into a pydantic ``InferenceRequest`` (a 60 KB base64 image included), converted into an ``InferRequest``, and the
answer is validated again into an ``InferenceResponse`` and serialised through ``jsonable_encoder``. On a check-in
that framework work cost more than the comparison and the audit together.

:class:`FastInfer` sits between the gatekeeper and FastAPI. For ``POST /v2/models/{name}/infer`` it reads the body,
parses it with the strict parser the server already uses for the binary tensor extension (a JSON body is the same
layout with no binary tail), runs the model through KServe's own data plane, and writes the JSON answer with
orjson. Anything it does not handle the same way (a body that does not parse, an unknown or unready model, binary
outputs asked for, a client that went away) is *replayed* into FastAPI unchanged, so every error answer stays
the one KServe and facegate's handlers give; only the well-formed path is shorter.

**After the answer.** Bookkeeping that does not change the answer (the decision counters, the covariate counts, the
``verify`` log line) is registered with :func:`after_answer` and run once the answer is written, so the kiosk does
not wait for it; outside the direct route (or when no answer is being written) it runs at once.

Stage timers (``facegate_stage_seconds``): ``read_body``, ``parse`` and ``serialise`` here; ``auth`` in the
gatekeeper; ``decode``, ``detect``, ``align``, ``queue``, ``embed``, ``compare``, ``audit`` and ``total`` in the
models and the micro-batcher.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.requests import Request

from facegate.serve.kserve_compat import InferRequest, InvalidInput
from facegate.serve.metrics import STAGE_SECONDS, child
from facegate.serve.protocol import StrictDataPlane

__all__ = ["FastInfer", "after_answer", "observe_stage"]

log = logging.getLogger("facegate.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INFER = re.compile(r"/v2/models/([^/]+)/infer/?")
#: The stage label for a model's own timers is the served model's name, set once the runtime is built.
_MODEL_LABEL = ["model"]


#: Work this request's direct route runs once its answer is written (None: no direct route around this request).
_AFTER: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar("facegate_after", default=None)


def after_answer(work: Callable[[], None]) -> None:
    """Run ``work`` once this request's answer is written, or now when nothing defers it (see the module docstring).

    For bookkeeping only: ``work`` must not change the answer, and an error in it is logged, never answered.
    """
    pending = _AFTER.get()
    if pending is None:
        work()
    else:
        pending.append(work)


def _run_deferred(pending: list[Callable[[], None]]) -> None:
    for work in pending:
        try:
            work()
        except Exception:  # bookkeeping after the answer: the client already has it, so only the log can say
            log.exception("bookkeeping after the answer failed")
    pending.clear()


def set_stage_model(name: str) -> None:
    """Label the stage timers recorded here with the serving model's name (as the models' own timers are)."""
    _MODEL_LABEL[0] = name


def observe_stage(stage: str, seconds: float) -> None:
    """Record one stage's duration in ``facegate_stage_seconds``."""
    child(STAGE_SECONDS, stage, _MODEL_LABEL[0]).observe(seconds)


def _wants_binary_output(request: InferRequest) -> bool:
    params = request.parameters or {}
    if params.get("binary_data_output"):
        return True
    return any((o.parameters or {}).get("binary_data") for o in request.request_outputs or [])


class FastInfer:
    """The direct route for well-formed v2 inference requests (see the module docstring).

    Args:
        app: The FastAPI application (it answers everything this route hands back, and its exception handlers
            answer the errors the models raise).
        dataplane: The data plane holding the served models.
    """

    def __init__(self, app: Any, dataplane: StrictDataPlane) -> None:
        self.app, self.dataplane = app, dataplane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI request, directly when it is a well-formed v2 inference request."""
        match = _INFER.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away (or the gatekeeper cut the body off): FastAPI answers as before
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay = _replay(messages, receive)
        if messages[-1]["type"] != "http.request":
            await self.app(scope, replay, send)
            return
        body = b"".join(chunks)
        observe_stage("read_body", time.perf_counter() - t0)
        name = match.group(1)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        t1 = time.perf_counter()
        try:
            model = self.dataplane.model_registry.get_model(name)
            if model is None or not model.ready:
                raise InvalidInput("not served here")
            if headers.get("content-type", "") == "application/cloudevents+json" or any(
                k.startswith("ce-") for k in headers
            ):
                raise InvalidInput("CloudEvents: KServe's decoder and encoder answer these")
            request = self.dataplane.decode_inference_request(body, headers, name)
            if _wants_binary_output(request):
                raise InvalidInput("binary outputs: KServe's encoder answers these")
        except InvalidInput:
            await self.app(scope, replay, send)  # the canonical (error) answer, from the same bytes
            return
        observe_stage("parse", time.perf_counter() - t1)
        direct = getattr(model, "infer_v2", None)
        pending: list[Callable[[], None]] = []
        token = _AFTER.set(pending)
        try:
            await self._answer(scope, replay, send, name, model, request, headers, direct)
        finally:
            _AFTER.reset(token)
            _run_deferred(pending)  # the answer is written (or failed): now the counters and the log line

    async def _answer(
        self, scope: Scope, replay: Receive, send: Send, name: str, model: Any, request: InferRequest,
        headers: dict[str, str], direct: Any,
    ) -> None:  # fmt: skip
        """Run the model and write its answer (or the application's error answer)."""
        try:
            if direct is not None:
                # The verifier answers without KServe's Model.__call__, InferResponse and to_rest (see its infer_v2).
                result, response_headers = await direct(request, headers), {}
            else:
                response, response_headers = await self.dataplane.infer(name, request, headers)
                result, _ = self.dataplane.encode(name, response, headers, {})
                result = _response_json(result)
        except Exception as exc:
            await self._error(scope, replay, send, exc)
            return
        t2 = time.perf_counter()
        payload = orjson.dumps(result)
        observe_stage("serialise", time.perf_counter() - t2)
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers.items()
                 if k.lower() not in ("content-length", "content-type")]  # fmt: skip
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """Answer ``exc`` with the application's own exception handler for it (the most specific one)."""
        handlers = getattr(self.app, "exception_handlers", {})
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                response = await handler(Request(scope, receive), exc)
                await response(scope, receive, send)
                return
        raise exc


def _response_json(result: Any) -> Any:
    """The v2 response as FastAPI writes it from KServe's ``InferenceResponse`` model (every field, nulls too)."""
    if not isinstance(result, dict):
        return result
    outputs = [
        {
            "name": o.get("name"),
            "shape": o.get("shape"),
            "datatype": o.get("datatype"),
            "parameters": o.get("parameters"),
            "data": o.get("data"),
        }
        for o in result.get("outputs", [])
    ]
    return {
        "model_name": result.get("model_name"),
        "model_version": result.get("model_version"),
        "id": result.get("id"),
        "parameters": result.get("parameters"),
        "outputs": outputs,
    }


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives back the messages already read, then defers to the connection's own."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
