"""Export a model to ONNX and OpenVINO IR (FP32, FP16, INT8), each gated by parity with its source.

``export_model`` writes one bundle per format under ``OUT/<format>/`` (``onnx``, ``openvino-fp32``,
``openvino-fp16``, ``openvino-int8``). Every export is checked before it is accepted:

- cosine similarity between source and export embeddings of real aligned faces: mean >= 0.999 for ONNX, FP32 and
  FP16, >= 0.99 for INT8;
- with a pair set, the verification accuracy of each export next to the source's: INT8 may lose at most 0.3 points.

A failed gate fails the export: the format's bundle is not written (the report says why) and ``export_model`` raises
:class:`ExportGateError`. Each accepted bundle carries its parity figures, its own evaluation and its own threshold
at the target FAR, so a canary of a new model version verifies with its own threshold.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facegate.bundles import load_embedder
from facegate.data.pairs import PairSet
from facegate.errors import FacegateError, ModelError
from facegate.models.base import BUNDLE_FILE, Embedder
from facegate.utils import atomic_write_text

__all__ = ["FORMATS", "ExportGateError", "ExportReport", "export_model", "export_onnx", "load_faces", "parity"]

FORMATS = ("onnx", "openvino-fp32", "openvino-fp16", "openvino-int8")
COSINE_GATE = {"onnx": 0.999, "openvino-fp32": 0.999, "openvino-fp16": 0.999, "openvino-int8": 0.99}
INT8_MAX_ACCURACY_DROP = 0.003


class ExportGateError(FacegateError):
    """An export failed its parity or accuracy gate."""

    code = "export_gate_failed"


@dataclass
class ExportReport:
    """What was exported and how each format measured against its source."""

    source: str
    formats: dict[str, dict[str, Any]] = field(default_factory=dict)
    source_evaluation: dict[str, Any] | None = None

    @property
    def failed(self) -> list[str]:
        """Formats that failed a gate."""
        return [k for k, v in self.formats.items() if not v.get("passed")]


def parity(source: Embedder, exported: Embedder, faces: np.ndarray, batch_size: int = 32) -> dict[str, float]:
    """Cosine similarity between two embedders' embeddings of the same faces."""
    a = source.embed(faces, batch_size=batch_size)
    b = exported.embed(faces, batch_size=batch_size)
    cos = np.sum(a * b, axis=1)
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "cosine_p01": float(np.percentile(cos, 1)),
        "n_faces": len(faces),
    }


#: What every exported graph takes: insightface's standard input, ``(x - 127.5) / 127.5`` of RGB pixels, NCHW
#: float32 (what ``insightface.model_zoo.ArcFaceONNX`` and most tools feed an ArcFace-style ONNX).
EXPORT_INPUT_MEAN = 127.5
EXPORT_INPUT_STD = 127.5
EXPORT_INPUT_CONVENTION = "insightface: RGB, NCHW float32, (x - 127.5) / 127.5"


def export_onnx(source: Embedder, path: Path, opset: int = 17) -> Path:
    """Write the source network as ONNX with a dynamic batch and an input named ``data`` (insightface's name).

    Whatever the source network expects, the graph takes insightface's standard input
    (:data:`EXPORT_INPUT_MEAN`, :data:`EXPORT_INPUT_STD`): the conversion to the network's own convention is inside
    the graph, so insightface's ``ArcFaceONNX`` and facegate's runtimes get the same embedding from the same file.
    """
    from facegate.models.sface import SFaceEmbedder
    from facegate.models.torch_embedder import TorchEmbedder

    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, SFaceEmbedder):
        _clean_onnx_inputs(source.weights, path)  # already ONNX with input "data"
        return _standard_input(path, source.input_mean, source.input_std)
    if not isinstance(source, TorchEmbedder):
        raise ModelError(f"cannot export a {type(source).__name__} to ONNX")
    torch_to_onnx(source.model.eval(), path, input_name="data", output_name="embedding", size=112, opset=opset)
    return _standard_input(path, source.input_mean, source.input_std)


def torch_to_onnx(module: Any, path: Path, *, input_name: str, output_name: str, size: int, opset: int = 17) -> Path:
    """The one PyTorch -> ONNX routine: an NCHW ``size`` x ``size`` input with a dynamic batch on both ends.

    The TorchScript exporter (``dynamo=False``) is used because it writes a self-contained file of plain ONNX ops
    that ONNX Runtime, OpenVINO and insightface all read; the example batch is 2 so no size-1 axis gets folded.
    """
    import torch

    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def onnx_to_openvino(onnx_path: Path, xml: Path, *, size: int, fp16: bool) -> Path:
    """ONNX -> OpenVINO IR with a dynamic batch of ``size`` x ``size`` images (FP32 unless ``fp16``).

    ``compress_to_fp16`` is always passed: OpenVINO's default is FP16, which would silently halve an "FP32" IR.
    """
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    model.reshape({model.input(0): ov.PartialShape([-1, 3, size, size])})
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    return xml


def _standard_input(path: Path, mean: float, std: float) -> Path:
    """Rewrite ``path`` in place to take insightface's standard input and to load without warnings.

    A network that expects ``(p - mean) / std`` of pixels ``p`` gets, in front of its first node,
    ``y = data * (127.5 / std) + (127.5 - mean) / std``, which is exactly that for ``data = (p - 127.5) / 127.5``.
    The two nodes' names avoid insightface's ``Sub``/``Mul`` prefixes, by which it guesses an mxnet model that
    normalises itself. Initializers listed as graph inputs are dropped, and stale intermediate shapes (a batch
    fixed at 1) are cleared so the output keeps its dynamic batch: ONNX Runtime warned about both on every load.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    del graph.value_info[:]
    for value in (graph.input[0], *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    scale, shift = EXPORT_INPUT_STD / std, (EXPORT_INPUT_MEAN - mean) / std
    if scale != 1.0 or shift != 0.0:
        data = graph.input[0].name
        pixels = "facegate_network_input"
        for node in graph.node:
            node.input[:] = [pixels if name == data else name for name in node.input]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, dtype=np.float32), "facegate_input_scale_value"),
                numpy_helper.from_array(np.array(shift, dtype=np.float32), "facegate_input_shift_value"),
            ]
        )
        front = [
            helper.make_node(
                "Mul", [data, "facegate_input_scale_value"], ["facegate_scaled"], name="facegate_input_scale"
            ),
            helper.make_node(
                "Add", ["facegate_scaled", "facegate_input_shift_value"], [pixels], name="facegate_input_shift"
            ),
        ]
        nodes = front + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _clean_onnx_inputs(src: Path, dst: Path) -> Path:
    """Make OpenCV Zoo's block-quantised SFace loadable by ONNX Runtime and OpenVINO.

    It declares its original float weights as graph inputs that no node reads (ONNX Runtime would demand values for
    them), fixes the batch at 1, and uses opset-21 blocked dequantisation that OpenVINO cannot convert.
    """
    import onnx

    model = onnx.load(str(src))
    used = {name for node in model.graph.node for name in node.input}
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name in used or i.name == model.graph.input[0].name]
    missing = [i.name for i in keep[1:] if i.name not in inits]
    if missing:
        raise ModelError(f"{src.name}: graph inputs without values: {missing[:5]}")
    del model.graph.input[:]
    model.graph.input.extend(keep)
    _fold_dequantize(model)
    # Dynamic batch (the file fixes it at 1).
    for value in (model.graph.input[0], *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, str(dst))
    return dst


def _fold_dequantize(model: Any) -> None:
    """Replace constant ``DequantizeLinear`` nodes by their float results.

    OpenVINO's ONNX frontend rejects opset-21 *blocked* dequantisation (SFace's int8bq weights); evaluating those
    nodes once with ONNX's reference implementation gives the same float weights as a plain initializer.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = {i.name: i for i in model.graph.initializer}
    opset = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    folded: list[Any] = []
    for node in list(model.graph.node):
        if node.op_type != "DequantizeLinear" or not all(n in inits for n in node.input if n):
            continue
        g = helper.make_graph(
            [node],
            "fold",
            [],
            [helper.make_tensor_value_info(node.output[0], 0, None)],
            initializer=[inits[n] for n in node.input if n],
        )
        outputs: Any = ReferenceEvaluator(helper.make_model(g, opset_imports=opset)).run(None, {})
        value = outputs[0]
        folded.append(numpy_helper.from_array(value, node.output[0]))
        model.graph.node.remove(node)
    model.graph.initializer.extend(folded)
    used = {n for node in model.graph.node for n in node.input}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for i in unused:
        model.graph.initializer.remove(i)
    onnx.checker.check_model(model)


def _to_openvino(onnx_path: Path, xml: Path, fp16: bool) -> Path:
    return onnx_to_openvino(onnx_path, xml, size=112, fp16=fp16)


def _quantize(onnx_path: Path, xml: Path, calib: np.ndarray, mean: float, std: float) -> Path:
    import nncf
    import openvino as ov

    from facegate.export.runtime import to_blob

    model = ov.convert_model(str(onnx_path))
    model.reshape({model.input(0): ov.PartialShape([-1, 3, 112, 112])})
    items = [to_blob(calib[i : i + 1], mean, std) for i in range(len(calib))]
    quantized = nncf.quantize(
        model, nncf.Dataset(items), subset_size=len(items), model_type=None, preset=nncf.QuantizationPreset.PERFORMANCE
    )
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml


def export_model(
    model: str | Path,
    out_dir: str | Path,
    faces: np.ndarray,
    *,
    formats: Sequence[str] = FORMATS,
    pairs: PairSet | None = None,
    target_far: float = 1e-3,
    calibration_size: int = 300,
    progress: bool = False,
) -> ExportReport:
    """Export ``model`` to each format, gate each, and write the accepted bundles.

    Args:
        model: Registered name or bundle directory of the source model.
        out_dir: Output root; each format gets ``out_dir/<format>/``.
        faces: Real aligned faces ``(N, 112, 112, 3)`` uint8 RGB, split in two: INT8 calibrates on the first
            ``min(calibration_size, N // 2)`` and every format's parity is measured on the rest, so INT8 is never
            judged on the faces it was tuned on.
        formats: Subset of :data:`FORMATS`.
        pairs: Optional verification pairs for the accuracy gate and the per-format threshold.
        target_far: FAR at which each format's threshold is chosen.
        calibration_size: At most this many faces calibrate INT8.
        progress: Show progress bars while evaluating.

    Returns:
        The report (also written as ``out_dir/export_report.json``).

    Raises:
        ExportGateError: If any format failed a gate (the others are still written).
    """
    from facegate.evaluate.runner import evaluate_pairs

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ModelError(f"unknown export format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    if faces.ndim != 4 or faces.shape[1:] != (112, 112, 3) or len(faces) < 2:
        raise ModelError("parity needs at least 2 real aligned faces (N, 112, 112, 3)")
    n_calib = min(calibration_size, len(faces) // 2)
    calib_faces, parity_faces = faces[:n_calib], faces[n_calib:]
    source = load_embedder(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport(source=f"{source.name}@{source.version}")
    src_eval = None
    if pairs is not None:
        src_eval = evaluate_pairs(source, pairs, mode="auto", target_far=target_far, progress=progress).metrics
        if src_eval["n_failed_pairs"]:
            # Failed pairs score -1 on both sides: the gate would compare nothing and the threshold would be junk.
            raise ExportGateError(
                f"{src_eval['n_failed_pairs']} of {len(pairs)} gate pairs have unusable images "
                f"(e.g. {next(iter(src_eval['failed_images'].items()))}); fix the pair set first"
            )
        report.source_evaluation = {k: src_eval[k] for k in ("accuracy", "auc", "eer", "threshold_target_far")}
    # Every exported graph takes insightface's input (the conversion is inside the graph); the bundle says so.
    kw = {"mean": EXPORT_INPUT_MEAN, "std": EXPORT_INPUT_STD, "embedding_size": source.embedding_size}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        onnx_path = export_onnx(source, work / "onnx" / "model.onnx")
        for fmt in formats:
            t0 = time.perf_counter()
            fdir = work / fmt
            fdir.mkdir(parents=True, exist_ok=True)
            if fmt == "onnx":
                weights, kind = onnx_path, "onnx"
            elif fmt == "openvino-int8":
                weights, kind = (
                    _quantize(onnx_path, fdir / "model.xml", calib_faces, EXPORT_INPUT_MEAN, EXPORT_INPUT_STD),
                    "openvino",
                )
            else:
                weights, kind = _to_openvino(onnx_path, fdir / "model.xml", fmt == "openvino-fp16"), "openvino"
            exported = load_embedder_from(kind, weights, kw)
            entry: dict[str, Any] = {"parity": parity(source, exported, parity_faces), "seconds": 0.0}
            if fmt == "openvino-int8":
                entry["calibration_faces"] = n_calib  # none of them among the parity faces
            problems = []
            gate = COSINE_GATE[fmt]
            if entry["parity"]["cosine_mean"] < gate:
                problems.append(f"mean cosine {entry['parity']['cosine_mean']:.5f} < {gate}")
            threshold, threshold_source = source.default_threshold, "source model (no pairs given)"
            if pairs is not None and src_eval is not None:
                ev = evaluate_pairs(exported, pairs, mode="auto", target_far=target_far, progress=progress).metrics
                drop = src_eval["accuracy"] - ev["accuracy"]
                entry["evaluation"] = {
                    k: ev[k] for k in ("accuracy", "auc", "eer", "threshold", "threshold_target_far", "tar_at_far")
                }
                entry["accuracy_drop"] = drop
                if fmt == "openvino-int8" and drop > INT8_MAX_ACCURACY_DROP:
                    problems.append(f"accuracy drop {drop * 100:.2f} points > {INT8_MAX_ACCURACY_DROP * 100:.1f}")
                if ev["threshold_target_far"] is not None:
                    threshold, threshold_source = ev["threshold_target_far"], f"FAR {target_far:g} on the export pairs"
                else:
                    # Too few impostor pairs to resolve that FAR: say so in the bundle rather than pretend.
                    threshold = ev["threshold"]
                    threshold_source = f"best accuracy on the export pairs (FAR {target_far:g} not resolvable)"
                    warnings.warn(f"{fmt}: {threshold_source}", stacklevel=2)
            entry["passed"] = not problems
            entry["problems"] = problems
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            report.formats[fmt] = entry
            final = out / fmt
            if final.exists():
                shutil.rmtree(final)  # a previous version's bundle must not survive a failed gate either
            if problems:
                continue
            if fmt == "onnx":
                (work / "onnx_bundle").mkdir()
                shutil.copyfile(onnx_path, work / "onnx_bundle" / "model.onnx")
                fdir = work / "onnx_bundle"
            meta = {
                "model": kind,
                "weights": Path(weights).name,
                "version": f"{source.version}-{fmt}",
                "format": fmt,
                "model_kwargs": kw,
                "input_convention": EXPORT_INPUT_CONVENTION,
                "threshold": threshold,
                "threshold_source": threshold_source,
                "target_far": target_far,
                "source": {"model": source.name, "version": source.version},
                "parity": entry["parity"],
                "evaluation": entry.get("evaluation"),
            }
            atomic_write_text(fdir / BUNDLE_FILE, json.dumps(meta, indent=2) + "\n")
            shutil.move(str(fdir), final)
    atomic_write_text(
        out / "export_report.json",
        json.dumps(
            {"source": report.source, "source_evaluation": report.source_evaluation, "formats": report.formats},
            indent=2,
        )
        + "\n",
    )
    if report.failed:
        details = "; ".join(f"{f}: {', '.join(report.formats[f]['problems'])}" for f in report.failed)
        raise ExportGateError(f"export gate failed for {details} (see {out / 'export_report.json'})")
    return report


def load_faces(root: str | Path, limit: int = 400, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` aligned 112x112 faces from a folder tree, a seeded random sample across it.

    Raises:
        ModelError: If fewer than 2 usable aligned faces are found.
    """
    from facegate.data.folder import IMAGE_EXTENSIONS
    from facegate.data.imageio import read_image
    from facegate.errors import ImageError

    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    rng = np.random.default_rng(seed)
    picked = (
        [files[i] for i in sorted(rng.choice(len(files), size=min(limit, len(files)), replace=False))] if files else []
    )
    faces = []
    for f in picked:
        try:
            img = read_image(f)
        except ImageError:
            continue
        if img.shape[:2] == (112, 112):
            faces.append(img)
    if len(faces) < 2:
        raise ModelError(f"{root}: need aligned 112x112 faces for parity and calibration (found {len(faces)})")
    return np.stack(faces)


def load_embedder_from(kind: str, weights: Path, kwargs: dict[str, Any]) -> Embedder:
    """Instantiate an exported model directly (before it has a bundle)."""
    from facegate.models import create_embedder

    return create_embedder(kind, weights=weights, **kwargs)
