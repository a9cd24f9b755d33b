"""How close SFace's f32 forward pass on OpenVINO is to what this CPU can do: peak, per-layer, end to end.

- **peak**: a 1024x1024x1024 f32 ``MatMul`` on OpenVINO (oneDNN), one thread and two: the most f32 FLOP/s these
  cores deliver to a dense kernel;
- **SFace's work**: multiply-adds per face counted from the folded ONNX graph, by layer kind (3x3 stem, depthwise
  3x3, pointwise 1x1, the 50,176-input fully connected layer);
- **per layer**: OpenVINO's own per-layer timings (``PERF_COUNT``) at one stream, one thread, ``--part`` faces per
  request (facegate's part size), summed by kernel, with each kind's FLOP/s;
- **end to end**: ``SFaceEmbedder.embed_stream`` as evaluation runs it (two streams, parts of 4, batches of 64) on
  real LFW faces: ms per face on both cores, and that times 7,701 faces (the LFW protocol's unique images).

Prints one JSON object. Usage::

    python bench/sface_roofline.py            # parts of 4, 512 LFW faces
    python bench/sface_roofline.py --part 16
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import SHARED, emit, loadavg, require

from facegate.data.imageio import read_image
from facegate.models import create_embedder

LFW_UNIQUE_FACES = 7701


def gemm_peak(threads: int, seconds: float = 2.0) -> float:
    """GFLOP/s of a 1024^3 f32 MatMul on OpenVINO with ``threads`` threads (one stream)."""
    import openvino as ov
    import openvino.opset13 as ops

    n = 1024
    rng = np.random.default_rng(0)
    p = ops.parameter([n, n], np.float32)
    model = ov.Model([ops.matmul(p, ops.constant(rng.random((n, n), np.float32)), False, False)], [p])
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    req = ov.Core().compile_model(model, "CPU", cfg).create_infer_request()
    x = rng.random((n, n), np.float32)
    req.infer({0: x})
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        req.infer({0: x})
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - t0) / 1e9


def layer_macs(graph: Path) -> dict[str, int]:
    """Multiply-adds per face by layer kind, from the ONNX graph (weights behind ``Reshape`` nodes resolved)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(graph)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Reshape" and node.input[0] in consts and node.input[1] in consts:
            consts[node.output[0]] = consts[node.input[0]].reshape(consts[node.input[1]])
    macs: dict[str, int] = collections.Counter()
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = consts[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out = shapes[node.output[0]]
            kind = "depthwise_3x3" if group > 1 else ("pointwise_1x1" if w.shape[2:] == (1, 1) else "stem_3x3")
            macs[kind] += int(np.prod(out[1:])) * int(np.prod(w.shape[1:]))
        elif node.op_type == "Gemm":
            macs["fully_connected"] += int(consts[node.input[1]].size)
    return dict(macs)


# OpenVINO's kernels (exec type prefix) for each layer kind of SFace.
KERNEL_KIND = {
    "brgconv_avx512_1x1": "pointwise_1x1",
    "brgconv_avx512_dw": "depthwise_3x3",
    "brgconv_avx512_f32": "stem_3x3",
    "gemm_mlas": "fully_connected",
}


def per_layer(graph: Path, part: int, faces: np.ndarray, runs: int = 30) -> dict[str, Any]:
    """OpenVINO's per-layer times at one stream and one thread, ``part`` faces per request, ms per face by kind."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(graph))
    model.reshape({0: [part, 3, 112, 112]})
    cfg = {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 1,
        "NUM_STREAMS": 1,
        "PERF_COUNT": True,
    }
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    x = np.ascontiguousarray(faces[:part].transpose(0, 3, 1, 2), dtype=np.float32)
    for _ in range(5):
        req.infer({0: x})
    by_kind: dict[str, float] = collections.defaultdict(float)
    t0 = time.perf_counter()
    for _ in range(runs):
        req.infer({0: x})
        for p in req.profiling_info:
            kind = next((k for pre, k in KERNEL_KIND.items() if p.exec_type.startswith(pre)), "other")
            by_kind[kind] += p.real_time.total_seconds()
    wall = (time.perf_counter() - t0) / runs / part
    return {
        "ms_per_face_one_core": wall * 1e3,
        "ms_per_face_by_kind": {k: v / runs / part * 1e3 for k, v in by_kind.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", type=int, default=4, help="faces per infer request for the per-layer profile")
    ap.add_argument("--faces", type=int, default=512, help="LFW faces for the end-to-end pass")
    args = ap.parse_args()
    load_before = loadavg()
    root = require(SHARED / "data" / "lfw-aligned")
    files = sorted(root.rglob("*.jpg"))[:: max(1, LFW_UNIQUE_FACES // args.faces)][: args.faces]
    faces = np.stack([read_image(f) for f in files])

    sface = create_embedder("sface")
    sface.prepare()
    graph = sface._graph()  # type: ignore[attr-defined]
    macs = layer_macs(graph)
    flop = 2 * sum(macs.values())
    peak1, peak2 = gemm_peak(1), gemm_peak(2)
    layers = per_layer(graph, args.part, faces)
    kinds = {
        k: {
            "mflop_per_face": round(2 * macs.get(k, 0) / 1e6, 1),
            "ms_per_face_one_core": round(ms, 3),
            "gflops_per_core": round(2 * macs[k] / ms / 1e6, 1) if k in macs and ms else None,
        }
        for k, ms in sorted(layers["ms_per_face_by_kind"].items(), key=lambda kv: -kv[1])
        if k in macs or ms > 1e-3
    }

    batches = [(i, faces[i : i + 64]) for i in range(0, len(faces), 64)]
    list(sface.embed_stream(iter(batches)))  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    passes = 0
    while passes < 3 or time.perf_counter() - t0 < 6:
        list(sface.embed_stream(iter(batches)))
        passes += 1
    ms_face = (time.perf_counter() - t0) / (passes * len(faces)) * 1e3
    cpu_ms_face = (time.process_time() - c0) / (passes * len(faces)) * 1e3
    one_core = layers["ms_per_face_one_core"]
    emit(
        {
            "benchmark": "SFace f32 on OpenVINO against this CPU's f32 peak",
            "gemm_peak_gflops": {"one_thread": round(peak1, 1), "two_threads": round(peak2, 1)},
            "sface_gflop_per_face": round(flop / 1e9, 3),
            "sface_mmac_by_kind": {k: round(v / 1e6, 1) for k, v in macs.items()},
            "per_layer_part": args.part,
            "one_core": {
                "ms_per_face": round(one_core, 3),
                "gflops": round(flop / one_core / 1e6, 1),
                "fraction_of_gemm_peak": round(flop / one_core / 1e6 / peak1, 3),
                "ms_per_face_at_gemm_peak": round(flop / peak1 / 1e6, 3),
            },
            "by_kind": kinds,
            "two_streams_embed_stream": {
                "faces": len(faces),
                "ms_per_face": round(ms_face, 3),
                "cpu_ms_per_face": round(cpu_ms_face, 3),
                "gflops_per_core": round(flop / cpu_ms_face / 1e6, 1),
                "seconds_for_7701_faces": round(ms_face * LFW_UNIQUE_FACES / 1e3, 1),
            },
        },
        load_before,
    )


if __name__ == "__main__":
    main()
