"""Training pipeline: ingest → train → evaluate → export → register → gate + group report → reindex → canary.

``python pipelines/training.py`` compiles it to ``pipelines/training.yaml`` beside this file (a test checks that
the committed YAML is what this writes). ``facegate pipeline run training [--local]`` runs it: on a laptop with
kfp's SubprocessRunner, on the cluster through ``kfp.Client``.

Cluster wiring comes from kfp-kubernetes, never from parameters: object-storage and gallery credentials are
Kubernetes Secrets exposed as environment variables, the MLflow and gallery addresses a ConfigMap, and the train
step lands on the V100 workers through a node selector and a toleration.
"""

import sys
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `components` when run as a script

from components import steps

NAME = "facegate-training"
#: A small raw set every facegate image carries is not a thing; the demo and the tests pass their own URI.
DEFAULT_DATASET = "s3://facegate-datasets/checkin/raw"
DEFAULT_SETS = ["holdout"]
#: How much a challenger may widen the gaps between groups (docs/fairness.md); used when group_labels is set.
DEFAULT_FAIRNESS_MARGINS = ["fnmr_ratio=0.25", "fmr_ratio=0.5", "fdr=0.01"]
# Names shared with manifests/ (the Kubeflow profile namespace holds them).
ENV_CONFIGMAP = "facegate-pipeline-env"
ENV_KEYS = (
    "MLFLOW_TRACKING_URI",
    "FACEGATE_MLFLOW_ARTIFACTS_DESTINATION",
    "FACEGATE_STORAGE__URL",
    "FACEGATE_S3_ENDPOINT",
    "FACEGATE_PROMETHEUS_URL",
)
# Secrets of the same names as the Helm chart's `secrets.*.existingSecret` defaults (created by the operator).
SECRETS = {
    "facegate-s3": {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
    "facegate-gallery-db": {"url": "FACEGATE_SERVE__GALLERY_URL"},
    "facegate-gallery-keys": {"keys": "FACEGATE_GALLERY_KEYS"},
}
GALLERY_SECRETS = ("facegate-gallery-db", "facegate-gallery-keys")
GPU_NODE = ("nvidia.com/gpu.product", "Tesla-V100-PCIE-32GB")
#: Shard ids of the gallery reindex: one 2-CPU pod each (docs/performance-eval.md: 150,000 photos by shard count).
#: `facegate pipeline run --local` passes [0]: on a laptop more processes only compete for the same cores.
DEFAULT_REINDEX_SHARDS = [0, 1, 2]


def wire(
    task: dsl.PipelineTask, *, cpu: str = "2", memory: str = "8G", gallery: bool = False, gpu: bool = False
) -> dsl.PipelineTask:
    """Resources, the shared ConfigMap and the Secrets a step needs (only the gallery steps see its key).

    A ``gpu`` step asks for one GPU and lands on the V100 workers (node selector + the GPU taint's toleration).
    """
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.use_config_map_as_env(task, ENV_CONFIGMAP, {k: k for k in ENV_KEYS})
    for name, keys in SECRETS.items():
        if name not in GALLERY_SECRETS or gallery:
            kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=keys)
    if gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        kubernetes.add_node_selector(task, label_key=GPU_NODE[0], label_value=GPU_NODE[1])
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    task.set_caching_options(False)  # every step writes to MLflow or the cluster: a cached replay would lie
    return task


def evaluate_export_register(
    ing: dsl.PipelineTask, tr: dsl.PipelineTask, sets: Any, target_far: Any
) -> dsl.PipelineTask:
    """The steps every pipeline runs after training: evaluate → export → register (as ``challenger``)."""
    ev = wire(
        steps.evaluate(
            sets=sets, target_far=target_far, model=tr.outputs["model"], holdout=ing.outputs["holdout_data"]
        ),
        cpu="4",
    )
    ex = wire(
        steps.export(
            sets=sets,
            target_far=target_far,
            model=ev.outputs["evaluated_model"],
            faces=ing.outputs["train_data"],
            holdout=ing.outputs["holdout_data"],
        ),
        cpu="4",
        memory="16G",
    )
    return wire(
        steps.register(
            training=tr.outputs["Output"],
            evaluation=ev.outputs["Output"],
            pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            model=ex.outputs["exported_model"],
        ),
        cpu="1",
        memory="2G",
    )


@dsl.pipeline(name=NAME, description="Train, evaluate, export and register a face model; canary it if it wins.")
def training(
    dataset_uri: str = DEFAULT_DATASET,
    config: str = "configs/tiny_cpu.yaml",
    overrides: list = [],  # noqa: B006 (KFP reads defaults from the signature)
    verification_sets: list = DEFAULT_SETS,
    target_far: float = 1e-3,
    gate_margin: float = 0.0,
    group_labels: str = "",
    fairness_margins: list = DEFAULT_FAIRNESS_MARGINS,
    canary_percent: int = 10,
    holdout_per_identity: int = 2,
    train_backend: str = "local",
    rollout_target: str = "cluster",
    reindex_shards: list = DEFAULT_REINDEX_SHARDS,
) -> None:
    """The training pipeline (parameters as in the README's Pipelines section)."""
    on_exit = wire(steps.record_failure(pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), cpu="1", memory="2G")
    with dsl.ExitHandler(on_exit, name="facegate-training-run"):
        ing = wire(steps.ingest(dataset_uri=dataset_uri, holdout_per_identity=holdout_per_identity), cpu="4")
        tr = steps.train(config=config, overrides=overrides, backend=train_backend, data=ing.outputs["train_data"])
        wire(tr, cpu="8", memory="64G", gpu=True)
        reg = evaluate_export_register(ing, tr, verification_sets, target_far)
        gate = wire(
            steps.gate(
                challenger=reg.outputs["Output"],
                sets=verification_sets,
                target_far=target_far,
                margin=gate_margin,
                group_labels=group_labels,
                fairness_margins=fairness_margins,
                holdout=ing.outputs["holdout_data"],
            ),
            cpu="4",
        )
        wire(
            steps.group_report(
                model=reg.output, sets=verification_sets, group_labels=group_labels, holdout=ing.outputs["holdout_data"]
            ),
            cpu="4",
        )
        with dsl.If(gate.outputs["Output"] == "promote", name="challenger-wins"):
            # The gallery is reindexed in len(reindex_shards) pods side by side, each the same library function on its
            # share of the students (facegate.serve.reindex); a retried pod resumes where it stopped.
            with dsl.ParallelFor(items=reindex_shards, name="reindex-shards") as shard:
                rx = wire(steps.reindex(model=reg.output, shard=shard, shard_ids=reindex_shards), gallery=True)
            can = wire(steps.canary(model=reg.output, percent=canary_percent, target=rollout_target), gallery=True)
            can.after(rx)  # templates first: a canary without them is refused anyway
            an = wire(
                steps.analyze_canary(
                    model=reg.output,
                    percent=canary_percent,
                    target=rollout_target,
                    holdout=ing.outputs["holdout_data"],
                ),
                gallery=True,
            )
            an.after(can)
            wire(steps.finish_rollout(decision=an.outputs["Output"], model=reg.output, target=rollout_target), cpu="1")


if __name__ == "__main__":
    compiler.Compiler().compile(training, str(Path(__file__).with_suffix(".yaml")))
