"""The verifier and embedder as KServe models (``preprocess -> predict -> postprocess``).

``verifier`` (v2 ``/v2/models/verifier/infer`` and v1 ``/v1/models/verifier:predict``) takes one check-in: inputs
``image`` (BYTES: a JPEG/PNG; base64 text in JSON) and ``student_id`` (BYTES), and answers ``decision``
(``accept``/``reject``/``retry``), ``score``, ``threshold``, ``model_version``, ``reason`` and ``message``.

- ``preprocess`` decodes under the request limits and detects, selects and aligns the face with the *same*
  functions evaluation uses (:func:`facegate.data.imageio.decode_image`, :class:`facegate.faces.FaceAligner`), with
  the kiosk policy: a second large face means ``retry/multiple_faces``, a small or blurry face ``retry/low_quality``.
- ``predict`` embeds through the micro-batcher (OpenVINO for exported bundles).
- ``postprocess`` compares with the student's template *for this model version* using the threshold shipped with
  the model, so a canary of a new model decides with its own threshold; every decision goes to the audit log.

A student without a template for the serving model version gets 404 ``unknown_student`` (audited as a reject).
``embed`` maps images (``image`` BYTES ``[N]``; photos are aligned, 112x112 images taken as aligned) to
``embedding`` FP32 ``[N, D]`` for batch work.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from facegate.bundles import load_embedder
from facegate.config import Settings
from facegate.data.imageio import SERVE_FORMATS, ImageLimits, PixelBudget, decode_image, decoded_pixels
from facegate.errors import FaceError, FacegateError, ImageError
from facegate.faces.detect import YuNetDetector
from facegate.faces.liveness import LivenessChecker, liveness_from_settings
from facegate.faces.pipeline import (
    AlignMode,
    FaceAligner,
    FaceCrop,
    aligner_from_settings,
    limits_from_settings,
)
from facegate.models.base import Embedder
from facegate.serve import covariate_metrics
from facegate.serve.batching import MicroBatcher
from facegate.serve.decisions import DecisionLog
from facegate.serve.fastpath import after_answer, set_stage_model
from facegate.serve.gallery import Gallery, check_student_id
from facegate.serve.http_edges import adopt_request_id
from facegate.serve.kserve_compat import InferOutput, InferRequest, InferResponse, Model, latency_histograms
from facegate.serve.metrics import DECISIONS, SCORES, STAGE_SECONDS, child
from facegate.serve.opsmetrics import MATCH_SCORE, count_checkin
from facegate.serve.protocol import BadRequestError, bytes_values, element_bytes
from facegate.serve.workers import SerialEmbedder, bulk_executor

__all__ = [
    "PRINCIPAL_HEADER",
    "EmbedModel",
    "Runtime",
    "UnknownStudentError",
    "VerifierModel",
    "build_runtime",
    "plain_request_id",
    "serve_aligner",
]

log = logging.getLogger("facegate.serve")

#: Set by the gatekeeper middleware after authentication (any client-sent value is stripped first).
PRINCIPAL_HEADER = "x-facegate-principal"
MAX_EMBED_IMAGES = 64
LOW_QUALITY = {"face_too_small", "blurry"}
#: ``detector.max_side`` 0 (no downscaling) as a retry side: larger than any decodable image side.
RETRY_UNBOUNDED = 1 << 30


class UnknownStudentError(FacegateError):
    """No template for this student and model version."""

    code = "unknown_student"


class _TagKey:
    """The secret that keys :func:`student_tag` (set from the gallery key ring when a runtime is built)."""

    value: bytes | None = None


def set_student_tag_key(key: bytes) -> None:
    """Key the student tags in log lines (every replica with the same gallery keys writes the same tags)."""
    _TagKey.value = key


def student_tag(student_id: str) -> str:
    """A keyed digest of a student id for log lines (the audit table holds the id itself).

    Keyed (HMAC), not a plain hash: student ids are few and guessable, so a plain digest could be reversed by
    hashing every id. Without a configured key, a random one for this process is used.
    """
    if _TagKey.value is None:
        _TagKey.value = secrets.token_bytes(32)
    data = student_id.encode("utf-8", "surrogatepass")
    return hmac.new(_TagKey.value, data, hashlib.sha256).hexdigest()[:16]


@dataclass
class Runtime:
    """What the served models share: settings, the embedder and its batcher, the gallery and worker threads.

    Attributes:
        settings: Resolved settings.
        embedder: The serving model.
        threshold: Decision threshold (the bundle's own unless ``verify.threshold`` overrides it).
        gallery: The enrollment gallery.
        batcher: Micro-batcher in front of the embedder.
        limits: Image limits for requests.
        executor: Threads for decoding, detection and database work.
        bulk: Threads for ``embed`` requests' images, at a lower OS priority, so a batch job (or a key flooding
            heavy requests) yields the CPU to kiosks' verifications.
    """

    settings: Settings
    embedder: Embedder
    threshold: float
    gallery: Gallery
    batcher: MicroBatcher
    limits: ImageLimits
    executor: ThreadPoolExecutor
    liveness: LivenessChecker | None = None
    #: Decision rows' writer (:mod:`facegate.serve.decisions`); ``None``: written on the preprocess threads.
    decisions: DecisionLog | None = None
    bulk: ThreadPoolExecutor = field(default_factory=lambda: bulk_executor(2))
    _local: threading.local = field(default_factory=threading.local)

    def aligner(self) -> FaceAligner:
        """This thread's aligner: OpenCV's detector keeps per-call state and must not be shared by threads."""
        al: FaceAligner | None = getattr(self._local, "aligner", None)
        if al is None:
            al = serve_aligner(self.settings)
            self._local.aligner = al
        return al

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run blocking work on the runtime's threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run_bulk(self, fn: Any, *args: Any) -> Any:
        """Run blocking bulk work (``embed`` images) on the low-priority threads."""
        return await asyncio.get_running_loop().run_in_executor(self.bulk, fn, *args)

    def close(self) -> None:
        """Stop worker threads and release the database."""
        self.batcher.close()
        if self.decisions is not None:
            self.decisions.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.bulk.shutdown(wait=False, cancel_futures=True)
        self.gallery.engine.dispose()


def serve_aligner(settings: Settings) -> FaceAligner:
    """The server's aligner: the kiosk policy (a second large face is refused), detecting at ``serve.detect_max_side``.

    Detection runs on the image downscaled to that side when it is larger (``detector.max_side`` when smaller or
    ``serve.detect_max_side`` is 0), and again at ``detector.max_side`` when nothing was found; the landmarks are
    mapped back and the face is aligned from the full image.
    """
    det, side = settings.detector, settings.serve.detect_max_side
    aligner = aligner_from_settings(settings, multiple="reject")
    if side and (det.max_side == 0 or side < det.max_side) and isinstance(aligner.detector, YuNetDetector):
        aligner.detector.max_side, aligner.detector.retry_side = side, det.max_side or RETRY_UNBOUNDED
    return aligner


def set_opencv_threads(threads: int) -> None:
    """OpenCV's threads per call, process-wide (0 leaves OpenCV's default); see ``serve.opencv_threads``."""
    if threads:
        import cv2

        cv2.setNumThreads(threads)


def build_runtime(settings: Settings, model: str | None = None, gallery: Gallery | None = None) -> Runtime:
    """Load the model and open the gallery for serving.

    Args:
        settings: Resolved settings (``serve.*``, ``limits.*``, ``face.*``, ``detector.*``, ``verify.threshold``).
        model: Registered name or bundle directory (``settings.model`` when omitted).
        gallery: An open gallery (opened from ``settings.gallery_url()`` when omitted).
    """
    set_opencv_threads(settings.serve.opencv_threads)  # before any detector runs
    embedder = SerialEmbedder(load_embedder(model or settings.model))
    gallery = gallery or Gallery(settings.gallery_url())
    set_student_tag_key(gallery.keys.derive("log-student-tags"))
    set_stage_model(embedder.name)
    threshold = settings.verify.threshold if settings.verify.threshold is not None else embedder.default_threshold
    sv = settings.serve
    base = limits_from_settings(settings)
    limits = replace(
        base,
        max_bytes=min(base.max_bytes, sv.max_admin_request_bytes),
        max_pixels=min(base.max_pixels, sv.max_verify_pixels),
        formats=SERVE_FORMATS,  # kiosks send JPEG or PNG: no other decoder is reachable from the network
        max_side=sv.max_decode_side,
    )
    return Runtime(
        settings=settings,
        embedder=embedder,
        threshold=float(threshold),
        gallery=gallery,
        batcher=MicroBatcher(embedder, max_batch=sv.max_batch, max_wait_s=sv.batch_wait_ms / 1000.0),
        limits=limits,
        executor=ThreadPoolExecutor(max_workers=sv.preprocess_threads, thread_name_prefix="facegate-pre"),
        liveness=liveness_from_settings(settings),
        decisions=None if gallery.engine.url.database in (None, "", ":memory:") else DecisionLog(gallery),
        bulk=bulk_executor(max(1, sv.preprocess_threads // 2)),
    )


def _principal(headers: dict[str, str] | None) -> str:
    value = (headers or {}).get(PRINCIPAL_HEADER, "")
    return value.partition(":")[0] or "unauthenticated"


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def plain_request_id(value: str | None) -> str | None:
    """``value`` when it is a plain token of at most 128 characters (safe to echo and log), else ``None``."""
    return value if value and _REQUEST_ID.fullmatch(value) else None


def _request_id(payload: Any, headers: dict[str, str] | None) -> str:
    """The client's request id when it is a plain token, else a fresh one: it is echoed and written to logs.

    A valid v2 body ``id`` wins over ``x-request-id`` and becomes the request's one id (header, logs, audit).
    """
    body_id = plain_request_id(payload.id if isinstance(payload, InferRequest) else None)
    if body_id is not None:
        adopt_request_id(body_id)
    return body_id or plain_request_id((headers or {}).get("x-request-id")) or uuid.uuid4().hex


def _decision(score: float, threshold: float) -> tuple[str, str]:
    """``(decision, reason)`` of a compared check-in."""
    return ("accept", "match") if score >= threshold else ("reject", "mismatch")


@dataclass
class _Check:
    """One check-in moving through the stages."""

    protocol: str
    request_id: str
    kiosk: str
    student_id: str
    template: np.ndarray
    started: float
    face: np.ndarray | None = None
    embedding: np.ndarray | None = None
    reason: str | None = None
    message: str = ""
    bins: dict[str, str] = field(default_factory=dict)  # image-covariate bins (facegate.serve.covariate_metrics)
    #: Set when the check-in was decided and its audit row committed on the worker thread (:meth:`_settle_here`).
    settled: _Settled | None = None


@dataclass
class _Settled:
    """A lone check-in decided where it was embedded: its score and, once committed, its audit row's outcome."""

    score: float
    audit_s: float
    error: BaseException | None = None  # the audit write's failure, raised on the event loop as before


class _FacegateModel(Model):  # type: ignore[misc]
    """Shared parts: readiness from the runtime, and no KServe-side payload validation (ours is stricter)."""

    def __init__(self, name: str, runtime: Runtime) -> None:
        super().__init__(name)
        self.runtime = runtime

    def load(self) -> bool:
        """Warm the model up (one forward pass) so the first kiosk does not pay for lazy initialisation."""
        self.runtime.embedder.embed(np.zeros((1, 112, 112, 3), dtype=np.uint8))
        self.ready = True
        return True

    def validate(self, payload: Any) -> Any:
        return payload

    def _image(self, data: bytes, name: str, budget: PixelBudget | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        image = decode_image(data, limits=self.runtime.limits, name=name, budget=budget)
        child(STAGE_SECONDS, "decode", self.runtime.embedder.name).observe(time.perf_counter() - t0)
        return image

    def _align(self, image: np.ndarray, mode: AlignMode) -> np.ndarray:
        return self._crop(image, mode).face

    def _crop(self, image: np.ndarray, mode: AlignMode) -> FaceCrop:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            return self.runtime.aligner().prepare(image, mode, timings)
        finally:
            name, detect = self.runtime.embedder.name, timings.get("detect", 0.0)
            child(STAGE_SECONDS, "detect", name).observe(detect)
            child(STAGE_SECONDS, "align", name).observe(time.perf_counter() - t0 - detect)


def _inputs(payload: Any, names: tuple[str, ...]) -> tuple[str, dict[str, list[bytes]]]:
    """``(protocol, {name: [bytes, ...]})`` from a v2 InferRequest or a v1 ``{"instances": [...]}`` body."""
    if isinstance(payload, InferRequest):
        seen = [i.name for i in payload.inputs]
        dupes = sorted({n for n in seen if seen.count(n) > 1})
        if dupes:
            # Two inputs of one name would leave the request ambiguous (which student_id?): refuse, never pick.
            raise BadRequestError(f"input(s) {dupes} given more than once", code="duplicate_input")
        by_name = {i.name: i for i in payload.inputs}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise BadRequestError(f"missing input(s) {missing}; expected {list(names)}", code="missing_input")
        extra = sorted(set(by_name) - set(names))
        if extra:
            raise BadRequestError(f"unexpected input(s) {extra}; expected {list(names)}", code="unexpected_input")
        return "v2", {n: bytes_values(by_name[n], base64_text=(n == "image")) for n in names}
    if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
        out: dict[str, list[bytes]] = {n: [] for n in names}
        for inst in payload["instances"]:
            if not isinstance(inst, dict):
                raise BadRequestError("each instance must be an object", code="bad_input")
            for n in names:
                value = inst.get(n)
                if n == "image" and isinstance(value, dict):
                    value = value.get("b64")
                if not isinstance(value, str):
                    raise BadRequestError(f"instance field {n!r} must be a string", code="missing_input")
                out[n].append(element_bytes(value, n, base64_text=(n == "image")))
        return "v1", out
    raise BadRequestError('expected a v2 inference request or a v1 {"instances": [...]} body', code="bad_request")


class VerifierModel(_FacegateModel):
    """1:1 verification of a check-in photo against the student's enrolled template."""

    def load(self) -> bool:
        """Warm up at the served sizes (:mod:`facegate.serve.warmup`) before reporting ready."""
        if self.runtime.settings.serve.warmup:
            from facegate.serve.warmup import warm_up

            warm_up(self.runtime)
        return super().load()

    def get_input_types(self) -> list[dict[str, Any]]:
        """The inputs, as model metadata declares them (Triton clients discover the model from this)."""
        return [
            {"name": "image", "datatype": "BYTES", "shape": [1]},
            {"name": "student_id", "datatype": "BYTES", "shape": [1]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The outputs, as model metadata declares them."""
        texts = ("decision", "model_version", "reason", "message")
        return [{"name": n, "datatype": "BYTES", "shape": [1]} for n in texts] + [
            {"name": n, "datatype": "FP32", "shape": [1]} for n in ("score", "threshold")
        ]

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _Check:
        """Parse, look the template up, decode and align (a face problem becomes a ``retry`` decision)."""
        started = time.perf_counter()
        protocol, values = _inputs(payload, ("image", "student_id"))
        if len(values["image"]) != 1 or len(values["student_id"]) != 1:
            raise BadRequestError(
                "the verifier takes exactly one image and one student_id per request", code="bad_shape"
            )
        try:
            student_id = check_student_id(values["student_id"][0].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequestError("student_id must be UTF-8 text", code="bad_student_id") from None
        rt = self.runtime
        version = rt.embedder.version
        kiosk, rid = _principal(headers), _request_id(payload, headers)
        # The image is decoded and its face looked for *before* the template lookup, so a bad image gets the same
        # answer, after the same work, whether or not the student is enrolled: no cheap enrollment oracle.
        # One hand-off to a worker thread for all of it (each hand-off is a wake-up of two threads): the batcher
        # counts this check-in as coming, so a batch being formed waits for it and a lone one does not wait.
        with rt.batcher.coming():
            face, embedding, reason, message, template, bins, settled = await rt.run(
                self._prepare, values["image"][0], student_id, version, kiosk, rid
            )
        if template is None:
            child(DECISIONS, "reject", "unknown_student", version).inc()
            count_checkin(kiosk, "reject")
            await self._record(kiosk, student_id, "reject", None, "unknown_student", rid)
            log.info(
                "verify",
                extra={"fields": {"request_id": rid, "kiosk": kiosk, "student": student_tag(student_id),
                                  "decision": "reject", "reason": "unknown_student", "model_version": version}},
            )  # fmt: skip
            raise UnknownStudentError(f"no enrolled template for this student and model version {version}")
        return _Check(
            protocol, rid, kiosk, student_id, template, started, face, embedding, reason=reason, message=message,
            bins=bins, settled=settled,
        )  # fmt: skip

    def _prepare(
        self, data: bytes, student_id: str, version: str, kiosk: str, request_id: str
    ) -> tuple[
        np.ndarray | None, np.ndarray | None, str | None, str, np.ndarray | None, dict[str, str], _Settled | None
    ]:
        """Decode, detect, align, check liveness, embed when this check-in is alone, then look the template up.

        A lone check-in (no other on its way, no batch forming or running) is embedded here, on the thread that
        aligned it (:meth:`MicroBatcher.embed_here`), then compared and its audit row committed here too
        (:meth:`_settle_here`); otherwise ``predict`` sends it through the micro-batcher and ``postprocess`` hands
        its row to the audit writer (group commit).

        Returns:
            ``(face, embedding, reason, message, template, bins, settled)``: ``embedding`` is ``None`` when the face
            is left for the batcher; ``bins`` are the photo's covariate bins for the serving counters
            (:mod:`facegate.serve.covariate_metrics`); ``settled`` is set when the decision was made and recorded.
        """
        rt = self.runtime
        image = self._image(data, "image", PixelBudget(rt.settings.serve.max_request_pixels))
        face: np.ndarray | None = None
        reason, message = None, ""
        crop = None
        try:
            crop = self._crop(image, "always")
            face = crop.face
            checked = rt.liveness is not None and crop.detection is not None
            if checked and not self._live(rt.liveness, image, crop.detection.box):  # type: ignore[arg-type,union-attr]
                face, reason, message = None, "presentation_attack", "the liveness check did not pass"
        except FaceError as exc:
            reason = "low_quality" if exc.code in LOW_QUALITY else exc.code
            message = exc.message
        bins = covariate_metrics.measure_request(image, crop)
        del image
        # The template is looked up before the embedding, and the face is embedded whether or not there is one (no
        # timing oracle). Before, not after: right after a forward pass the lookup measured 0.4 ms in the server's
        # timeline against 0.1-0.2 ms on its own (docs/performance-serving.md); the order costs nothing.
        template = rt.gallery.template(student_id, version)
        embedding = rt.batcher.embed_here(face[None])[0] if face is not None and rt.batcher.alone() else None
        settled = None
        if embedding is not None and template is not None:
            settled = self._settle_here(embedding, template, kiosk, student_id, request_id)
        return face, embedding, reason, message, template, bins, settled

    def _settle_here(
        self, embedding: np.ndarray, template: np.ndarray, kiosk: str, student_id: str, request_id: str
    ) -> _Settled:
        """Compare and commit the audit row on this worker thread, for a check-in embedded alone.

        The row is committed before the answer exactly as on the event loop's path (the commit returns before this
        does); what is saved is a round trip: the event loop handing the row to the audit writer thread and waiting
        to be woken when it is committed (two thread wake-ups, 0.3-0.9 ms on a busy 2-core machine, measured in
        docs/performance-serving.md). Concurrent check-ins still go through the writer's group commit.
        """
        rt = self.runtime
        t0 = time.perf_counter()
        score = float(np.dot(embedding, template))
        t1 = time.perf_counter()
        child(STAGE_SECONDS, "compare", rt.embedder.name).observe(t1 - t0)
        decision, reason = _decision(score, rt.threshold)
        error: BaseException | None = None
        try:
            if rt.decisions is None:
                self._audit(kiosk, student_id, decision, score, reason, request_id)
            else:
                rt.decisions.write_here(
                    kiosk=kiosk, student_id=student_id, decision=decision, score=score,
                    model_version=rt.embedder.version, reason=reason, request_id=request_id,
                )  # fmt: skip
        except Exception as exc:  # answered on the event loop, after the decision is counted, as before
            error = exc
        return _Settled(score, time.perf_counter() - t1, error)

    def _live(self, checker: LivenessChecker, image: np.ndarray, box: tuple[float, float, float, float]) -> bool:
        t0 = time.perf_counter()
        try:
            return checker.is_live(image, box)
        finally:
            child(STAGE_SECONDS, "liveness", self.runtime.embedder.name).observe(time.perf_counter() - t0)

    async def predict(self, check: _Check, headers: dict[str, str] | None = None) -> _Check:
        """Embed the aligned face through the micro-batcher (unless it was embedded alone, in ``preprocess``)."""
        if check.face is not None and check.embedding is None:
            check.embedding = (await self.runtime.batcher.embed(check.face[None]))[0]
        return check

    async def postprocess(self, check: _Check, headers: dict[str, str] | None = None) -> Any:
        """Compare, decide, audit, and answer in the request's protocol."""
        texts, numbers = await self._conclude(check)
        if check.protocol == "v1":
            return {"predictions": [{**texts, **numbers}]}
        outputs = [InferOutput(name=k, shape=[1], datatype="BYTES", data=[v]) for k, v in texts.items()]
        outputs += [InferOutput(name=k, shape=[1], datatype="FP32", data=[float(v)]) for k, v in numbers.items()]
        return InferResponse(response_id=check.request_id, model_name=self.name, infer_outputs=outputs)

    async def infer_v2(self, request: InferRequest, headers: dict[str, str]) -> dict[str, Any]:
        """One v2 check-in answered as the JSON object KServe's route writes, without KServe's wrapper objects.

        The direct route (:mod:`facegate.serve.fastpath`) calls this for well-formed v2 JSON requests: the same
        ``preprocess -> predict -> postprocess`` work and errors, with KServe's own latency histograms kept, but no
        ``InferOutput``/``InferResponse`` objects and no ``to_rest`` (a quarter of the event loop's Python per
        check-in). The answer is field for field what ``InferResponse.to_rest`` gives: FP32 outputs go through
        float32 as KServe's encoder sends them; a test compares both routes.
        """
        labels = latency_histograms(self.name)
        t0 = time.perf_counter()
        check = await self.preprocess(request, headers)
        t1 = time.perf_counter()
        labels[0].observe(t1 - t0)
        check = await self.predict(check, headers)
        t2 = time.perf_counter()
        labels[1].observe(t2 - t1)
        texts, numbers = await self._conclude(check)
        labels[2].observe(time.perf_counter() - t2)
        outputs: list[dict[str, Any]] = [
            {"name": k, "shape": [1], "datatype": "BYTES", "parameters": None, "data": [v]} for k, v in texts.items()
        ]
        outputs += [{"name": k, "shape": [1], "datatype": "FP32", "parameters": None,
                     "data": [float(np.float32(v))]} for k, v in numbers.items()]  # fmt: skip
        return {"model_name": self.name, "model_version": None, "id": check.request_id, "parameters": None,
                "outputs": outputs}  # fmt: skip

    async def _conclude(self, check: _Check) -> tuple[dict[str, str], dict[str, float]]:
        """Compare (unless done on the worker thread), count, audit (likewise), log: the answer's fields."""
        rt = self.runtime
        version, threshold = rt.embedder.version, rt.threshold
        score: float | None = None
        settled = check.settled
        if check.embedding is None:
            # A presentation attack is for a proctor to see, not something to try again.
            decision = "reject" if check.reason == "presentation_attack" else "retry"
            reason = check.reason or "no_face"
        else:
            if settled is not None:
                score = settled.score
            else:
                t0 = time.perf_counter()
                score = float(np.dot(check.embedding, check.template))
                child(STAGE_SECONDS, "compare", rt.embedder.name).observe(time.perf_counter() - t0)
            decision, reason = _decision(score, threshold)
            check.message = f"score {score:.3f} {'>=' if decision == 'accept' else '<'} threshold {threshold:.3f}"

        def count() -> None:
            if score is not None:
                child(SCORES, version).observe(score)
                child(MATCH_SCORE, version).observe(score)
            child(DECISIONS, decision, reason, version).inc()
            count_checkin(check.kiosk, decision)
            covariate_metrics.record(check.bins, decision, reason)

        if settled is not None:
            if settled.error is not None:
                count()  # the decision was made: counted before the failed write is answered, as it always was
                raise settled.error
            audit_s = settled.audit_s
        else:
            t0 = time.perf_counter()
            try:
                await self._record(check.kiosk, check.student_id, decision, score, reason, check.request_id)
            except BaseException:
                count()
                raise
            audit_s = time.perf_counter() - t0
        total_s = time.perf_counter() - check.started

        def bookkeeping() -> None:
            count()
            child(STAGE_SECONDS, "audit", rt.embedder.name).observe(audit_s)
            child(STAGE_SECONDS, "total", rt.embedder.name).observe(total_s)
            log.info(
                "verify",
                extra={"fields": {"request_id": check.request_id, "kiosk": check.kiosk,
                                  "student": student_tag(check.student_id), "decision": decision, "reason": reason,
                                  "score": None if score is None else round(score, 4), "model_version": version}},
            )  # fmt: skip

        # The audit row is committed; nothing left changes the answer, so the kiosk need not wait for it.
        after_answer(bookkeeping)
        numbers = {"score": -1.0 if score is None else score, "threshold": threshold}
        texts = {"decision": decision, "model_version": version, "reason": reason, "message": check.message}
        return texts, numbers

    async def _record(
        self, kiosk: str, student_id: str, decision: str, score: float | None, reason: str, request_id: str
    ) -> None:
        """The decision's audit row, committed before the answer is sent (see :mod:`facegate.serve.decisions`)."""
        rt = self.runtime
        if rt.decisions is None:
            await rt.run(self._audit, kiosk, student_id, decision, score, reason, request_id)
            return
        await rt.decisions.write(
            kiosk=kiosk,
            student_id=student_id,
            decision=decision,
            score=score,
            model_version=rt.embedder.version,
            reason=reason,
            request_id=request_id,
        )

    def _audit(
        self, kiosk: str, student_id: str, decision: str, score: float | None, reason: str, request_id: str
    ) -> None:
        self.runtime.gallery.record_decision(
            kiosk=kiosk,
            student_id=student_id,
            decision=decision,
            score=score,
            model_version=self.runtime.embedder.version,
            reason=reason,
            request_id=request_id,
        )


@dataclass
class _Batch:
    protocol: str
    request_id: str
    faces: np.ndarray
    embeddings: np.ndarray | None = None


class EmbedModel(_FacegateModel):
    """Images in, unit-norm embeddings out (batch enrollment, offline evaluation, gallery tooling)."""

    def get_input_types(self) -> list[dict[str, Any]]:
        """The inputs, as model metadata declares them (``-1``: 1 to 64 images)."""
        return [{"name": "image", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The outputs, as model metadata declares them."""
        return [
            {"name": "embedding", "datatype": "FP32", "shape": [-1, self.runtime.embedder.embedding_size]},
            {"name": "model_version", "datatype": "BYTES", "shape": [1]},
        ]

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _Batch:
        """Decode and align every image (any failure names the image's index)."""
        protocol, values = _inputs(payload, ("image",))
        images = values["image"]
        if not 1 <= len(images) <= MAX_EMBED_IMAGES:
            raise BadRequestError(f"embed takes 1-{MAX_EMBED_IMAGES} images per request", code="bad_shape")

        budget = PixelBudget(self.runtime.settings.serve.max_request_pixels)

        def prepare_all() -> np.ndarray:
            # One thread, stopping at the first bad image: a 64-image request must not occupy every preprocess
            # thread that kiosks' verifications need. The pixel budget bounds the work one request can ask for,
            # checked from the headers of all images before the first is decoded.
            wanted = sum(decoded_pixels(data, limits=self.runtime.limits) for data in images)
            if wanted > budget.total:
                raise ImageError(
                    f"the images would decode to {wanted} pixels, over this request's {budget.total}-pixel budget",
                    code="too_many_pixels",
                )
            faces = []
            for i, data in enumerate(images):
                try:
                    faces.append(self._align(self._image(data, f"image {i}", budget), "auto"))
                except FacegateError as exc:
                    raise type(exc)(f"image {i}: {exc.message}", code=exc.code) from None
            return np.stack(faces)

        faces = await self.runtime.run_bulk(prepare_all)
        return _Batch(protocol, _request_id(payload, headers), faces)

    async def predict(self, batch: _Batch, headers: dict[str, str] | None = None) -> _Batch:
        """Embed the faces through the micro-batcher."""
        batch.embeddings = await self.runtime.batcher.embed(batch.faces)
        return batch

    async def postprocess(self, batch: _Batch, headers: dict[str, str] | None = None) -> Any:
        """Embeddings and the model version in the request's protocol."""
        assert batch.embeddings is not None
        version = self.runtime.embedder.version
        if batch.protocol == "v1":
            return {"predictions": batch.embeddings.tolist(), "model_version": version}
        emb = InferOutput(name="embedding", shape=list(batch.embeddings.shape), datatype="FP32")
        emb.set_data_from_numpy(batch.embeddings.astype(np.float32), binary_data=False)
        ver = InferOutput(name="model_version", shape=[1], datatype="BYTES", data=[version])
        return InferResponse(response_id=batch.request_id, model_name=self.name, infer_outputs=[emb, ver])
