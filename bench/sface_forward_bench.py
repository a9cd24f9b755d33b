"""Per-face forward cost of SFace on every CPU runtime and precision in reach, in one process, on the same faces.

Candidates (each after a warm-up, timed over the same real LFW faces):

- ``opencv-classic-1``: the peer of ``eval_bench.py``, the packaged int8bq file on OpenCV's classic engine, one face
  per ``forward``;
- ``opencv-folded-B``: the folded graph on OpenCV's default engine in batches of B (facegate before issue 19 §2);
- ``ort-f32-B-tT``: the folded graph in ONNX Runtime, batches of B, T intra-op threads, spinning off;
- ``ov-f32-latency-B`` / ``ov-f32-throughput-B``: OpenVINO with ``INFERENCE_PRECISION_HINT=f32``, static batch B,
  the LATENCY hint (one request) or THROUGHPUT with 2 streams and async requests keeping both cores busy;
- ``ov-bf16-*``: the same with ``INFERENCE_PRECISION_HINT=bf16`` (the CPU's avx512_bf16);
- ``ort-int8-*`` / ``ov-int8-*``: int8 with VNNI, if ``--int8`` (ONNX Runtime static QDQ, OpenVINO/NNCF), calibrated
  on faces that are not in LFW (``shared/data/photos``, aligned by YuNet, with mirrored and shifted copies).

For every candidate it also reports how far its embeddings are from the f32 reference (ONNX Runtime, folded graph):
max and mean ``1 - cosine``. Prints one JSON object. Usage::

    python bench/sface_forward_bench.py            # f32 and bf16 candidates
    python bench/sface_forward_bench.py --int8     # and int8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import SHARED, emit, loadavg, require

from facegate.data.imageio import read_image
from facegate.faces.detect import SFACE_FILE, SFACE_SHA256, packaged_model_path, verify_sha256
from facegate.models.sface_fold import folded_sface


def lfw_faces(n: int) -> np.ndarray:
    root = require(SHARED / "data" / "lfw-aligned")
    files = sorted(root.rglob("*.jpg"))[:: max(1, 7701 // n)][:n]
    return np.stack([read_image(f) for f in files])


def blob(faces: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(faces.astype(np.float32).transpose(0, 3, 1, 2))


def timed(run: Callable[[np.ndarray], np.ndarray], faces: np.ndarray, batch: int, seconds: float) -> tuple[float, Any]:
    """Milliseconds per face over whole passes through ``faces`` for ``seconds`` (after one warm-up pass)."""

    def one_pass() -> np.ndarray:
        return np.concatenate([run(faces[i : i + batch]) for i in range(0, len(faces), batch)])

    out = one_pass()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        one_pass()
        n += len(faces)
        if time.perf_counter() - t0 > seconds:
            break
    CPU_MS[0] = (time.process_time() - c0) / n * 1e3
    return (time.perf_counter() - t0) / n * 1e3, out


CPU_MS = [0.0]


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_runner(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {"data": blob(x)})[0])

    return run


def ov_runner(path: Path, precision: str, hint: str, batch: int) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.input(0): ov.PartialShape([batch, 3, 112, 112])})
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint}
    if hint == "THROUGHPUT":
        config["NUM_STREAMS"] = 2
    compiled = core.compile_model(model, "CPU", config)
    if hint == "LATENCY":
        req = compiled.create_infer_request()

        def run(faces: np.ndarray) -> np.ndarray:
            x = blob(faces)
            if len(x) < batch:
                x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), np.float32)])
            return np.array(req.infer({0: x})[0][: len(faces)])

        return run
    # THROUGHPUT: an async queue with one request per stream; `run` gets a whole pass's worth of faces at a time.
    queue = ov.AsyncInferQueue(compiled, 2)

    def run_many(faces: np.ndarray) -> np.ndarray:
        out = np.empty((len(faces), 128), np.float32)

        def done(request: Any, start: int) -> None:
            n = min(batch, len(faces) - start)
            out[start : start + n] = request.get_output_tensor(0).data[:n]

        queue.set_callback(done)
        for start in range(0, len(faces), batch):
            x = blob(faces[start : start + batch])
            if len(x) < batch:
                x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), np.float32)])
            queue.start_async({0: x}, start)
        queue.wait_all()
        return out

    run_many.whole = True  # type: ignore[attr-defined]
    return run_many


def calibration_faces() -> np.ndarray:
    """Faces not in LFW: the shared photos, aligned by YuNet, plus mirrored and slightly shifted copies."""
    from facegate.errors import FacegateError
    from facegate.faces.pipeline import FaceAligner

    aligner = FaceAligner()
    faces = []
    for p in sorted((SHARED / "data" / "photos").rglob("*")):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png") or not p.is_file():
            continue
        try:
            faces.append(aligner.prepare(read_image(p), "always").face)
        except FacegateError:
            continue
    base = np.stack(faces)
    out = [base, base[:, :, ::-1]]
    for dx, dy in ((2, 0), (-2, 0), (0, 2), (0, -2)):
        out.append(np.roll(base, (dy, dx), axis=(1, 2)))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per candidate")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer candidates (one batch size per runtime)")
    args = ap.parse_args()
    faces = lfw_faces(args.faces)
    packaged = packaged_model_path(SFACE_FILE)
    verify_sha256(packaged, SFACE_SHA256)
    folded = folded_sface(packaged, SFACE_SHA256)
    assert folded is not None
    results: dict[str, dict[str, float]] = {}
    load_before = loadavg()
    sess = ort_session(folded, 2)
    ref = np.asarray(sess.run(None, {"data": blob(faces)})[0])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)

    def record(name: str, ms: float, out: np.ndarray) -> None:
        e = out / np.linalg.norm(out, axis=1, keepdims=True)
        dist = 1.0 - np.sum(e * ref[: len(e)], axis=1)  # the peer runs the first 64 faces only
        results[name] = {
            "ms_per_face": round(ms, 3),
            "cpu_ms_per_face": round(CPU_MS[0], 3),
            "max_1_minus_cos": float(dist.max()),
            "mean_1_minus_cos": float(dist.mean()),
        }
        print(name, results[name], flush=True)

    def cv_run(net: Any) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            net.setInput(cv2.dnn.blobFromImages(list(x), 1.0, (112, 112), (0, 0, 0), swapRB=False, crop=False), "data")
            return np.asarray(net.forward()).reshape(len(x), -1)

        return run

    peer = cv2.dnn.readNetFromONNX(str(packaged), engine=cv2.dnn.ENGINE_CLASSIC)
    record("opencv-classic-1 (peer)", *timed(cv_run(peer), faces[:64], 1, args.seconds))
    cvf = cv2.dnn.readNetFromONNX(str(folded))
    record("opencv-folded-64", *timed(cv_run(cvf), faces, 64, args.seconds))

    batches = (64,) if args.quick else (16, 32, 64, 128)
    for threads in (1, 2):
        s = ort_session(folded, threads)
        for b in batches:
            record(
                f"ort-f32-{b}-t{threads}",
                *timed(ort_runner(s), faces, b, args.seconds),
            )

    def ov_time(name: str, path: Path, precision: str, hint: str, b: int) -> None:
        run = ov_runner(path, precision, hint, b)
        if getattr(run, "whole", False):
            record(name, *timed(run, faces, len(faces), args.seconds))
        else:
            record(name, *timed(run, faces, b, args.seconds))

    ov_batches = (32,) if args.quick else (16, 32, 64)
    for precision in ("f32", "bf16"):
        for b in ov_batches:
            ov_time(f"ov-{precision}-latency-{b}", folded, precision, "LATENCY", b)
            ov_time(f"ov-{precision}-throughput2-{b}", folded, precision, "THROUGHPUT", b)

    if args.int8:
        calib = calibration_faces()
        with tempfile.TemporaryDirectory() as tmp:
            q = Path(tmp) / "sface-int8-qdq.onnx"
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(folded), str(pre))

            class Reader(CalibrationDataReader):  # type: ignore[misc]
                def __init__(self) -> None:
                    self.items = iter([{"data": blob(calib[i : i + 1])} for i in range(len(calib))])

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self.items, None)

            quantize_static(
                str(pre),
                str(q),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            for threads in (1, 2):
                s = ort_session(q, threads)
                record(
                    f"ort-int8-64-t{threads}",
                    *timed(ort_runner(s), faces, 64, args.seconds),
                )
            import nncf
            import onnx
            import openvino as ov
            from onnx import numpy_helper

            om = onnx.load(str(folded))
            inits = {i.name: i for i in om.graph.initializer}
            for node in list(om.graph.node):
                if node.op_type == "Reshape" and all(n in inits for n in node.input):
                    w = numpy_helper.to_array(inits[node.input[0]]).reshape(numpy_helper.to_array(inits[node.input[1]]))
                    om.graph.initializer.append(numpy_helper.from_array(w, node.output[0]))
                    om.graph.node.remove(node)
            flat = Path(tmp) / "flat.onnx"
            onnx.save(om, str(flat))
            model = ov.Core().read_model(str(flat))
            model.reshape({model.input(0): ov.PartialShape([-1, 3, 112, 112])})
            qm = nncf.quantize(
                model,
                nncf.Dataset([blob(calib[i : i + 1]) for i in range(len(calib))]),
                subset_size=len(calib),
                preset=nncf.QuantizationPreset.PERFORMANCE,
            )
            xml = Path(tmp) / "nncf.xml"
            ov.save_model(qm, str(xml), compress_to_fp16=False)
            for b in (32,):
                ov_time(f"ov-int8-latency-{b}", xml, "f32", "LATENCY", b)
                ov_time(f"ov-int8-throughput2-{b}", xml, "f32", "THROUGHPUT", b)
            results["_calibration_faces"] = {"n": float(len(calib))}
    emit(
        {
            "benchmark": "SFace forward per face",
            "faces": len(faces),
            "results": results,
            "threads_env": os.environ.get("OMP_NUM_THREADS"),
        },
        load_before,
    )


if __name__ == "__main__":
    main()
