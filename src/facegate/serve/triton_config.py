"""Triton's model configuration and statistics routes, for the discovery tools of tritonclient.

- ``GET /v2/models/{name}/config``: the model as Triton's ``ModelConfig`` JSON: ``name``, ``platform`` and
  ``backend``, ``max_batch_size``, ``input`` and ``output`` (``data_type`` as ``TYPE_*``, ``dims``). The dims are
  the shapes the model metadata declares, with ``max_batch_size`` 0: in Triton's terms the batch dimension is
  explicit (``embed`` takes ``[-1]`` images, the verifier one). The server-side micro-batcher and the per-request
  image limit are given as ``parameters``. Open, like the metadata.
- ``GET /v2/models/{name}/stats`` and ``GET /v2/models/stats``: Triton's statistics JSON, from counters the
  gatekeeper keeps per model for every admitted inference request: ``success`` and ``fail`` (count and total
  nanoseconds, from the request's arrival to its answer), ``inference_count``, ``execution_count`` (one per
  request) and ``last_inference`` (milliseconds since the epoch). Queue and compute breakdowns are not measured
  per model and are not reported. A kiosk or admin key is required: traffic figures are not for anyone who can
  reach the port (Prometheus's ``/metrics`` has its own loopback listener for the same reason).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from facegate.serve.kserve_compat import ModelRepository

__all__ = ["ModelStats", "install_triton_routes", "is_stats_path", "model_config"]

#: Open Inference Protocol datatypes as Triton's ModelConfig data types.
TRITON_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}
_STATS_PATH = re.compile(r"/v2/models/(?:[^/]+/)?stats/?")
_INFER_PATH = re.compile(r"/v2/models/([^/]+)/infer/?|/v1/models/([^/:]+):predict")


def is_stats_path(path: str) -> bool:
    """Whether ``path`` is a statistics route (served to any valid key)."""
    return _STATS_PATH.fullmatch(path) is not None


class ModelStats:
    """Per-model request counters for Triton's statistics (thread-safe; recorded by the gatekeeper)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, dict[str, int]] = {}

    def record(self, path: str, status: int, seconds: float) -> None:
        """Count one answered inference request on ``path`` (a 2xx is a success, anything else a failure)."""
        m = _INFER_PATH.fullmatch(path)
        if m is None:
            return
        name = m.group(1) or m.group(2)
        outcome = "success" if 200 <= status < 300 else "fail"
        with self._lock:
            c = self._by_model.setdefault(name, {"success": 0, "success_ns": 0, "fail": 0, "fail_ns": 0, "last": 0})
            c[outcome] += 1
            c[outcome + "_ns"] += int(seconds * 1e9)
            c["last"] = int(time.time() * 1000)

    def snapshot(self, name: str) -> dict[str, Any]:
        """Triton's ``model_stats`` entry for ``name``."""
        with self._lock:
            c = dict(self._by_model.get(name) or {"success": 0, "success_ns": 0, "fail": 0, "fail_ns": 0, "last": 0})
        return {
            "name": name,
            "version": "1",
            "last_inference": c["last"],
            "inference_count": c["success"],
            "execution_count": c["success"],
            "inference_stats": {
                "success": {"count": c["success"], "ns": c["success_ns"]},
                "fail": {"count": c["fail"], "ns": c["fail_ns"]},
            },
            "batch_stats": [],
        }


def _tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": s["name"], "data_type": TRITON_TYPES.get(s["datatype"], "TYPE_INVALID"), "dims": list(s["shape"])}
        for s in specs
    ]


def model_config(model: Any) -> dict[str, Any]:
    """Triton's ``ModelConfig`` JSON for a served facegate model (its metadata, in Triton's terms)."""
    runtime = model.runtime
    sv = runtime.settings.serve
    params = {
        "embedder": runtime.embedder.name,
        "embedder_version": runtime.embedder.version,
        "server_micro_batch_max": sv.max_batch,
        "server_micro_batch_wait_ms": sv.batch_wait_ms,
    }
    if model.name == "embed":
        from facegate.serve.models import MAX_EMBED_IMAGES

        params["max_images_per_request"] = MAX_EMBED_IMAGES
    return {
        "name": model.name,
        "platform": "",
        "backend": "python",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 0,
        "input": _tensors(model.get_input_types()),
        "output": _tensors(model.get_output_types()),
        "parameters": {k: {"string_value": str(v)} for k, v in params.items()},
    }


def install_triton_routes(app: FastAPI, repo: ModelRepository, stats: ModelStats) -> None:
    """Add the configuration and statistics routes (before KServe's ``/v2/models/{name}``)."""

    def missing(name: str) -> JSONResponse:
        return JSONResponse({"error": f"Model with name {name} does not exist.", "code": "model_not_found"}, 404)

    async def config(model_name: str) -> Any:
        model = repo.get_model(model_name)
        return missing(model_name) if model is None else model_config(model)

    async def all_stats() -> Any:
        return {"model_stats": [stats.snapshot(name) for name in sorted(repo.get_models())]}

    async def one_stats(model_name: str) -> Any:
        if repo.get_model(model_name) is None:
            return missing(model_name)
        return {"model_stats": [stats.snapshot(model_name)]}

    app.add_api_route("/v2/models/stats", all_stats, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/config", config, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/stats", one_stats, methods=["GET"])
