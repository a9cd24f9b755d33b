"""The tuning pipeline: ingest → Ray Tune search → train the best config → evaluate → export → register.

``python pipelines/tuning.py`` compiles it to ``pipelines/tuning.yaml``. The search runs Ray in the step's own
process on a laptop (``tune_backend=local``) and as a KubeRay ``RayJob`` on the standing ``RayCluster`` on the
cluster (``tune_backend=rayjob``). The best configuration feeds a training run whose bundle is registered as the
challenger; promoting it is the training pipeline's gate and canary (run it with ``config`` = the best config).
"""

import sys
from pathlib import Path

from kfp import compiler, dsl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `components` and `pipelines` when run as a script

from components import steps

from pipelines.training import DEFAULT_DATASET, DEFAULT_SETS, evaluate_export_register, wire

NAME = "facegate-tuning"


@dsl.pipeline(name=NAME, description="Search training hyperparameters with Ray Tune, then train the best config.")
def tuning(
    dataset_uri: str = DEFAULT_DATASET,
    config: str = "configs/tiny_cpu.yaml",
    overrides: list = [],  # noqa: B006 (KFP reads defaults from the signature)
    samples: int = 4,
    verification_sets: list = DEFAULT_SETS,
    target_far: float = 1e-3,
    holdout_per_identity: int = 2,
    tune_backend: str = "local",
    train_backend: str = "local",
) -> None:
    """The tuning pipeline."""
    on_exit = wire(steps.record_failure(pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), cpu="1", memory="2G")
    with dsl.ExitHandler(on_exit, name="facegate-tuning-run"):
        ing = wire(steps.ingest(dataset_uri=dataset_uri, holdout_per_identity=holdout_per_identity), cpu="4")
        search = wire(
            steps.tune(
                config=config,
                overrides=overrides,
                samples=samples,
                backend=tune_backend,
                data=ing.outputs["train_data"],
                holdout=ing.outputs["holdout_data"],
            ),
            cpu="4",
            memory="16G",
        )
        best = steps.best_config_text(best_config=search.outputs["best_config"])
        wire(best, cpu="1", memory="1G")
        tr = steps.train(config=best.output, overrides=[], backend=train_backend, data=ing.outputs["train_data"])
        wire(tr, cpu="8", memory="64G", gpu=True)
        evaluate_export_register(ing, tr, verification_sets, target_far)


if __name__ == "__main__":
    compiler.Compiler().compile(tuning, str(Path(__file__).with_suffix(".yaml")))
