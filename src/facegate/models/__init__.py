"""Models: the :class:`Embedder` interface and a registry of embedders by name (``create_embedder("sface")``)."""

from facegate.models.base import Embedder, create_embedder, list_models, load_embedder, register_model

__all__ = ["Embedder", "create_embedder", "list_models", "load_embedder", "register_model"]
