"""Which step failed, and why: a failing step leaves a note in MLflow that the pipeline's exit handler finds.

KFP hands the exit handler only a generic status (``Task exit-handler-1 failed.`` on the local runner, an empty
message on a cluster), so the step itself, which holds the exception, writes it down: :func:`records_failure` wraps
each step function, and when one raises inside a pipeline run it creates an MLflow run (status ``FAILED``, tags
``failed_step``, ``error_class``, ``error``) in the experiment ``facegate-pipelines`` before re-raising. The exit
handler (:func:`record_pipeline_failure`) then finds that note for its own pipeline run and completes it into the
run's failure record, so a failed pipeline still leaves exactly one MLflow run.

Both sides name the pipeline run without a new pipeline parameter (the compiled YAML stays as it was):

- on a cluster every Argo pod's name (``KFP_POD_NAME``, which KFP sets in each executor pod) begins with its
  workflow's name: a step tags its note with its pod's name, and the exit handler takes the workflow name off its
  own pod's name and looks for notes whose pod name begins with it;
- on a laptop :func:`local_run` (entered by ``facegate pipeline run --local``) gives every step subprocess of one
  run the same ``FACEGATE_PIPELINE_RUN_ID``.

Outside a pipeline run (a step called as a plain function, as most tests do) nothing is written. Writing the note
never replaces the step's own exception, and the message is the exception's first line with URL credentials and
the values of secret environment variables masked.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

__all__ = [
    "EXPERIMENT",
    "LOCAL_RUN_ENV",
    "find_step_failure",
    "local_run",
    "note_step_failure",
    "record_pipeline_failure",
    "records_failure",
    "safe_message",
]

EXPERIMENT = "facegate-pipelines"
LOCAL_RUN_ENV = "FACEGATE_PIPELINE_RUN_ID"
RUN_TAG = "facegate.run"  # the pod name (cluster) or the local run id: what ties a note to its pipeline run
MAX_MESSAGE = 500
# An executor pod is "<workflow>-<template>-<hash>" (Argo pod names v2) or "<workflow>-<hash>" (v1); KFP runs every
# container task on "system-container-impl", prefixed when the task has a retry policy or pod metadata.
_POD_NAME = re.compile(r"^(?P<workflow>.+?)(?:(?:-retry|-metadata-\d+-\d+)*-system-container-impl)?-\d+$")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|KEY|GALLERY_URL")

P = ParamSpec("P")
R = TypeVar("R")


def _say(text: str) -> None:
    print(f"[facegate] {text}", flush=True)


def _marker() -> str:
    """What this process tags a note with: the local run id, or this pod's name on a cluster ("" outside a run)."""
    return os.environ.get(LOCAL_RUN_ENV) or os.environ.get("KFP_POD_NAME", "")


def _run_prefix() -> str:
    """What the exit handler looks for: the local run id, or ``<workflow>-`` taken off its own pod's name."""
    if os.environ.get(LOCAL_RUN_ENV):
        return os.environ[LOCAL_RUN_ENV]
    found = _POD_NAME.match(os.environ.get("KFP_POD_NAME", ""))
    return f"{found['workflow']}-" if found else ""


@contextlib.contextmanager
def local_run() -> Iterator[str]:
    """Give the step subprocesses started inside this block one pipeline-run id (restored afterwards).

    Yields:
        The id.
    """
    previous = os.environ.get(LOCAL_RUN_ENV)
    os.environ[LOCAL_RUN_ENV] = run_id = uuid.uuid4().hex
    try:
        yield run_id
    finally:
        if previous is None:
            os.environ.pop(LOCAL_RUN_ENV, None)
        else:
            os.environ[LOCAL_RUN_ENV] = previous


def safe_message(exc: BaseException) -> str:
    """``Class: first line of the message``, at most 500 characters, with credentials and secret values masked."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = _URL_CREDENTIALS.sub("***@", text)
    for name, value in os.environ.items():
        # Short values ("1", "true") would mask ordinary words; no secret is that short.
        if _SECRET_ENV.search(name) and len(value) >= 8 and value in text:
            text = text.replace(value, "***")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:MAX_MESSAGE]


def _client(home: str | Path) -> tuple[Any, str]:
    from mlflow import MlflowClient

    from facegate.registry.tracking import ensure_experiment, tracking_uri

    exp = ensure_experiment(EXPERIMENT, home)
    return MlflowClient(tracking_uri=tracking_uri(home)), exp


def _home() -> Path:
    from facegate.config import load_settings

    return load_settings(os.environ.get("FACEGATE_CONFIG")).home


def note_step_failure(step: str, exc: BaseException, *, home: str | Path | None = None) -> str:
    """Write down that ``step`` failed with ``exc``, for the exit handler of the same pipeline run.

    Returns:
        The note's MLflow run id, or ``""`` outside a pipeline run or when MLflow could not be reached (the step's
        own exception matters more than its note, so a note that fails is only said, never raised).
    """
    marker = _marker()
    if not marker:
        return ""
    try:
        client, exp = _client(_home() if home is None else home)
        message = safe_message(exc)
        tags = {
            "facegate.kind": "step-failure",
            RUN_TAG: marker,
            "failed_step": step,
            "error_class": type(exc).__name__,
            "error": message,
        }
        run = client.create_run(exp, run_name=f"{step} failed", tags=tags)
        client.set_terminated(run.info.run_id, "FAILED")
    except Exception as err:  # whatever went wrong here, the step's own exception must stay the one raised
        _say(f"could not note the failure of {step} in MLflow: {type(err).__name__}")
        return ""
    _say(f"{step} failed: {message} (noted in MLflow run {run.info.run_id})")
    return str(run.info.run_id)


def records_failure(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a step function: an exception it raises in a pipeline run is noted (:func:`note_step_failure`).

    The step's name is the function's without ``_step``, dashed like KFP's task names (``analyze_canary_step`` ->
    ``analyze-canary``).
    """
    step = fn.__name__.removesuffix("_step").replace("_", "-")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            note_step_failure(step, exc)
            raise

    return wrapper


def find_step_failure(prefix: str, *, home: str | Path | None = None) -> Any | None:
    """The earliest unclaimed step-failure note of the pipeline run whose notes are tagged ``prefix...``.

    Returns:
        The MLflow ``Run``, or ``None``.
    """
    if not prefix or "'" in prefix:
        return None
    client, exp = _client(_home() if home is None else home)
    query = f"tags.`{RUN_TAG}` LIKE '{prefix}%' AND tags.`facegate.kind` = 'step-failure'"
    runs = client.search_runs([exp], filter_string=query, order_by=["attributes.start_time ASC"], max_results=20)
    return runs[0] if runs else None


def record_pipeline_failure(state: str, error: str, pipeline_run: str = "", *, home: str | Path | None = None) -> str:
    """The exit handler: record a failed (or cancelled) pipeline run in MLflow, naming the step that failed.

    The failing step's note becomes the record (tagged ``pipeline-failure``, ``state``, ``pipeline_run``); without
    one (a pod killed before Python could write, a run outside ``facegate pipeline run``) a new run records KFP's
    own status, ``failed_step`` ``unknown``.

    Returns:
        The MLflow run id holding the record, or ``""`` when the pipeline succeeded.
    """
    if state.upper() in ("SUCCEEDED", "SUCCESS"):
        _say("pipeline succeeded")
        return ""
    home = _home() if home is None else home
    client, exp = _client(home)
    tags = {"facegate.kind": "pipeline-failure", "state": state, "pipeline_run": pipeline_run}
    tags["mlflow.runName"] = f"failed {pipeline_run}".strip()
    note = find_step_failure(_run_prefix(), home=home)
    if note is None:
        run_id = client.create_run(exp, tags={**tags, "failed_step": "unknown", "error_class": "unknown"}).info.run_id
        client.set_terminated(run_id, "FAILED")
        detail = error or "(no message)"
    else:
        run_id = note.info.run_id
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        detail = f"{note.data.tags['error']}\n(KFP: {error or 'no message'})"
    client.log_text(run_id, detail, "error.txt")
    _say(f"pipeline {state}: {detail.splitlines()[0]}; recorded in MLflow run {run_id}")
    return str(run_id)
