"""The SFace baseline exports to every format with parity on real LFW faces and its own per-format threshold."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from facegate.cli import app

pytestmark = pytest.mark.integration


def test_sface_export_cli(lfw, tmp_path):
    lines = (lfw / "pairs.txt").read_text().splitlines()
    same, diff = lines[1:301], lines[301:601]  # LFW fold 1: 300 same, then 300 different
    body = same[:75] + diff[:75] + same[75:150] + diff[75:150]
    (tmp_path / "pairs.txt").write_text("\n".join(["2\t75", *body]) + "\n")  # 2 folds of 75 + 75 pairs
    out = tmp_path / "exp"
    res = CliRunner().invoke(
        app,
        [
            "-q",
            "export",
            "sface",
            "--out",
            str(out),
            "--faces",
            str(lfw),
            "--max-faces",
            "150",
            "--pairs",
            str(tmp_path / "pairs.txt"),
            "--images",
            str(lfw),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "export_report.json").read_text())
    src_acc = report["source_evaluation"]["accuracy"]
    for fmt in ("onnx", "openvino-fp32", "openvino-fp16", "openvino-int8"):
        entry = report["formats"][fmt]
        assert entry["passed"], (fmt, entry["problems"])
        assert entry["parity"]["cosine_mean"] >= (0.99 if fmt.endswith("int8") else 0.999)
        assert src_acc - entry["evaluation"]["accuracy"] <= 0.003 + 1e-9
        meta = json.loads((out / fmt / "facegate.json").read_text())
        assert isinstance(meta["threshold"], float)
        assert np.isfinite(meta["threshold"])
    # A bundle's own threshold is what verify uses.
    a, b = sorted((lfw / "Aaron_Peirsol").glob("*.jpg"))[:2]
    res = CliRunner().invoke(app, ["verify", str(a), str(b), "--model", str(out / "openvino-int8")])
    assert res.exit_code == 0, res.output
    assert (
        json.loads(res.stdout)["threshold"]
        == json.loads((out / "openvino-int8" / "facegate.json").read_text())["threshold"]
    )
