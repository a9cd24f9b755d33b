"""One function per pipeline step: what each Kubeflow component in ``components/`` calls, and nothing else does.

Components only parse their typed artifacts and call exactly one function here, so every step runs (and is tested)
as a plain Python call too. Artifacts arrive duck-typed: a directory or file path, a ``metadata`` dict, and for
metrics the KFP ``Metrics.log_metric`` / ``ClassificationMetrics.log_roc_curve`` methods; anything with those
methods works (the tests pass small recorders).

Where state lives is the environment's business, never a parameter: ``FACEGATE_HOME`` (the embedded MLflow store,
the local object store, the gallery), ``MLFLOW_TRACKING_URI``, ``FACEGATE_SERVE__GALLERY_URL`` and the secrets
(``FACEGATE_GALLERY_KEYS``, ``AWS_*``) come from the pod's environment (Kubernetes Secrets on the cluster) or the
process running the local pipeline.

One module per stage of the pipeline (``ingest``, ``train``, ``evaluate``, ``export``, ``register``, ``gate``,
``rollout``, ``failure``); the components import every step from here.
"""

from __future__ import annotations

from facegate.pipeline.steps.evaluate import evaluate_step
from facegate.pipeline.steps.export import export_step
from facegate.pipeline.steps.failure import record_failure_step
from facegate.pipeline.steps.gate import gate_step
from facegate.pipeline.steps.ingest import ingest_step
from facegate.pipeline.steps.register import register_step
from facegate.pipeline.steps.rollout import analyze_canary_step, canary_step, finish_rollout_step, reindex_step
from facegate.pipeline.steps.train import config_text_step, train_step, tune_step

__all__ = [
    "analyze_canary_step",
    "canary_step",
    "config_text_step",
    "evaluate_step",
    "export_step",
    "finish_rollout_step",
    "gate_step",
    "ingest_step",
    "record_failure_step",
    "register_step",
    "reindex_step",
    "train_step",
    "tune_step",
]
