"""Import KServe for serving without its Kubernetes client: 1.4 s less start-up, on every scale from zero.

``import kserve`` runs ``kserve/__init__.py``, which imports :class:`kserve.KServeClient`, the client that *manages*
InferenceServices through the Kubernetes API, and with it the whole ``kubernetes`` package: about 1.4 of the
serving process's 3.6 s of KServe import on the 2-core development machine, for a class a model server never uses.
Knative starts canary pods from zero on the first check-in, so start-up is check-in latency too (issue 19).

:func:`import_kserve_for_serving` puts a stand-in for ``kserve.api.kserve_client`` in ``sys.modules`` before KServe
is imported. Its ``KServeClient`` imports the real module when it is first called, so anything that does use the
client still gets the real one; every other module of KServe is the real one. Only ``facegate serve`` calls this,
before importing the server: ``import facegate`` changes nothing.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["import_kserve_for_serving"]

_CLIENT_MODULE = "kserve.api.kserve_client"


def _real_client_module() -> types.ModuleType:
    """The real ``kserve.api.kserve_client`` (imported now, in place of the stand-in)."""
    current = sys.modules.get(_CLIENT_MODULE)
    if current is not None and not getattr(current, "_facegate_stand_in", False):
        return current
    sys.modules.pop(_CLIENT_MODULE, None)
    return importlib.import_module(_CLIENT_MODULE)


class _DeferredKServeClient:
    """``kserve.KServeClient`` until first used: calling it imports the real client and returns a real instance."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _real_client_module().KServeClient(*args, **kwargs)


def _stand_in() -> types.ModuleType:
    module = types.ModuleType(_CLIENT_MODULE, "Stand-in for KServe's Kubernetes client (facegate.serve.lean_import).")
    module.KServeClient = _DeferredKServeClient  # type: ignore[attr-defined]
    module._facegate_stand_in = True  # type: ignore[attr-defined]

    def any_other_name(name: str) -> Any:  # the module's __getattr__ (PEP 562): the real module's attribute
        if name.startswith("__"):  # the import system probes __path__, __spec__...: not a use of the client
            raise AttributeError(name)
        return getattr(_real_client_module(), name)

    module.__getattr__ = any_other_name  # type: ignore[method-assign]
    return module


def import_kserve_for_serving() -> types.ModuleType:
    """Import ``kserve`` without importing its Kubernetes client (a no-op when ``kserve`` is already imported).

    Returns:
        The ``kserve`` package.
    """
    if "kserve" in sys.modules:
        return sys.modules["kserve"]
    sys.modules.setdefault(_CLIENT_MODULE, _stand_in())
    try:
        return importlib.import_module("kserve")
    except ImportError:
        # A KServe whose package imports more of the client module than KServeClient: import it as it is.
        if getattr(sys.modules.get(_CLIENT_MODULE), "_facegate_stand_in", False):
            del sys.modules[_CLIENT_MODULE]
        for name in [n for n in sys.modules if n == "kserve" or n.startswith("kserve.")]:
            del sys.modules[name]
        return importlib.import_module("kserve")
