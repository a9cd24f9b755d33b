"""Exported ONNX files work in insightface's own ``ArcFaceONNX`` unchanged: its standard input, facegate's embedding,
and no ONNX Runtime warnings on load."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facegate.export.convert import EXPORT_INPUT_MEAN, EXPORT_INPUT_STD, export_onnx, load_faces
from facegate.export.runtime import OnnxEmbedder
from facegate.models import create_embedder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _arcface_onnx() -> Any:
    """insightface's ``ArcFaceONNX`` class (``.ci/run`` installs insightface 2.1 into build/insightface)."""
    where = os.environ.get("FACEGATE_INSIGHTFACE_PATH", str(REPO / "build" / "insightface"))
    if Path(where).is_dir() and where not in sys.path:
        sys.path.append(where)
    try:
        return importlib.import_module("insightface.model_zoo.arcface_onnx").ArcFaceONNX
    except ImportError as exc:
        pytest.skip(f"needs insightface (pip install --target build/insightface insightface==2.1 --no-deps): {exc}")


@pytest.fixture(scope="module")
def faces(lfw: Path) -> np.ndarray:
    return load_faces(lfw, limit=24)


def test_insightface_arcface_onnx_embeds_like_facegate(
    faces: np.ndarray, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import onnx
    import onnxruntime as ort

    sface = create_embedder("sface")  # its network expects raw 0..255 pixels: the conversion must be in the graph
    path = export_onnx(sface, tmp_path / "sface.onnx")
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    assert [i.name for i in graph.input] == ["data"] and not inits & {i.name for i in graph.input}
    opts = ort.SessionOptions()
    opts.log_severity_level = 1  # warnings and above
    capfd.readouterr()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape[0] == "batch" and session.get_inputs()[0].shape[0] == "batch"
    err = capfd.readouterr().err
    assert "appears in graph inputs" not in err and "W:onnxruntime" not in err, err[-2000:]

    reference = sface.embed(faces)
    ours = OnnxEmbedder(path, mean=EXPORT_INPUT_MEAN, std=EXPORT_INPUT_STD, embedding_size=128).embed(faces)
    assert float(np.sum(reference * ours, axis=1).min()) > 0.9999

    arcface = _arcface_onnx()(str(path))
    assert (arcface.input_mean, arcface.input_std) == (127.5, 127.5)  # it took the graph for a standard one
    bgr = [np.ascontiguousarray(f[:, :, ::-1]) for f in faces]  # insightface works on OpenCV's BGR images
    theirs = arcface.get_feat(bgr)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    cos = np.sum(reference * theirs, axis=1)
    assert float(cos.min()) > 0.999, cos
    # Batched through insightface: same people still match, different people do not (not chance any more).
    same = float(theirs[0] @ reference[0])
    assert same > 0.999
