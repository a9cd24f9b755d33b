"""Where a model reference becomes an embedder: the one place that knows MLflow registry URIs.

``facegate.models`` knows names (``sface``, ``iresnet50``) and bundle folders; ``facegate.registry`` knows MLflow.
A ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI needs both, so it is resolved here, above the two: the
registry fetches the version's bundle (once per version) and ``facegate.models`` loads it like any other bundle.
Neither package imports the other for this.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facegate.models.base import Embedder

__all__ = ["REGISTRY_SCHEME", "load_embedder", "resolve"]

REGISTRY_SCHEME = "models:/"


def resolve(name_or_path: str | Path) -> str:
    """A registry name, a bundle folder, or a ``models:/`` URI fetched into a local bundle folder.

    Raises:
        RegistryError: If a ``models:/`` URI names no version, or the registry cannot be reached.
    """
    text = str(name_or_path)
    if text.startswith(REGISTRY_SCHEME):
        from facegate.registry.models import fetch_bundle  # MLflow only when a registry URI is used

        return str(fetch_bundle(text))
    return text


def load_embedder(name_or_path: str | Path) -> Embedder:
    """Load a registered model name, a bundle folder or a ``models:/`` registry URI as an embedder.

    Raises:
        ModelError: If the reference is neither a registered name nor a readable bundle.
        RegistryError: If a ``models:/`` URI cannot be resolved.
    """
    from facegate.models.base import load_embedder as load_local

    return load_local(resolve(name_or_path))
