"""One place that imports KServe.

``kserve.model_server`` parses ``sys.argv`` with argparse when it is imported, so ``facegate serve --model X`` would
be read as KServe's ``--model_name`` (argparse accepts unique prefixes) and an ambiguous prefix would exit the
process. The import runs with a bare ``argv``; everything else in facegate imports KServe names from here.
"""

from __future__ import annotations

import sys
from typing import Any

_saved = sys.argv
sys.argv = _saved[:1]
try:
    import kserve
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
    from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints
finally:
    sys.argv = _saved

Model = kserve.Model
_HISTOGRAMS: dict[str, tuple[Any, Any, Any]] = {}


def latency_histograms(model_name: str) -> tuple[Any, Any, Any]:
    """KServe's pre/predict/post latency histograms of a model (``Model.__call__`` records them), looked up once."""
    found = _HISTOGRAMS.get(model_name)
    if found is None:
        labels = get_labels(model_name)
        pre, predict, post = (h.labels(**labels) for h in (PRE_HIST_TIME, PREDICT_HIST_TIME, POST_HIST_TIME))
        found = _HISTOGRAMS[model_name] = (pre, predict, post)
    return found


__all__ = [
    "DataPlane",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InvalidInput",
    "Model",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRepository",
    "ModelRepositoryExtension",
    "RequestedOutput",
    "latency_histograms",
    "register_v1_endpoints",
    "register_v2_endpoints",
]
