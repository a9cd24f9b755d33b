"""Export of a torch model: ONNX + OpenVINO FP32/FP16/INT8 with parity gates; a failing gate writes nothing."""

import json
from pathlib import Path

import numpy as np
import pytest

from facegate.bundles import load_embedder
from facegate.data.pairs import BytesSource, PairSet
from facegate.data.synthetic import synthetic_faces
from facegate.export import convert
from facegate.export.convert import ExportGateError, export_model
from facegate.train.config import load_train_config
from facegate.train.trainer import train

pytestmark = pytest.mark.unit

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    # A small trained iResNet (two epochs of the tiny config), as `facegate train` leaves it.
    root = tmp_path_factory.mktemp("run")
    cfg = load_train_config(TINY, ["epochs=2", "model.width=0.25", "val.kind=none", f"output={root}"])
    return train(cfg, progress=False).bundle


def test_export_all_formats_pass_parity(bundle, tmp_path):
    faces, _ = synthetic_faces(20, 3, seed=9)
    report = export_model(bundle, tmp_path / "out", faces)
    assert set(report.formats) == set(convert.FORMATS)
    assert not report.failed
    for fmt in convert.FORMATS:
        meta = json.loads((tmp_path / "out" / fmt / "facegate.json").read_text())
        assert meta["format"] == fmt
        assert meta["source"]["version"] == "tiny_cpu-step24"
        assert meta["parity"]["cosine_mean"] >= convert.COSINE_GATE[fmt]
        assert meta["input_convention"].startswith("insightface")  # (x - 127.5) / 127.5 on RGB, inside the graph
        assert (meta["model_kwargs"]["mean"], meta["model_kwargs"]["std"]) == (127.5, 127.5)
        emb = load_embedder(tmp_path / "out" / fmt)
        out = emb.embed(faces[:3])
        assert out.shape == (3, 64)  # tiny config: 64-d
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    import onnx

    graph = onnx.load(str(tmp_path / "out" / "onnx" / "model.onnx")).graph
    assert graph.input[0].name == "data"  # what insightface's ArcFaceONNX expects
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    int8_xml = (tmp_path / "out" / "openvino-int8" / "model.xml").read_text()
    assert "FakeQuantize" in int8_xml or "i8" in int8_xml  # really quantised


def test_failed_gate_fails_the_export_and_writes_no_bundle(bundle, tmp_path, monkeypatch):
    faces, _ = synthetic_faces(10, 2, seed=9)
    monkeypatch.setitem(convert.COSINE_GATE, "openvino-fp16", 1.0001)  # unreachable
    with pytest.raises(ExportGateError, match="openvino-fp16: mean cosine"):
        export_model(bundle, tmp_path / "out", faces, formats=["openvino-fp32", "openvino-fp16"])
    assert (tmp_path / "out" / "openvino-fp32" / "facegate.json").is_file()
    assert not (tmp_path / "out" / "openvino-fp16").exists()
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["formats"]["openvino-fp16"]["passed"] is False


def _synthetic_pairs(faces: np.ndarray, labels: np.ndarray) -> PairSet:
    import cv2

    blobs = [cv2.imencode(".png", f[:, :, ::-1])[1].tobytes() for f in faces]
    left, right, same = [], [], []
    for i in range(len(faces)):
        for j in range(i + 1, len(faces)):
            left.append(str(i))
            right.append(str(j))
            same.append(labels[i] == labels[j])
    folds = np.arange(len(left)) % 2
    return PairSet("synthetic", left, right, np.asarray(same), folds, BytesSource(blobs, name="synthetic"))


def test_int8_accuracy_gate_fails_the_export_and_thresholds_say_where_they_come_from(bundle, tmp_path, monkeypatch):
    faces, labels = synthetic_faces(6, 3, seed=9)
    pairs = _synthetic_pairs(faces, labels)
    monkeypatch.setattr(convert, "INT8_MAX_ACCURACY_DROP", -1.0)  # any result fails: the gate must act on it
    with pytest.raises(ExportGateError, match="openvino-int8: accuracy drop"):
        export_model(bundle, tmp_path / "out", faces, formats=["openvino-fp32", "openvino-int8"], pairs=pairs)
    assert not (tmp_path / "out" / "openvino-int8").exists()
    meta = json.loads((tmp_path / "out" / "openvino-fp32" / "facegate.json").read_text())
    # 153 pairs cannot resolve a FAR of 1e-3: the bundle says its threshold is the best-accuracy one instead.
    assert "not resolvable" in meta["threshold_source"]
    assert meta["threshold"] == meta["evaluation"]["threshold"]
