"""KFP v2 lightweight components: each parses its typed artifacts and calls exactly one ``facegate`` function.

No logic lives here (a test checks that each body is one import from ``facegate`` and one call). KFP copies each
function's source into the pod, so the import sits inside the body; the image (``BASE_IMAGE``) has facegate and kfp
installed, so nothing is pip-installed at run time (``install_kfp_package=False``), which is also what lets the
local SubprocessRunner run them offline.
"""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components import BASE_IMAGE

component = dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)


@component
def ingest(
    dataset_uri: str,
    holdout_per_identity: int,
    train_data: Output[Dataset],
    holdout_data: Output[Dataset],
    metrics: Output[Metrics],
) -> str:
    """Detect and align the raw photos; split off held-out faces. Returns the training set's version."""
    from facegate.pipeline.steps import ingest_step

    return ingest_step(
        dataset_uri,
        train_data.path,
        holdout_data.path,
        holdout_per_identity=holdout_per_identity,
        metrics=metrics,
        train_metadata=train_data.metadata,
        holdout_metadata=holdout_data.metadata,
    )["dataset_version"]


@component
def train(
    config: str, overrides: list, backend: str, data: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
) -> dict:
    """Train the backbone (in the pod, or as a Kubeflow Trainer TrainJob). Returns the run's summary."""
    from facegate.pipeline.steps import train_step

    return train_step(
        config, overrides, data.path, model.path, backend=backend, metrics=metrics, model_metadata=model.metadata
    )


@component
def tune(
    config: str,
    overrides: list,
    samples: int,
    backend: str,
    data: Input[Dataset],
    holdout: Input[Dataset],
    best_config: Output[Dataset],
    metrics: Output[Metrics],
) -> dict:
    """Ray Tune search (Ray in the pod, or a KubeRay RayJob) validated on the held-out faces."""
    from facegate.pipeline.steps import tune_step

    return tune_step(
        config,
        overrides,
        data.path,
        best_config.path,
        holdout_dir=holdout.path,
        samples=samples,
        backend=backend,
        metrics=metrics,
    )


@component
def best_config_text(best_config: Input[Dataset]) -> str:
    """The tuned config as text, the training step's `config` parameter."""
    from facegate.pipeline.steps import config_text_step

    return config_text_step(best_config.path)


@component
def evaluate(
    sets: list,
    target_far: float,
    model: Input[Model],
    holdout: Input[Dataset],
    evaluated_model: Output[Model],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
) -> dict:
    """Evaluate on every verification set; the evaluated bundle carries its threshold. Returns metrics per set."""
    from facegate.pipeline.steps import evaluate_step

    return evaluate_step(
        model.path,
        sets,
        evaluated_model.path,
        holdout_dir=holdout.path,
        target_far=target_far,
        metrics=metrics,
        roc=roc,
        report_path=report.path,
    )


@component
def export(
    sets: list,
    target_far: float,
    model: Input[Model],
    faces: Input[Dataset],
    holdout: Input[Dataset],
    exported_model: Output[Model],
    metrics: Output[Metrics],
) -> dict:
    """OpenVINO FP32 + INT8 behind the parity and accuracy gates; outputs the bundle to serve."""
    from facegate.pipeline.steps import export_step

    return export_step(
        model.path,
        faces.path,
        exported_model.path,
        sets=sets,
        holdout_dir=holdout.path,
        target_far=target_far,
        metrics=metrics,
        model_metadata=exported_model.metadata,
    )


@component
def register(training: dict, evaluation: dict, pipeline_run: str, model: Input[Model]) -> str:
    """Register the bundle in MLflow as a new version with alias `challenger`. Returns models:/facegate/N."""
    from facegate.pipeline.steps import register_step

    return register_step(model.path, training=training, evaluation=evaluation, pipeline_run=pipeline_run)


@component
def gate(
    challenger: str,
    sets: list,
    target_far: float,
    margin: float,
    group_labels: str,
    fairness_margins: list,
    holdout: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> str:
    """Champion vs challenger on the same pairs: margin + McNemar + paired bootstrap + equal treatment."""
    from facegate.pipeline.steps import gate_step

    return gate_step(
        challenger,
        sets,
        holdout_dir=holdout.path,
        target_far=target_far,
        margin=margin,
        metrics=metrics,
        report_path=report.path,
        group_labels=group_labels,
        fairness_margins=fairness_margins,
    )


@component
def group_report(
    model: str,
    sets: list,
    group_labels: str,
    holdout: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> dict:
    """Per-group error rates of the registered version at its threshold (HTML + groups.json metadata, MLflow)."""
    from facegate.pipeline.fairness import group_report_step

    return group_report_step(
        model,
        sets,
        group_labels,
        holdout_dir=holdout.path,
        metrics=metrics,
        report_path=report.path,
        report_metadata=report.metadata,
    )


@component
def reindex(model: str, shard: int, shard_ids: list) -> int:
    """Gallery templates for the new version, one shard of the students (of ``len(shard_ids)``), before traffic."""
    from facegate.pipeline.steps import reindex_step

    return reindex_step(model, shard=shard, shard_ids=shard_ids)


@component
def canary(model: str, percent: int, target: str, manifest: Output[Dataset]) -> str:
    """Start the KServe canary (refused without templates)."""
    from facegate.pipeline.steps import canary_step

    return canary_step(model, percent, target=target, manifest_path=manifest.path)


@component
def analyze_canary(
    model: str, percent: int, target: str, holdout: Input[Dataset], metrics: Output[Metrics], report: Output[Markdown]
) -> str:
    """Canary vs champion in production metrics. Returns promote | rollback."""
    from facegate.pipeline.steps import analyze_canary_step

    return analyze_canary_step(
        model, percent=percent, target=target, photos_dir=holdout.path, report_path=report.path, metrics=metrics
    )


@component
def finish_rollout(decision: str, model: str, target: str) -> str:
    """Promote (alias champion, canary field removed) or roll back."""
    from facegate.pipeline.steps import finish_rollout_step

    return finish_rollout_step(decision, model, target=target)


@component
def record_failure(status: dsl.PipelineTaskFinalStatus, pipeline_run: str) -> str:
    """Exit handler: a failed or cancelled run is recorded in MLflow."""
    from facegate.pipeline.steps import record_failure_step

    return record_failure_step(status.state, status.error_message or "", pipeline_run)
