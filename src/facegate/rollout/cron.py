"""Scheduled work: the Argo ``CronWorkflow`` that re-evaluates the champion and reports drift.

Every night it (1) evaluates ``models:/facegate@champion`` on the newest labelled check-in pairs (a folder in the
object store: images plus a pairs file, written by the labelling process) and (2) runs ``facegate drift``
against the champion's reference scores (the ``scores.csv`` of its registration evaluation): PSI and KS of the
genuine and impostor score distributions, and TAR/FAR at the serving threshold. Both outputs go back to the object
store under ``<report prefix>/<workflow name>/``; the drift step fails the workflow when drift is found, so Argo's
own alerting (or a failed-workflow PrometheusRule) reports it.

Steps share nothing but the object store, so no artifact repository is assumed. Configuration comes from the
pipelines' ConfigMap (``MLFLOW_TRACKING_URI``, ``FACEGATE_STORAGE__URL``, ...) and credentials from Secrets as
``secretKeyRef`` environment variables, never from parameters. Parameters reach the scripts as environment
variables, never spliced into the shell text.

Written with hera (the maintained Argo SDK); ``python pipelines/reevaluate_cron.py`` writes the YAML beside it.
"""

from __future__ import annotations

from typing import Any

from facegate import __version__

__all__ = ["IMAGE", "NAME", "reevaluate_cron_workflow", "reevaluate_cron_yaml"]

NAME = "facegate-reevaluate"
IMAGE = f"ghcr.io/facegate/facegate-pipeline:{__version__}"
#: Shared with the KFP pipelines (pipelines/training.py), the Helm chart and manifests/: config and credentials.
ENV_CONFIGMAP = "facegate-pipeline-env"
S3_SECRET = (
    "facegate-s3",
    {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
)
SCHEDULE = "30 2 * * *"  # nightly, before the first exam session's check-ins

_REEVALUATE = """\
facegate data pull "$NEW_PAIRS" /work/new
facegate evaluate --model "$MODEL" --pairs "/work/new/$PAIRS_FILE" --images /work/new \\
  --target-far "$TARGET_FAR" --out /work/eval --no-record
facegate data push /work/eval "$REPORT_PREFIX/$RUN/eval"
"""

_DRIFT = """\
facegate data pull "$REPORT_PREFIX/$RUN/eval" /work/eval
facegate data pull "$REFERENCE" /work/reference
status=0
facegate drift /work/eval/scores.csv --reference /work/reference/scores.csv --model "$MODEL" \\
  --metrics /work/eval/metrics.json --out /work/drift --fail-on-drift || status=$?
facegate data push /work/drift "$REPORT_PREFIX/$RUN/drift"
exit "$status"
"""


def reevaluate_cron_workflow(*, schedule: str = SCHEDULE, image: str = IMAGE) -> Any:
    """The hera ``CronWorkflow``: a two-task DAG, re-evaluate then drift.

    Args:
        schedule: Cron schedule (UTC).
        image: The pipeline image (facegate installed).

    Returns:
        A ``hera.workflows.CronWorkflow``.
    """
    from hera.workflows import (
        DAG,
        ConfigMapEnvFrom,
        Container,
        CronWorkflow,
        Env,
        Parameter,
        Resources,
        SecretEnv,
        Task,
    )
    from hera.workflows.models import EmptyDirVolumeSource, Volume, VolumeMount

    params = {
        "model": "models:/facegate@champion",
        "new-pairs": "checkins/labelled/latest",
        "pairs-file": "pairs.csv",
        "reference": "reports/champion/reference-eval",
        "report-prefix": "reports/reevaluate",
        "target-far": "0.001",
    }
    secrets = [SecretEnv(name=env, secret_name=S3_SECRET[0], secret_key=key) for env, key in S3_SECRET[1].items()]

    def step(name: str, script: str, inputs: tuple[str, ...]) -> Container:
        env = [Env(name=p.upper().replace("-", "_"), value=f"{{{{inputs.parameters.{p}}}}}") for p in inputs]
        return Container(
            name=name,
            image=image,
            command=["sh", "-euc", script],
            inputs=[Parameter(name=p) for p in inputs],
            env=[
                *env,
                Env(name="RUN", value="{{workflow.name}}"),
                Env(name="FACEGATE_HOME", value="/work/home"),
                Env(name="MLFLOW_DISABLE_TELEMETRY", value="true"),
                *secrets,
            ],
            env_from=[ConfigMapEnvFrom(name=ENV_CONFIGMAP)],
            resources=Resources(cpu_request=2, cpu_limit=4, memory_request="4Gi", memory_limit="8Gi"),
            volume_mounts=[VolumeMount(name="work", mount_path="/work")],
        )

    with CronWorkflow(
        name=NAME,
        labels={"app.kubernetes.io/name": "facegate", "app.kubernetes.io/component": "reevaluate"},
        schedules=[schedule],
        timezone="UTC",
        concurrency_policy="Forbid",
        starting_deadline_seconds=3600,
        successful_jobs_history_limit=7,
        failed_jobs_history_limit=7,
        entrypoint="reevaluate-and-report",
        service_account_name="facegate-pipeline",
        active_deadline_seconds=4 * 3600,
        arguments=[Parameter(name=k, value=v) for k, v in params.items()],
        volumes=[Volume(name="work", empty_dir=EmptyDirVolumeSource(size_limit="20Gi"))],
    ) as cron:
        inputs = {
            "reevaluate": ("model", "new-pairs", "pairs-file", "report-prefix", "target-far"),
            "drift": ("model", "reference", "report-prefix"),
        }
        templates = {"reevaluate": step("reevaluate", _REEVALUATE, inputs["reevaluate"]),
                     "drift": step("drift", _DRIFT, inputs["drift"])}  # fmt: skip
        with DAG(name="reevaluate-and-report"):
            first, second = (
                templates[n](name=n, arguments={p: f"{{{{workflow.parameters.{p}}}}}" for p in inputs[n]})
                for n in ("reevaluate", "drift")
            )
            # Inside a DAG, calling a template makes a task.
            assert isinstance(first, Task)
            assert isinstance(second, Task)
            first >> second
    return cron


def reevaluate_cron_yaml() -> str:
    """The CronWorkflow as YAML (what ``pipelines/reevaluate_cron.yaml`` holds)."""
    import yaml

    obj = reevaluate_cron_workflow().to_dict()
    header = "# Generated by `python pipelines/reevaluate_cron.py` (facegate.rollout.cron); do not edit.\n"
    return header + str(yaml.safe_dump(obj, sort_keys=False, width=120))
