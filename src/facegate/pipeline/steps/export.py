"""The export step: OpenVINO FP32 and INT8 behind the parity and accuracy gates."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facegate.pipeline.failures import records_failure
from facegate.pipeline.steps._common import MetricsSink, VerificationSet, _log, _pairsets, _plain, _say


@records_failure
def export_step(
    model_dir: str,
    faces_dir: str,
    out_model_dir: str,
    *,
    sets: Sequence[VerificationSet] = (),
    holdout_dir: str | None = None,
    target_far: float = 1e-3,
    metrics: MetricsSink | None = None,
    model_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export to OpenVINO FP32 and INT8 behind the existing gates; the served bundle is INT8 when it passes.

    INT8 calibrates on one half of the faces and is judged on the other (parity) and on the first verification
    set (accuracy: at most 0.3 points lost). When INT8 fails its gate, FP32 is served and the step says so; when
    FP32 fails too, the step fails.

    Args:
        model_dir: The evaluated bundle.
        faces_dir: Real aligned faces (the training faces: calibration and parity).
        out_model_dir: Output: the chosen export bundle.
        sets: Verification sets (the first one gates accuracy).
        holdout_dir: Held-out faces (for the ``holdout`` set).
        target_far: FAR for each format's threshold.
        metrics: Parity and accuracy per format, and which format was chosen.
        model_metadata: Gets the chosen format and the export report.
    """
    from facegate.export.convert import ExportGateError, export_model, load_faces

    pairs = _pairsets(sets, holdout_dir)[0][1] if sets else None
    with tempfile.TemporaryDirectory(prefix="facegate-export-") as tmp:
        _say("export: OpenVINO FP32 and INT8, each gated on parity (and accuracy with a verification set)")
        try:
            export_model(
                model_dir,
                Path(tmp),
                load_faces(faces_dir, limit=200),
                formats=["openvino-fp32", "openvino-int8"],
                pairs=pairs,
                target_far=target_far,
            )
        except ExportGateError as exc:
            # The message names the temp folder's report; the served bundle keeps a copy of it.
            _say(f"export: {exc.message.split(' (see ')[0]}")
        report = json.loads((Path(tmp) / "export_report.json").read_text())
        chosen = next((f for f in ("openvino-int8", "openvino-fp32") if report["formats"][f]["passed"]), None)
        if chosen is None:
            raise ExportGateError(f"no export passed its gates: {json.dumps(report['formats'])[:2000]}")
        shutil.copytree(Path(tmp) / chosen, out_model_dir, dirs_exist_ok=True)
        shutil.copyfile(Path(tmp) / "export_report.json", Path(out_model_dir) / "export_report.json")
    for fmt, entry in report["formats"].items():
        key = fmt.replace("openvino-", "")
        _log(metrics, {f"{key}_cosine_mean": entry["parity"]["cosine_mean"], f"{key}_passed": entry["passed"]})
        if entry.get("accuracy_drop") is not None:
            _log(metrics, {f"{key}_accuracy_drop": entry["accuracy_drop"]})
    _log(metrics, {"int8_served": chosen == "openvino-int8"})
    _say(f"export: serving {chosen}")
    if model_metadata is not None:
        model_metadata.update({"format": chosen, "export_report": report["formats"]})
    return dict(_plain({"format": chosen, "report": report}))
