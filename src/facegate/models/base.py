"""The Embedder interface and the model registry.

An embedder takes aligned faces (``uint8`` ``(N, 112, 112, 3)`` RGB on the ArcFace template) and returns
L2-normalised ``float32`` ``(N, D)`` embeddings. Each embedder converts to its own input convention inside; nothing
outside knows whether a model wants BGR or ``(x - 127.5) / 127.5``.

The registry follows timm's ``create_model``: factories register under a name, ``create_embedder(name, **kw)``
builds one, ``list_models()`` lists them. ``load_embedder`` also accepts a model bundle directory (one holding a
``facegate.json``), which names its architecture and weights.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from facegate.errors import ModelError

__all__ = ["Embedder", "create_embedder", "list_models", "load_embedder", "register_model"]

BUNDLE_FILE = "facegate.json"
_T = TypeVar("_T")


class Embedder(ABC):
    """Aligned faces in, unit-norm embeddings out.

    Attributes:
        name: Registry name of the model.
        embedding_size: Output dimension D.
        default_threshold: Cosine-similarity threshold to use when no evaluated threshold is available.
        version: Version string recorded in outputs (a bundle's version, or the package file's digest prefix).
    """

    name: str = "embedder"
    embedding_size: int = 0
    default_threshold: float = 0.5
    version: str = "0"
    #: Input convention of the underlying network: RGB NCHW float ``(x - input_mean) / input_std``. Exporters
    #: record it so an exported graph is fed exactly as its source was.
    input_mean: float = 127.5
    input_std: float = 127.5
    #: Arithmetic the network runs in, and the ones this embedder can run in (reduced precision only where the
    #: runtime offers it, and only when asked: ``f32`` is what every model is evaluated and gated at by default).
    precision: str = "f32"
    precisions: tuple[str, ...] = ("f32",)

    def set_precision(self, precision: str) -> None:
        """Run the network in ``precision`` from the next forward pass on.

        Raises:
            ModelError: If this embedder cannot run in it.
        """
        if precision not in self.precisions:
            raise ModelError(
                f"{self.name} runs in {' or '.join(self.precisions)}, not {precision!r}", code="unknown_precision"
            )
        self.precision = precision

    @abstractmethod
    def _forward(self, faces: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) embeddings for one batch of ``(n, 112, 112, 3)`` RGB uint8 faces."""

    def prepare(self) -> None:
        """Do the first forward pass's set-up (load, compile) now; callers overlap it with decoding. No-op here."""
        return None

    def limit_threads(self, threads: int) -> None:
        """Use at most ``threads`` CPU threads for forward passes (N processes sharing a machine). No-op here."""
        return None

    def embed(self, faces: np.ndarray, *, batch_size: int = 64, flip: bool = False) -> np.ndarray:
        """Embed aligned faces.

        Args:
            faces: ``(N, 112, 112, 3)`` uint8 RGB, or a single ``(112, 112, 3)`` face.
            batch_size: Faces per forward pass.
            flip: Test-time augmentation: add the embedding of the horizontally mirrored face before normalising.

        Returns:
            ``(N, D)`` float32, each row of unit L2 norm.

        Raises:
            ValueError: On a wrong shape or dtype.
        """
        arr = _checked_faces(faces)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        out = np.empty((arr.shape[0], self.embedding_size), dtype=np.float32)
        for start in range(0, arr.shape[0], batch_size):
            batch = np.ascontiguousarray(arr[start : start + batch_size])
            out[start : start + batch.shape[0]] = self._raw(batch, flip)
        return l2_normalize(out)

    def _raw(self, batch: np.ndarray, flip: bool) -> np.ndarray:
        """Unnormalised embeddings of one batch (with flip: the original's plus the mirror's, from one pass)."""
        n = batch.shape[0]
        if flip:
            # The mirrored faces ride in the same forward pass as the originals: one call of 2n faces costs
            # less than two calls of n (per-call overhead, and better use of both cores).
            return sum_mirrored(self._forward(with_mirrored(batch)).astype(np.float32, copy=False), n)
        return self._forward(batch).astype(np.float32, copy=False)

    def embed_stream(
        self, batches: Iterable[tuple[_T, np.ndarray]], *, flip: bool = False
    ) -> Iterator[tuple[_T, np.ndarray]]:
        """Embed a stream of ``(tag, faces)`` batches, yielding ``(tag, embeddings)`` in the same order.

        Each batch goes through the network as one forward pass (as :meth:`embed` with ``batch_size=len(faces)``).
        Runtimes that queue work asynchronously override this to keep the network busy between batches: the next
        batch is queued before the previous one's embeddings are handed back, so whatever the caller does with them
        (caching, bookkeeping) and the pull of the next batch overlap the forward passes.

        Raises:
            ValueError: On a batch of the wrong shape or dtype.
        """
        for tag, faces in batches:
            arr = np.ascontiguousarray(_checked_faces(faces))
            yield tag, l2_normalize(self._raw(arr, flip))

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description recorded beside outputs."""
        return {
            "name": self.name,
            "version": self.version,
            "embedding_size": self.embedding_size,
            "default_threshold": self.default_threshold,
            "precision": self.precision,
        }


def _checked_faces(faces: np.ndarray) -> np.ndarray:
    """``faces`` as ``(N, 112, 112, 3)`` uint8 (a single face gains the batch axis); ``ValueError`` otherwise."""
    arr = np.asarray(faces)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (112, 112, 3) or arr.dtype != np.uint8:
        raise ValueError(f"expected (N, 112, 112, 3) uint8 aligned faces, got {arr.shape} {arr.dtype}")
    return arr


def with_mirrored(batch: np.ndarray) -> np.ndarray:
    """``batch`` followed by its horizontally mirrored faces (flip test-time augmentation's one forward pass)."""
    return np.concatenate([batch, batch[:, :, ::-1, :]])


def sum_mirrored(raw: np.ndarray, n: int) -> np.ndarray:
    """The embeddings of :func:`with_mirrored`'s ``2n`` faces folded back to ``n``: original plus mirror."""
    out: np.ndarray = raw[:n] + raw[n:]
    return out


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation; an all-zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
    return out


_E = TypeVar("_E", bound=Callable[..., Embedder])
_REGISTRY: dict[str, Callable[..., Embedder]] = {}
# Modules whose import registers built-in models; imported lazily so `import facegate.models` stays cheap.
_BUILTIN_MODULES = ("facegate.models.sface", "facegate.models.torch_embedder", "facegate.export.runtime")


def register_model(name: str) -> Callable[[_E], _E]:
    """Decorator registering an embedder factory under ``name``.

    Raises:
        ValueError: If the name is already taken by another factory.
    """

    def deco(factory: _E) -> _E:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not factory:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def create_embedder(name: str, **kwargs: Any) -> Embedder:
    """Build a registered embedder.

    Args:
        name: Registry name (see :func:`list_models`).
        **kwargs: Passed to the factory.

    Raises:
        ModelError: For an unknown name, listing the known ones.
    """
    _load_builtins()
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ModelError(
            f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}", code="unknown_model"
        )
    return factory(**kwargs)


def load_embedder(name_or_path: str | Path) -> Embedder:
    """Resolve a registry name or a model bundle directory into an embedder.

    A bundle directory holds ``facegate.json`` with at least ``{"model": NAME}`` and optionally ``"weights"`` (a
    file relative to the bundle, passed to the factory as ``weights``), ``"model_kwargs"`` (more factory
    arguments, such as ``embedding_size`` and ``width``), ``"threshold"`` and ``"version"``.

    ``models:/`` registry URIs are resolved one level up, by :func:`facegate.bundles.load_embedder`.

    Raises:
        ModelError: If neither a registered name nor a readable bundle.
    """
    text = str(name_or_path)
    if text.startswith("models:/"):
        # Registry URIs need MLflow, which sits above this package: facegate.bundles resolves them.
        raise ModelError(f"{text}: a registry URI; load it with facegate.bundles.load_embedder", code="registry_uri")
    path = Path(text)
    if path.is_dir():
        meta_path = path / BUNDLE_FILE
        if not meta_path.is_file():
            raise ModelError(f"{path}: not a model bundle (no {BUNDLE_FILE})", code="unknown_model")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: unreadable bundle metadata ({exc})") from None
        if not isinstance(meta, dict) or "model" not in meta:
            raise ModelError(f"{meta_path}: missing the 'model' key")
        kwargs: dict[str, Any] = dict(meta.get("model_kwargs") or {})
        if meta.get("weights"):
            kwargs["weights"] = path / str(meta["weights"])
        emb = create_embedder(str(meta["model"]), **kwargs)
        if isinstance(meta.get("threshold"), int | float):
            emb.default_threshold = float(meta["threshold"])
        if meta.get("version"):
            emb.version = str(meta["version"])
        return emb
    if path.suffix and path.exists():
        raise ModelError(f"{path}: a model file must sit in a bundle directory with {BUNDLE_FILE}")
    return create_embedder(text)
