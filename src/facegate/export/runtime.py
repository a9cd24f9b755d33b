"""Embedders for exported models: ONNX Runtime and OpenVINO, registered as ``onnx`` and ``openvino``.

Both take aligned RGB uint8 faces and feed the network ``(x - mean) / std`` in NCHW float32, the convention recorded
in the bundle (127.5/127.5 for insightface-style networks, 0/1 for SFace). Imports happen on construction, so a
serving image without onnxruntime still imports facegate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facegate.errors import ModelError
from facegate.models.base import Embedder, register_model

__all__ = ["OnnxEmbedder", "OpenVINOEmbedder", "to_blob"]


def to_blob(faces: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(N, 112, 112, 3)`` uint8 RGB -> ``(N, 3, 112, 112)`` float32 normalised."""
    x = faces.astype(np.float32).transpose(0, 3, 1, 2)
    if mean:
        x -= mean
    if std != 1.0:
        x /= std
    return np.ascontiguousarray(x)


class _Exported(Embedder):
    """Shared constructor of exported-model embedders: weights file, input convention, size and threshold."""

    def __init__(
        self,
        weights: str | Path,
        mean: float = 127.5,
        std: float = 127.5,
        embedding_size: int = 512,
        threshold: float = 0.3,
        threads: int | None = None,
    ) -> None:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found", code="model_missing")
        self.weights = path
        self.input_mean, self.input_std = float(mean), float(std)
        self.embedding_size = int(embedding_size)
        self.default_threshold = float(threshold)
        self.threads = threads
        self.version = path.parent.name or path.stem
        self._load()

    def _load(self) -> None:
        """Open the runtime session for ``self.weights``."""
        raise NotImplementedError


class OnnxEmbedder(_Exported):
    """An ONNX graph run by ONNX Runtime (CPU)."""

    name = "onnx"

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.weights), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: to_blob(faces, self.input_mean, self.input_std)})[0]
        return np.asarray(out, dtype=np.float32).reshape(faces.shape[0], -1)


class OpenVINOEmbedder(_Exported):
    """An OpenVINO IR (``model.xml`` + ``model.bin``) compiled for the CPU with the latency hint."""

    name = "openvino"

    def _load(self) -> None:
        import openvino as ov

        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        self.compiled = ov.Core().compile_model(str(self.weights), "CPU", config)
        self.output = self.compiled.output(0)

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        out = self.compiled(to_blob(faces, self.input_mean, self.input_std))[self.output]
        return np.asarray(out, dtype=np.float32).reshape(faces.shape[0], -1)


@register_model("onnx")
def _onnx(weights: str | Path | None = None, **kwargs: Any) -> OnnxEmbedder:
    if weights is None:
        raise ModelError("the onnx model type needs a bundle with weights (model.onnx)", code="unknown_model")
    return OnnxEmbedder(weights, **kwargs)


@register_model("openvino")
def _openvino(weights: str | Path | None = None, **kwargs: Any) -> OpenVINOEmbedder:
    if weights is None:
        raise ModelError("the openvino model type needs a bundle with weights (model.xml)", code="unknown_model")
    return OpenVINOEmbedder(weights, **kwargs)
