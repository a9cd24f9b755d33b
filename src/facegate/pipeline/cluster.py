"""Heavy steps on the cluster: training as a Kubeflow Trainer ``TrainJob``, tuning as a KubeRay ``RayJob``.

A pipeline pod is one node; multi-node DDP over the V100 workers and a Ray cluster for tuning are jobs of their own.
The pipeline step builds the job, submits it, waits for it, and fetches what it left in object storage:

- ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) on the ``ClusterTrainingRuntime`` ``facegate-ddp-v100``
  (manifests/), ``numNodes`` x ``numProcPerNode`` torchrun processes. The training config travels in an
  environment variable (no ConfigMap to clean up); the bundle is pushed to ``<storage>/runs/<job>/model``.
- ``RayJob`` (``ray.io/v1``) submitted to the standing ``RayCluster`` ``facegate-tune`` (``clusterSelector``), so a
  search does not wait for a cluster to start; ``best_config.yaml`` lands in ``<storage>/runs/<job>/tune``.

Credentials reach the jobs as Secret references (``valueFrom.secretKeyRef``), never as values in the object.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facegate import __version__
from facegate.errors import FacegateError

__all__ = [
    "ClusterJobError",
    "ray_job",
    "run_ray_job",
    "run_train_job",
    "submit_and_wait",
    "train_job",
]

IMAGE = f"ghcr.io/facegate/facegate-pipeline:{__version__}"
NAMESPACE = "facegate-ml"
TRAIN_RUNTIME = "facegate-ddp-v100"
RAY_CLUSTER = "facegate-tune"
#: Environment every job gets from Secrets: object storage (bundles, datasets) and the MLflow server's address.
SECRET_ENV = {
    "AWS_ACCESS_KEY_ID": ("facegate-s3", "AWS_ACCESS_KEY_ID"),
    "AWS_SECRET_ACCESS_KEY": ("facegate-s3", "AWS_SECRET_ACCESS_KEY"),
}
CONFIG_ENV = ("MLFLOW_TRACKING_URI", "FACEGATE_STORAGE__URL", "FACEGATE_S3_ENDPOINT")
ENV_CONFIGMAP = "facegate-pipeline-env"


class ClusterJobError(FacegateError):
    """A cluster job failed, timed out, or could not be submitted."""

    code = "cluster_job_failed"


def _job_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%m%d%H%M')}-{uuid.uuid4().hex[:6]}"


def _env(config_yaml: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "FACEGATE_TRAIN_CONFIG", "value": config_yaml}]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for k, (secret, key) in SECRET_ENV.items()
    ]
    env += [
        {"name": k, "valueFrom": {"configMapKeyRef": {"name": ENV_CONFIGMAP, "key": k, "optional": True}}}
        for k in CONFIG_ENV
    ]
    return env


def _config_yaml(cfg: Any, output: str) -> str:
    import yaml

    data = cfg.to_dict()
    data["output"] = output
    return str(yaml.safe_dump(data, sort_keys=False))


def train_job(
    cfg: Any,
    *,
    name: str | None = None,
    namespace: str = NAMESPACE,
    nodes: int = 2,
    gpus_per_node: int = 1,
    image: str = IMAGE,
    runtime: str = TRAIN_RUNTIME,
) -> dict[str, Any]:
    """The ``TrainJob`` for a training config: torchrun on ``nodes`` x ``gpus_per_node`` GPUs, NCCL.

    The data path of ``cfg`` must be reachable from the workers (``s3://`` datasets are pulled first).
    """
    name = name or _job_name("facegate-train")
    prefix = f"runs/{name}"
    script = (
        'set -eu; printf "%s" "$FACEGATE_TRAIN_CONFIG" > /tmp/train.yaml; '
        f"facegate data pull {prefix}/inputs /work/inputs; "
        f"torchrun --nnodes {nodes} --nproc_per_node {gpus_per_node} -m facegate train /tmp/train.yaml; "
        # Rank 0 of node 0 holds the bundle; the other nodes have nothing to push.
        f'if [ "${{PET_NODE_RANK:-0}}" = 0 ]; then facegate data push /work/run/model {prefix}/model; fi'
    )
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "facegate", "app.kubernetes.io/component": "training"},
        },
        "spec": {
            "runtimeRef": {"name": runtime, "kind": "ClusterTrainingRuntime", "apiGroup": "trainer.kubeflow.org"},
            "trainer": {
                "image": image,
                "command": ["/bin/sh", "-c"],
                "args": [script],
                # The image reference (by digest when the caller pins one) is the run's image_digest tag.
                "env": [*_env(_config_yaml(cfg, "/work/run")), {"name": "FACEGATE_IMAGE", "value": image}],
                "numNodes": nodes,
                "numProcPerNode": gpus_per_node,
                "resourcesPerNode": {
                    "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": str(gpus_per_node)},
                    "limits": {"nvidia.com/gpu": str(gpus_per_node)},
                },
            },
        },
    }


def ray_job(
    cfg: Any,
    samples: int,
    *,
    name: str | None = None,
    namespace: str = NAMESPACE,
    cluster: str = RAY_CLUSTER,
) -> dict[str, Any]:
    """The ``RayJob`` running ``facegate tune`` on the standing ``RayCluster`` (KubeRay submits it)."""
    import yaml

    name = name or _job_name("facegate-tune")
    prefix = f"runs/{name}"
    entry = (
        'sh -c \'set -eu; printf "%s" "$FACEGATE_TRAIN_CONFIG" > /tmp/base.yaml; '
        f"facegate data pull {prefix}/inputs /home/ray/work/inputs; "
        f"facegate tune /tmp/base.yaml --samples {int(samples)} --out /home/ray/tune; "
        f"facegate data push /home/ray/tune {prefix}/tune'"
    )
    # The entrypoint runs on the Ray head, so the config rides in the job's runtime environment; credentials are
    # already on the RayCluster's pods (manifests/), never in this object.
    runtime_env = {
        "env_vars": {
            "FACEGATE_TRAIN_CONFIG": _config_yaml(cfg, "/home/ray/tune/run"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "facegate", "app.kubernetes.io/component": "tuning"},
        },
        "spec": {
            "entrypoint": entry,
            "clusterSelector": {"ray.io/cluster": cluster},
            "runtimeEnvYAML": yaml.safe_dump(runtime_env),
            "submissionMode": "K8sJobMode",
            "activeDeadlineSeconds": 24 * 3600,
            "ttlSecondsAfterFinished": 3600,
        },
    }


_DONE: dict[str, Callable[[dict[str, Any]], str | None]] = {
    # TrainJob: conditions Complete / Failed (JobSet-style).
    "TrainJob": lambda s: next(
        (
            c["type"]
            for c in s.get("conditions", [])
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        ),
        None,
    ),
    # RayJob: jobStatus SUCCEEDED / FAILED / STOPPED.
    "RayJob": lambda s: s.get("jobStatus") if s.get("jobStatus") in ("SUCCEEDED", "FAILED", "STOPPED") else None,
}
_OK = {"Complete", "SUCCEEDED"}


def submit_and_wait(
    obj: dict[str, Any],
    *,
    api: Any = None,
    timeout_s: float = 48 * 3600,
    poll_s: float = 30.0,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Create a TrainJob or RayJob and wait until it finishes.

    Args:
        obj: The job.
        api: A ``kubernetes.client.CustomObjectsApi`` (in-cluster config when omitted).
        timeout_s: Give up after this long.
        poll_s: Seconds between status reads.
        on_poll: Called with each status read (progress in the step's log).

    Returns:
        The job's final status.

    Raises:
        ClusterJobError: If it fails, times out, or cannot be created.
    """
    kind = obj["kind"]
    group, version = obj["apiVersion"].split("/")
    plural = kind.lower() + "s"
    meta = obj["metadata"]
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    try:
        api.create_namespaced_custom_object(group, version, meta["namespace"], plural, obj)
    except Exception as exc:  # the client raises ApiException and urllib3 errors; both mean "not submitted"
        raise ClusterJobError(f"cannot create {kind} {meta['name']}: {str(exc).splitlines()[0][:200]}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        cur = api.get_namespaced_custom_object(group, version, meta["namespace"], plural, meta["name"])
        status = dict(cur.get("status") or {})
        if on_poll is not None:
            on_poll(status)
        state = _DONE[kind](status)
        if state is not None:
            if state not in _OK:
                raise ClusterJobError(f"{kind} {meta['name']} ended {state}: {status.get('message', '')}"[:500])
            return status
        if time.monotonic() > deadline:
            raise ClusterJobError(f"{kind} {meta['name']} did not finish in {timeout_s:.0f} s", code="timeout")
        time.sleep(poll_s)


def _storage() -> Any:
    from facegate.config import load_settings
    from facegate.data.storage import open_storage

    settings = load_settings(os.environ.get("FACEGATE_CONFIG"))
    return open_storage(settings.storage_url(), endpoint_url=settings.storage.s3_endpoint)


def _progress(status: dict[str, Any]) -> None:
    print(f"[facegate] job status: {status.get('jobStatus') or [c.get('type') for c in status.get('conditions', [])]}")


def _stage_inputs(cfg: Any, prefix: str, workdir: str) -> Any:
    """Upload the step pod's inputs to object storage; return the config pointing where the job pulls them.

    A job's pods cannot see the step pod's files: training faces and validation pairs go under ``prefix/inputs``,
    and the config's paths are rewritten to ``workdir/inputs/...``, where the job's first command pulls them.
    """
    store = _storage()
    store.upload_dir(str(cfg.data.path), f"{prefix}/inputs/data")
    updates: dict[str, Any] = {"data": cfg.data.model_copy(update={"path": f"{workdir}/inputs/data"})}
    if cfg.val.kind == "pairs" and cfg.val.pairs:
        store.put_file(f"{prefix}/inputs/val/pairs{Path(str(cfg.val.pairs)).suffix}", Path(str(cfg.val.pairs)))
        if cfg.val.images:
            store.upload_dir(str(cfg.val.images), f"{prefix}/inputs/val/images")
        updates["val"] = cfg.val.model_copy(
            update={
                "pairs": f"{workdir}/inputs/val/pairs{Path(str(cfg.val.pairs)).suffix}",
                "images": f"{workdir}/inputs/val/images" if cfg.val.images else None,
            }
        )
    return cfg.model_copy(update=updates)


def run_train_job(cfg: Any, model_dir: str | Path, *, api: Any = None) -> dict[str, Any]:
    """Train on the GPU workers as a TrainJob (inputs staged in object storage) and fetch the bundle."""
    name = _job_name("facegate-train")
    obj = train_job(_stage_inputs(cfg, f"runs/{name}", "/work"), name=name)
    t0 = time.perf_counter()
    submit_and_wait(obj, api=api, on_poll=_progress)
    if not _storage().download_dir(f"runs/{name}/model", model_dir):
        raise ClusterJobError(f"TrainJob {name} left no bundle in runs/{name}/model")
    return {"steps": 0, "seconds": round(time.perf_counter() - t0, 1), "samples_per_second": 0.0, "job": name}


def run_ray_job(base: Any, samples: int, *, api: Any = None) -> tuple[dict[str, Any], float, int]:
    """Tune on the RayCluster as a RayJob; returns ``(best config, best accuracy, trials)``."""
    import json

    import yaml

    name = _job_name("facegate-tune")
    obj = ray_job(_stage_inputs(base, f"runs/{name}", "/home/ray/work"), samples, name=name)
    submit_and_wait(obj, api=api, on_poll=_progress)
    store = _storage()
    best = yaml.safe_load(store.get_bytes(f"runs/{name}/tune/best_config.yaml"))
    key = f"runs/{name}/tune/summary.json"
    summary = json.loads(store.get_bytes(key)) if store.exists(key) else {}
    return dict(best), float(summary.get("best_accuracy", float("nan"))), int(summary.get("trials", samples))
