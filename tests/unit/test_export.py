"""Export of a torch model: ONNX + OpenVINO FP32/FP16/INT8 with parity gates; a failing gate writes nothing."""

import json
from pathlib import Path

import numpy as np
import pytest

from facegate.data.synthetic import synthetic_faces
from facegate.export import convert
from facegate.export.convert import ExportGateError, export_model
from facegate.models import load_embedder
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
