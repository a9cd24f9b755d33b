"""Torch backbones as :class:`~facegate.models.base.Embedder` s, and insightface checkpoint import.

Registered names ``iresnet18/34/50/100`` build the backbone; ``weights=`` loads a state dict (facegate's
``model.pt`` or an insightface ``backbone.pth`` unchanged). Without weights the network is *untrained* (its version
says so): useful as the "untrained network of the same shape" baseline, useless for verification.
torch is imported only when one of these models is created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facegate.errors import ModelError
from facegate.models.base import BUNDLE_FILE, Embedder, register_model

if TYPE_CHECKING:
    import torch

__all__ = ["TorchEmbedder", "calibrate_batchnorm", "import_insightface", "load_state_dict"]

# insightface-style input: RGB, (x - 127.5) / 127.5.
_MEAN, _STD = 127.5, 127.5


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's weights safely (``weights_only``), unwrapping ``{"model": ...}`` and DDP's ``module.``.

    Raises:
        ModelError: If the file is missing or not a torch state dict.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: weights not found", code="model_missing")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{p}: not a loadable torch checkpoint ({type(exc).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p}: expected a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


class TorchEmbedder(Embedder):
    """A torch backbone behind the Embedder interface (CPU inference, ``torch.inference_mode``).

    Args:
        arch: Backbone name (``iresnet50``, ...).
        weights: State dict file; ``None`` for an untrained network.
        embedding_size: Output dimension.
        width: Channel multiplier the weights were trained with.
        threshold: Default cosine threshold.
    """

    def __init__(
        self,
        arch: str,
        weights: str | Path | None = None,
        embedding_size: int = 512,
        width: float = 1.0,
        threshold: float = 0.3,
        module: Any = None,
    ) -> None:
        from facegate.models.backbones import create_model

        self.name = arch
        self.embedding_size = embedding_size
        self.default_threshold = threshold
        if module is not None:
            self.model = module
            self.version = "in-memory"
        else:
            self.model = create_model(arch, embedding_size=embedding_size, width=width)
            if weights is None:
                self.version = "untrained"
            else:
                state = load_state_dict(weights)
                try:
                    self.model.load_state_dict(state, strict=True)
                except RuntimeError as exc:
                    first = str(exc).splitlines()[0]
                    raise ModelError(f"{weights}: weights do not fit {arch} (width {width}): {first}") from None
                self.version = Path(weights).parent.name or Path(weights).stem
        self.model.eval()

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous().float().sub_(_MEAN).div_(_STD)
        with torch.inference_mode():
            out = self.model(x.to(next(self.model.parameters()).device))
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


def calibrate_batchnorm(model: Any, faces: np.ndarray, batch_size: int = 32) -> None:
    """Set BatchNorm running statistics from data, without learning anything.

    A freshly initialised iResNet's running statistics (mean 0, variance 1) make its eval-mode activations grow by
    orders of magnitude per stage (a fresh iResNet-100 overflows to NaN). An *untrained baseline* is only fair with
    statistics measured on real inputs: this runs the faces through the network in training mode with a cumulative
    average (``momentum=None``) and no gradient.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    with torch.no_grad():
        for start in range(0, len(faces), batch_size):
            chunk = np.ascontiguousarray(faces[start : start + batch_size])
            if len(chunk) < 2:
                break
            x = torch.from_numpy(chunk).permute(0, 3, 1, 2).contiguous().float().sub_(_MEAN).div_(_STD)
            model(x)
    for m, momentum in saved:
        m.momentum = momentum
    model.train(was_training)


def _register(arch: str) -> None:
    @register_model(arch)
    def _factory(weights: str | Path | None = None, **kwargs: Any) -> TorchEmbedder:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ModelError(f"{arch} needs torch: install the 'train' extra", code="model_missing") from None
        return TorchEmbedder(arch, weights=weights, **kwargs)


for _arch in ("iresnet18", "iresnet34", "iresnet50", "iresnet100"):
    _register(_arch)


def import_insightface(
    pth: str | Path, out_dir: str | Path, *, arch: str = "iresnet50", embedding_size: int = 512, name: str = ""
) -> Path:
    """Turn an insightface ``arcface_torch`` ``backbone.pth`` into a facegate model bundle.

    The weights are loaded strictly into the named architecture first (a checkpoint of another shape is refused),
    then saved as ``model.pt`` beside a ``facegate.json``.

    Returns:
        The bundle directory.
    """
    import torch

    emb = TorchEmbedder(arch, weights=pth, embedding_size=embedding_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(emb.model.state_dict(), out / "model.pt")
    meta = {
        "model": arch,
        "weights": "model.pt",
        "version": name or out.name,
        "model_kwargs": {"embedding_size": embedding_size},
        "source": {"kind": "insightface-arcface_torch", "file": Path(pth).name},
        "input": {"channels": "RGB", "mean": _MEAN, "std": _STD, "size": 112},
    }
    (out / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out
