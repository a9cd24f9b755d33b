"""Passive liveness (presentation-attack detection) with MiniFASNet, optional and off by default.

Two published networks of minivision-ai/Silent-Face-Anti-Spoofing (Apache-2.0) each look at the detected face with
context: MiniFASNetV2 at 2.7 times the face box, MiniFASNetV1SE at 4.0 times, both resized to 80x80 BGR. Each gives
3-class softmax probabilities, class 1 being a real face; the liveness score is the mean probability of class 1, and
a face is live when the score reaches the threshold (0.5 shipped, fixed before any measurement here).

The ``.pth`` weights are never part of this repository. :func:`convert_liveness` reads them from a folder, checks
each file's SHA-256 against the published files', loads them with ``torch.load(weights_only=True)``, exports ONNX
and OpenVINO IR FP32, and accepts the export only if it passes a parity gate against the PyTorch network on real
face crops. It writes a liveness bundle (``liveness.json`` + the exported files with their SHA-256). Serving
(:class:`LivenessChecker`) loads that bundle with OpenVINO or ONNX Runtime and checks every file's SHA-256 first;
torch is needed only to convert.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from facegate.errors import FacegateError, ModelError
from facegate.utils import atomic_write_text, sha256_file

if TYPE_CHECKING:
    from facegate.config import Settings

__all__ = [
    "DEFAULT_THRESHOLD",
    "KNOWN_WEIGHTS",
    "LIVENESS_FILE",
    "LivenessChecker",
    "LivenessGateError",
    "convert_liveness",
    "crop_scaled",
    "liveness_from_settings",
    "parity_gate",
]

INPUT_SIZE = 80
LIVENESS_FILE = "liveness.json"
DEFAULT_THRESHOLD = 0.5
#: Largest difference of the class-1 probability allowed between an export and the PyTorch network.
PARITY_MAX_ABS = 1e-4
RuntimeName = Literal["openvino", "onnx"]
#: FP32 arithmetic in OpenVINO: on CPUs with bf16 units its default lowers precision, which moved the class-1
#: probability by up to 0.025 here (the parity gate caught it); the networks are tiny, so f32 costs little.
OV_CONFIG: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass(frozen=True)
class PublishedWeights:
    """One published weights file: its crop scale and SHA-256."""

    file: str
    scale: float
    sha256: str


#: The published files (Silent-Face-Anti-Spoofing, resources/anti_spoof_models), by the scale of their crop.
KNOWN_WEIGHTS = (
    PublishedWeights(
        "2.7_80x80_MiniFASNetV2.pth", 2.7, "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0"
    ),
    PublishedWeights(
        "4_0_0_80x80_MiniFASNetV1SE.pth", 4.0, "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990"
    ),
)


class LivenessGateError(FacegateError):
    """A converted liveness model failed its parity gate, or a weights file is not the published one."""

    code = "liveness_gate_failed"


def crop_scaled(image: np.ndarray, box: Sequence[float], scale: float, size: int = INPUT_SIZE) -> np.ndarray:
    """The face box scaled by ``scale`` about its centre, kept inside the image, resized to ``size`` x ``size``.

    The same window the published models were trained on: the scale shrinks when the image is too small for it,
    and a window that sticks out of the image is shifted back inside rather than padded.

    Args:
        image: ``(H, W, 3)`` uint8 (the channel order is kept).
        box: The detected face ``(x, y, w, h)``.
        scale: 2.7 or 4.0 for the published models.
        size: Output side.
    """
    h_img, w_img = image.shape[:2]
    x, y, bw, bh = (float(v) for v in box)
    bw, bh = max(bw, 1.0), max(bh, 1.0)
    scale = min((h_img - 1) / bh, (w_img - 1) / bw, scale)
    cw, ch = bw * scale, bh * scale
    cx, cy = x + bw / 2, y + bh / 2
    left, top, right, bottom = cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > w_img - 1:
        left, right = left - (right - w_img + 1), float(w_img - 1)
    if bottom > h_img - 1:
        top, bottom = top - (bottom - h_img + 1), float(h_img - 1)
    x0, y0, x1, y1 = int(max(left, 0)), int(max(top, 0)), int(right), int(bottom)
    return cv2.resize(image[y0 : y1 + 1, x0 : x1 + 1], (size, size))


def _blob(crops: np.ndarray) -> np.ndarray:
    """``(N, 80, 80, 3)`` uint8 BGR -> ``(N, 3, 80, 80)`` float32 with 0..255 values (the published convention)."""
    return np.ascontiguousarray(crops.astype(np.float32).transpose(0, 3, 1, 2))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


# --------------------------------------------------------------------------------------------------- conversion


def _check_weights(weights_dir: Path) -> list[tuple[PublishedWeights, Path]]:
    found = []
    for pub in KNOWN_WEIGHTS:
        path = weights_dir / pub.file
        if not path.is_file():
            raise ModelError(f"{path}: liveness weights not found", code="model_missing")
        digest = sha256_file(path)
        if digest != pub.sha256:
            raise LivenessGateError(f"{path}: SHA-256 {digest} is not the published file's {pub.sha256}")
        found.append((pub, path))
    return found


def _export(net: Any, onnx_path: Path, xml_path: Path) -> None:
    """PyTorch -> ONNX (dynamic batch, input ``input``) -> OpenVINO IR FP32, with the embedder export's routines."""
    from facegate.export.convert import onnx_to_openvino, torch_to_onnx

    torch_to_onnx(net, onnx_path, input_name="input", output_name="logits", size=INPUT_SIZE)
    onnx_to_openvino(onnx_path, xml_path, size=INPUT_SIZE, fp16=False)  # FP16 is OpenVINO's default; keep FP32


def parity_gate(reference: np.ndarray, exported: np.ndarray, threshold: float) -> dict[str, Any]:
    """Compare an export's softmax outputs with the PyTorch network's on the same crops.

    Passed when the class-1 probability differs by at most :data:`PARITY_MAX_ABS` everywhere and no crop changes
    side of the threshold.
    """
    diff = float(np.abs(exported[:, 1] - reference[:, 1]).max())
    flips = int(np.sum((exported[:, 1] >= threshold) != (reference[:, 1] >= threshold)))
    return {"max_abs_diff_p_real": diff, "decision_flips": flips, "passed": diff <= PARITY_MAX_ABS and flips == 0}


def parity_crops(images: Iterable[np.ndarray], aligner: Any = None, limit: int = 32) -> list[tuple[np.ndarray, Any]]:
    """``(image_bgr, box)`` of the subject face in each RGB image that has one (for the parity gate)."""
    from facegate.errors import FaceError
    from facegate.faces.pipeline import FaceAligner
    from facegate.faces.quality import select_face

    aligner = aligner or FaceAligner()
    out = []
    for image in images:
        try:
            det = select_face(aligner.detector.detect(image), image.shape, aligner.policy)
        except FaceError:
            continue
        out.append((cv2.cvtColor(image, cv2.COLOR_RGB2BGR), det.box))
        if len(out) >= limit:
            break
    return out


def convert_liveness(
    weights_dir: str | Path,
    out_dir: str | Path,
    samples: Sequence[tuple[np.ndarray, Sequence[float]]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Convert the published MiniFASNet weights to ONNX and OpenVINO, gated by parity, into a liveness bundle.

    Args:
        weights_dir: Folder with the published ``.pth`` files (checked against :data:`KNOWN_WEIGHTS`).
        out_dir: The bundle folder to write.
        samples: ``(image_bgr, box)`` real faces; their crops at each model's scale are the parity set (with a
            few random crops besides, so the gate also sees inputs far from a face).
        threshold: The liveness threshold the bundle ships.

    Returns:
        The bundle description written to ``liveness.json``.

    Raises:
        LivenessGateError: A file is not the published one, or an export differs from PyTorch by more than
            :data:`PARITY_MAX_ABS` in the class-1 probability (or in any decision at the threshold).
    """
    import onnxruntime as ort
    import openvino as ov
    import torch

    from facegate.models.minifasnet import MiniFASNet

    published = _check_weights(Path(weights_dir))  # before anything else: only the published files are loaded
    if not samples:
        raise LivenessGateError("the parity gate needs at least one real face", code="no_parity_samples")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    models, failed = [], []
    for pub, path in published:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = MiniFASNet.from_state_dict(state, INPUT_SIZE)
        stem = Path(pub.file).stem
        onnx_path, xml_path = out / f"{stem}.onnx", out / f"{stem}.xml"
        _export(net, onnx_path, xml_path)
        crops = np.stack([crop_scaled(img, box, pub.scale) for img, box in samples])
        noise = rng.integers(0, 256, (4, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        blob = _blob(np.concatenate([crops, noise]))
        with torch.no_grad():
            ref = _softmax(net(torch.from_numpy(blob)).numpy())
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = {
            "onnx": _softmax(session.run(None, {"input": blob})[0]),
            "openvino": _softmax(np.asarray(ov.Core().compile_model(str(xml_path), "CPU", OV_CONFIG)(blob)[0])),
        }
        parity: dict[str, Any] = {"n_crops": len(blob), "n_faces": len(crops)}
        for fmt, probs in got.items():
            parity[fmt] = parity_gate(ref, probs, threshold)
            if not parity[fmt]["passed"]:
                failed.append(f"{stem} {fmt}: {parity[fmt]}")
        models.append(
            {
                "name": stem,
                "source": pub.file,
                "source_sha256": pub.sha256,
                "scale": pub.scale,
                "files": {f.name: sha256_file(f) for f in (onnx_path, xml_path, xml_path.with_suffix(".bin"))},
                "onnx": onnx_path.name,
                "openvino": xml_path.name,
                "parity": parity,
            }
        )
    if failed:
        raise LivenessGateError("liveness export failed its parity gate: " + "; ".join(failed))
    bundle = {
        "kind": "liveness",
        "family": "MiniFASNet (minivision-ai/Silent-Face-Anti-Spoofing, Apache-2.0)",
        "input": f"BGR crop of the face box scaled about its centre, {INPUT_SIZE}x{INPUT_SIZE}, NCHW float32 0..255",
        "score": "mean softmax probability of class 1 (real) over the models",
        "threshold": float(threshold),
        "models": models,
    }
    atomic_write_text(out / LIVENESS_FILE, json.dumps(bundle, indent=2) + "\n")
    return bundle


# ------------------------------------------------------------------------------------------------------ serving


class LivenessChecker:
    """Liveness scores of detected faces from a converted bundle (OpenVINO or ONNX Runtime, no torch).

    Args:
        bundle: Folder written by :func:`convert_liveness`.
        runtime: ``openvino`` (default) or ``onnx``.
        threshold: Overrides the bundle's threshold.
        threads: Inference threads (OpenVINO ``INFERENCE_NUM_THREADS``, ONNX Runtime intra-op); all when omitted.

    Raises:
        ModelError: The bundle is missing or a file's SHA-256 differs from the one recorded at conversion.
    """

    def __init__(
        self,
        bundle: str | Path,
        runtime: RuntimeName = "openvino",
        threshold: float | None = None,
        threads: int | None = None,
    ) -> None:
        root = Path(bundle)
        meta_path = root / LIVENESS_FILE
        if not meta_path.is_file():
            raise ModelError(f"{root}: not a liveness bundle (no {LIVENESS_FILE})", code="model_missing")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.threshold = float(self.meta["threshold"] if threshold is None else threshold)
        self.runtime = runtime
        self._lock = threading.Lock()  # one compiled model/session per network, shared by the worker threads
        self._models: list[tuple[float, Any]] = []
        for m in self.meta["models"]:
            for name, digest in m["files"].items():
                got = sha256_file(root / name)
                if got != digest:
                    raise ModelError(
                        f"{root / name}: SHA-256 {got} differs from the bundle's {digest}", code="bad_model"
                    )
            self._models.append((float(m["scale"]), self._open(root / m[runtime], threads)))

    def _open(self, path: Path, threads: int | None) -> Any:
        if self.runtime == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            return lambda blob: session.run(None, {"input": blob})[0]
        import openvino as ov

        config: dict[str, Any] = {**OV_CONFIG, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        return lambda blob: compiled(blob)[0]

    def score(self, image_rgb: np.ndarray, box: Sequence[float]) -> float:
        """The liveness score (mean probability of a real face) of the face at ``box`` in an RGB image."""
        total = 0.0
        for scale, run in self._models:
            # Crop and resize in RGB, then swap the channels of the small crop only (not of a whole photo).
            blob = _blob(crop_scaled(image_rgb, box, scale)[None, :, :, ::-1])
            with self._lock:
                logits = np.asarray(run(blob))
            total += float(_softmax(logits)[0, 1])
        return total / len(self._models)

    def is_live(self, image_rgb: np.ndarray, box: Sequence[float]) -> bool:
        """Whether the face at ``box`` scores at least the threshold."""
        return self.score(image_rgb, box) >= self.threshold

    def timed_score(self, image_rgb: np.ndarray, box: Sequence[float]) -> tuple[float, float]:
        """``(score, seconds)`` (the benchmark's cost per request)."""
        t0 = time.perf_counter()
        s = self.score(image_rgb, box)
        return s, time.perf_counter() - t0


def liveness_from_settings(settings: Settings) -> LivenessChecker | None:
    """The checker ``serve.liveness`` asks for (``None`` when off), from ``serve.liveness_model``.

    Raises:
        ModelError: Liveness is on but no bundle is configured, or the bundle fails its checks.
    """
    sv = settings.serve
    if not sv.liveness:
        return None
    if not sv.liveness_model:
        raise ModelError("serve.liveness is on but serve.liveness_model names no bundle", code="model_missing")
    # One inference thread: the networks are tiny (80x80), and in a server the requests, not the threads of one
    # inference, are what runs in parallel; more threads only contend with detection and embedding.
    return LivenessChecker(sv.liveness_model, threshold=sv.liveness_threshold, threads=1)


def convert_from_photos(
    weights_dir: str | Path, out_dir: str | Path, photos: str | Path, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """:func:`convert_liveness` with the parity set taken from a folder of real face photos (first 32 with a face)."""
    from facegate.data.folder import IMAGE_EXTENSIONS
    from facegate.data.imageio import decode_image

    files = sorted(p for p in Path(photos).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    images = (decode_image(p.read_bytes(), name=str(p)) for p in files)
    return convert_liveness(weights_dir, out_dir, parity_crops(images), threshold=threshold)
