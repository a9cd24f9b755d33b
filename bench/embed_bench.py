"""Embedding latency of iResNet-50 on this CPU: PyTorch eager vs ONNX Runtime vs OpenVINO FP32 vs OpenVINO INT8.

All four run the same weights in one process, at batch 1 and batch 16, and report the median milliseconds per face
over repeated calls after a warm-up. INT8 is NNCF post-training quantisation calibrated on aligned faces (LFW from
../shared when present, synthetic faces otherwise); the cosine parity of each runtime with PyTorch is reported
beside its latency. Prints one JSON object. Usage: ``python bench/embed_bench.py [--repeats N] [--bundle DIR]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import SHARED, machine

from facegate.data.synthetic import synthetic_faces
from facegate.export.convert import _quantize, _to_openvino, export_onnx, load_faces, parity
from facegate.export.runtime import OnnxEmbedder, OpenVINOEmbedder
from facegate.models.base import Embedder
from facegate.models.torch_embedder import TorchEmbedder, calibrate_batchnorm


def latency(emb: Embedder, faces: np.ndarray, batch: int, repeats: int) -> float:
    x = faces[:batch]
    for _ in range(3):
        emb.embed(x, batch_size=batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        emb.embed(x, batch_size=batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--bundle", type=Path, default=None, help="a trained iresnet50 bundle (random weights otherwise)")
    args = ap.parse_args()
    lfw = SHARED / "data" / "lfw-aligned"
    faces = load_faces(lfw, 300) if lfw.is_dir() else synthetic_faces(60, 5)[0]
    if args.bundle is not None:
        from facegate.bundles import load_embedder

        source = load_embedder(args.bundle)
        assert isinstance(source, TorchEmbedder)
    else:
        torch.manual_seed(0)
        source = TorchEmbedder("iresnet50")
        calibrate_batchnorm(source.model, faces[:128])  # realistic activation ranges for calibration
        source.model.eval()
    runtimes: dict[str, Embedder] = {"pytorch_eager": source}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(source, Path(tmp) / "model.onnx")
        kw: dict[str, Any] = {"mean": 127.5, "std": 127.5, "embedding_size": 512}
        runtimes["onnxruntime"] = OnnxEmbedder(onnx_path, **kw)
        runtimes["openvino_fp32"] = OpenVINOEmbedder(_to_openvino(onnx_path, Path(tmp) / "fp32.xml", False), **kw)
        int8 = _quantize(onnx_path, Path(tmp) / "int8.xml", faces[:300], 127.5, 127.5)
        runtimes["openvino_int8"] = OpenVINOEmbedder(int8, **kw)
        results: dict[str, dict[str, float]] = {}
        for name, emb in runtimes.items():
            results[name] = {
                "ms_per_face_batch1": round(latency(emb, faces, 1, args.repeats), 2),
                "ms_per_face_batch16": round(latency(emb, faces, 16, max(3, args.repeats // 4)), 2),
                "cosine_vs_pytorch": round(parity(source, emb, faces[:64])["cosine_mean"], 5),
            }
    base = results["pytorch_eager"]
    for r in results.values():
        r["speedup_batch16_vs_pytorch"] = round(base["ms_per_face_batch16"] / r["ms_per_face_batch16"], 2)
        r["speedup_batch1_vs_pytorch"] = round(base["ms_per_face_batch1"] / r["ms_per_face_batch1"], 2)
    print(
        json.dumps(
            {
                "benchmark": "iresnet50 embedding latency (ms per face), one process, same weights",
                "weights": str(args.bundle) if args.bundle else "random (BatchNorm calibrated on faces)",
                "calibration_faces": "lfw" if lfw.is_dir() else "synthetic",
                "runtimes": results,
                "torch_threads": torch.get_num_threads(),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
