"""The exit handler's step: a failed or cancelled run recorded in MLflow."""

from __future__ import annotations

from facegate.pipeline.failures import record_pipeline_failure
from facegate.pipeline.steps._common import _settings


def record_failure_step(state: str, error: str, pipeline_run: str = "") -> str:
    """The exit handler: record a failed (or cancelled) run in MLflow, naming the step that failed and its error.

    Returns:
        The MLflow run id holding the record, or ``""`` when the pipeline succeeded.
    """
    return record_pipeline_failure(state, error, pipeline_run, home=_settings().home)
