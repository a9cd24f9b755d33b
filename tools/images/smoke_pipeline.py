"""Run one real pipeline component in the built pipeline image, the way KFP runs it.

    .venv/bin/python tools/images/smoke_pipeline.py [--image ghcr.io/facegate/facegate-pipeline:0.1.0-cpu]

The evaluate step, with the command and arguments of `exec-evaluate` in the compiled pipelines/training.yaml
(`sh -ec '... python3 -m kfp.dsl.executor_main ...'` with the component's source), an executor input written as
the KFP launcher writes it, on a small held-out set (a few identities of ../shared's aligned LFW faces) and the
OpenVINO bundle that smoke_serve.py exports. Checks the exit status and every output the step declares, and that
the rollout executor's helm (tools/images/helm.pins) and chart are in the image; prints one JSON object (seconds,
metrics, helm version, load average). Starts and removes only its own container.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smoke_serve import PODMAN, REPO, SHARED, bundle, check, smoke_main

IDENTITIES = 6  # with 3 faces each: 18 genuine pairs and a few hundred impostors, a few seconds of work
FACES = 3


def kfp_container(step: str = "evaluate") -> dict[str, Any]:
    """The executor container (command, args, image) KFP runs for ``step``, from the compiled pipeline."""
    docs = yaml.safe_load_all((REPO / "pipelines" / "training.yaml").read_text(encoding="utf-8"))
    spec = next(d for d in docs if "deploymentSpec" in d)  # the pipeline spec; the platform spec follows
    return dict(spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"])


def artifact(name: str, schema: str, uri: str) -> dict[str, Any]:
    """One artifact of an executor input."""
    return {"artifacts": [{"name": name, "type": {"schemaTitle": schema, "schemaVersion": "0.0.1"}, "uri": uri,
                           "metadata": {}}]}  # fmt: skip


def executor_input() -> dict[str, Any]:
    """What the KFP launcher hands the evaluate step, with paths inside the container."""
    return {
        "inputs": {
            "parameterValues": {"sets": ["holdout"], "target_far": 0.01},
            "artifacts": {
                "model": artifact("model", "system.Model", "/in/model"),
                "holdout": artifact("holdout", "system.Dataset", "/in/holdout"),
            },
        },
        "outputs": {
            "artifacts": {
                "evaluated_model": artifact("evaluated_model", "system.Model", "/out/evaluated_model"),
                "metrics": artifact("metrics", "system.Metrics", "/out/metrics"),
                "roc": artifact("roc", "system.ClassificationMetrics", "/out/roc"),
                "report": artifact("report", "system.HTML", "/out/report.html"),
            },
            "parameters": {"Output": {"outputFile": "/out/Output"}},
            "outputFile": "/out/executor_output.json",
        },
    }


def holdout(dst: Path) -> Path:
    """A small aligned held-out set: the first IDENTITIES LFW identities with at least FACES faces."""
    lfw = SHARED / "data" / "lfw-aligned"
    check(lfw.is_dir(), f"needs {lfw} (../shared beside the checkout)")
    shutil.rmtree(dst, ignore_errors=True)
    taken = 0
    for person in sorted(p for p in lfw.iterdir() if p.is_dir()):
        faces = sorted(f for f in person.iterdir() if f.suffix.lower() in (".jpg", ".png"))
        if len(faces) >= FACES:
            (dst / person.name).mkdir(parents=True)
            for f in faces[:FACES]:
                shutil.copy(f, dst / person.name / f.name)
            taken += 1
            if taken == IDENTITIES:
                break
    return dst


def executor_tools(image: str) -> str:
    """The rollout executor's tools in ``image``: helm at the pinned version and the chart at the image's version.

    Returns:
        The helm version.
    """
    pins = dict(line.split("=", 1) for line in (REPO / "tools" / "images" / "helm.pins").read_text().splitlines()
                if line and not line.startswith("#"))  # fmt: skip
    script = "helm version --template '{{.Version}}'; echo; sed -n 's/^version: //p' /opt/facegate/chart/Chart.yaml"
    cmd = [PODMAN, "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603 (our own argv)
    check(res.returncode == 0, f"helm in {image}: {(res.stdout + res.stderr)[-2000:]}")
    helm, chart = res.stdout.split()[:2]
    check(helm == pins["HELM_IMAGE_VERSION"], f"{image} has helm {helm}, pinned {pins['HELM_IMAGE_VERSION']}")
    ours = (REPO / "helm" / "facegate" / "Chart.yaml").read_text().split("\nversion: ", 1)[1].split()[0]
    check(chart == ours, f"{image} carries chart {chart}, the checkout's is {ours}")
    return helm


def run(image: str) -> dict[str, Any]:
    """Run the evaluate step in ``image``; returns the figures."""
    helm = executor_tools(image)
    work = REPO / "build" / "images" / "smoke-pipeline"
    model = bundle(REPO / "build" / "images")
    faces = holdout(work / "holdout")
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    out.chmod(0o777)  # the image runs as uid 10001
    container = kfp_container()
    check(container["image"].startswith("ghcr.io/facegate/facegate-pipeline:"), "exec-evaluate runs another image")
    args = [json.dumps(executor_input()) if a == "{{$}}" else a for a in container["args"]]
    name = f"facegate-smoke-pipeline-{int(time.time())}"
    cmd = [PODMAN, "run", "--rm", "--name", name, "--network", "none",
           "-v", f"{model}:/in/model:ro", "-v", f"{faces}:/in/holdout:ro", "-v", f"{out}:/out",
           "--entrypoint", json.dumps(container["command"][:1]), image, *container["command"][1:], *args]  # fmt: skip
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603 (our own argv)
    finally:
        subprocess.run([PODMAN, "rm", "-f", "-t", "0", name], capture_output=True, check=False)  # noqa: S603
    secs = time.monotonic() - t0
    check(res.returncode == 0, f"evaluate step exited {res.returncode}:\n{(res.stdout + res.stderr)[-3000:]}")
    executor_output = json.loads((out / "executor_output.json").read_text())
    returned = executor_output["parameterValues"]["Output"]  # the step's return value, as KFP reads it back
    check("holdout" in returned and 0.5 <= returned["holdout"]["accuracy"] <= 1.0, f"step returned {returned}")
    check((out / "report.html").read_text().lstrip().lower().startswith("<"), "no HTML report")
    check(any((out / "evaluated_model").iterdir()), "no evaluated bundle")
    metrics = executor_output.get("artifacts", {}).get("metrics", {}).get("artifacts", [{}])[0].get("metadata", {})
    check("holdout_accuracy" in metrics, f"no metrics logged: {executor_output}")
    return {"image": image, "step": "evaluate", "seconds": round(secs, 1), "holdout_accuracy": metrics[
        "holdout_accuracy"], "helm": helm, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}  # fmt: skip


if __name__ == "__main__":
    sys.exit(smoke_main(__doc__ or "", "pipeline", "ghcr.io/facegate/facegate-pipeline:{version}-cpu", run))
