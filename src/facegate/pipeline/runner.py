"""``facegate pipeline compile|run``: compile a pipeline of ``pipelines/``, run it on a laptop or on Kubeflow.

- ``--local`` runs it with kfp's ``SubprocessRunner(use_venv=False)``: every component is a subprocess of this
  Python environment, offline, with MLflow on SQLite and the local object store under ``FACEGATE_HOME``.
- Without it, ``kfp.Client`` uploads a new version of the pipeline, starts a run in an experiment and returns the
  run's URL. The client's credentials are kfp's own (``KF_PIPELINES_SA_TOKEN_PATH``, an in-cluster service account,
  or a session cookie); none is a parameter, so none is logged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facegate.errors import FacegateError

__all__ = ["PipelineRun", "compile_pipeline", "find_pipeline", "load_pipeline", "run_local", "run_remote"]


class PipelineError(FacegateError):
    """A pipeline could not be found, compiled or run."""

    code = "pipeline_error"


@dataclass
class PipelineRun:
    """Where a run went and what it produced."""

    name: str
    where: str  # local root or run URL
    seconds: float = 0.0
    state: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


def _candidates() -> list[Path]:
    roots = []
    if os.environ.get("FACEGATE_PIPELINES_DIR"):
        roots.append(Path(os.environ["FACEGATE_PIPELINES_DIR"]))
    cwd = Path.cwd().resolve()
    roots += [p / "pipelines" for p in (cwd, *cwd.parents)]
    # An editable install or a source checkout: src/facegate/pipeline/runner.py -> repo root.
    roots.append(Path(__file__).resolve().parents[3] / "pipelines")
    return roots


def find_pipeline(name: str) -> Path:
    """``pipelines/NAME.py`` from ``FACEGATE_PIPELINES_DIR``, the working directory upwards, or the checkout.

    Raises:
        PipelineError: If no such file exists.
    """
    if not name.replace("_", "").isalnum():
        raise PipelineError(f"{name!r}: a pipeline name is a file name in pipelines/ (e.g. training)")
    for root in _candidates():
        path = root / f"{name}.py"
        if path.is_file():
            return path
    raise PipelineError(f"no pipelines/{name}.py found (set FACEGATE_PIPELINES_DIR to the folder holding it)")


def load_pipeline(name: str) -> tuple[Any, Path]:
    """Import ``pipelines/NAME.py`` and return its pipeline function (the attribute named ``NAME``) and path."""
    import sys

    path = find_pipeline(name)
    root = str(path.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # `components` sits beside `pipelines`
    spec = importlib.util.spec_from_file_location(f"facegate_pipeline_{name}", path)
    if spec is None or spec.loader is None:
        raise PipelineError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipe = getattr(module, name, None)
    if pipe is None:
        raise PipelineError(f"{path}: defines no pipeline named {name!r}")
    return pipe, path


#: What ``--local`` means for the parameters that choose where heavy work runs (only those a pipeline has).
LOCAL_DEFAULTS: dict[str, Any] = {
    "train_backend": "local",
    "tune_backend": "local",
    "rollout_target": "local",
    "reindex_shards": [0],  # one process: a laptop's cores are already busy in it
}


def _check_params(name: str, pipe: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown parameters and coerce the known ones to their declared KFP type.

    Command-line values arrive as YAML scalars (``1e-3`` is a string to YAML, ``0`` an int where KFP wants a
    float, ``epochs=1`` a string where it wants a list); a wrong type would otherwise surface as a kfp traceback.

    Raises:
        PipelineError: On an unknown parameter or a value that is not of (or convertible to) the declared type.
    """
    import yaml

    inputs = pipe.component_spec.inputs or {}
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        raise PipelineError(
            f"pipeline {name} has no parameter {', '.join(unknown)} (it has: {', '.join(sorted(inputs))})"
        )
    types: dict[str, type] = {
        "Float": float,
        "Integer": int,
        "Boolean": bool,
        "List": list,
        "Dict": dict,
        "String": str,
    }
    out: dict[str, Any] = {}
    for key, value in params.items():
        kind = str(inputs[key].type)
        try:
            if kind == "Float" and not isinstance(value, bool):
                out[key] = float(value)
            elif kind == "Integer" and not isinstance(value, bool) and float(value) == int(float(value)):
                out[key] = int(float(value))
            elif kind == "Boolean" and isinstance(value, str):
                out[key] = {"true": True, "false": False}[value.lower()]
            elif kind == "List" and isinstance(value, str):
                out[key] = list(yaml.safe_load(value)) if value.lstrip().startswith("[") else [value]
            elif kind == "String" and not isinstance(value, str):
                out[key] = str(value)
            else:
                out[key] = value
        except (ValueError, TypeError, KeyError, yaml.YAMLError):
            raise PipelineError(f"parameter {key}: {value!r} is not a {kind.lower()}") from None
        if kind in types and not isinstance(out[key], types[kind]):
            raise PipelineError(f"parameter {key}: {value!r} is not a {kind.lower()}")
    return out


def compile_pipeline(name: str, out: str | Path | None = None) -> Path:
    """Compile ``pipelines/NAME.py`` to YAML (beside it by default, as ``python pipelines/NAME.py`` does)."""
    from kfp import compiler

    pipe, path = load_pipeline(name)
    target = Path(out) if out is not None else path.with_suffix(".yaml")
    compiler.Compiler().compile(pipe, str(target))
    return target


class _StepLog(io.TextIOBase):
    """Stands in for stdout during a local run.

    Everything goes to the log file; ``echo`` gets one line per task started or finished plus the steps' own
    ``[facegate]`` lines (kfp streams every executor's full input, which is for the log, not the screen).
    """

    def __init__(self, log: io.TextIOBase, echo: Callable[[str], None], screen: Any) -> None:
        self.log, self.buf, self.screen = log, "", screen
        self._echo = echo
        self.started: dict[str, float] = {}

    def echo(self, text: str) -> None:
        import contextlib

        with contextlib.redirect_stdout(self.screen):  # echo may print: to the screen, not back into the log
            self._echo(text)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
            if m := re.search(r"Executing task '([\w-]+)'", plain):
                self.started[m[1]] = time.perf_counter()
                self.echo(f"  -> {m[1]}")
            elif m := re.search(r"Task '([\w-]+)' finished with status (\w+)", plain):
                secs = time.perf_counter() - self.started.get(m[1], time.perf_counter())
                self.echo(f"     {m[1]}: {m[2].lower()} ({secs:.0f} s)")
            elif "[facegate]" in plain:
                self.echo("     " + plain.split("[facegate]", 1)[1].strip())
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def run_local(
    name: str,
    params: dict[str, Any],
    *,
    pipeline_root: str | Path,
    log_path: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> PipelineRun:
    """Run a pipeline on this machine with kfp's SubprocessRunner in the current environment (no venv, offline).

    Args:
        name: Pipeline name (``training``, ``tuning``).
        params: Pipeline parameters.
        pipeline_root: Where the run's artifacts go (one folder per run, one per task inside).
            Backends default to ``local`` (:data:`LOCAL_DEFAULTS`) unless ``params`` says otherwise.
        log_path: With ``echo``: the full log of every step goes here ...
        echo: ... and ``echo`` gets one line per step started and finished, and what each step says it did.

    Raises:
        PipelineError: If a step fails (the exit handler has recorded the failure in MLflow by then).
    """
    from kfp import local

    from facegate.pipeline.failures import local_run

    pipe, _ = load_pipeline(name)
    known = set(pipe.component_spec.inputs or {})
    params = _check_params(name, pipe, {**{k: v for k, v in LOCAL_DEFAULTS.items() if k in known}, **params})
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    t0 = time.perf_counter()
    state = "SUCCEEDED"
    with contextlib.ExitStack() as stack:
        stack.enter_context(private_tmpdir())
        stack.enter_context(local_run())  # one id for the run's steps: the exit handler finds their notes by it
        if log_path is not None and echo is not None:
            import sys
            import warnings

            log = stack.enter_context(Path(log_path).open("w", encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(_StepLog(log, echo, sys.stdout)))
            stack.enter_context(warnings.catch_warnings())
            # kfp warns, per task, that resources do nothing locally and that the image is not Python's: both are
            # expected on a laptop, and twenty of them would bury what the steps say.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
        try:
            pipe(**params)
        except RuntimeError as exc:
            state = "FAILED"
            raise PipelineError(f"pipeline {name} failed: {str(exc).splitlines()[0][:300]}") from None
        finally:
            seconds = time.perf_counter() - t0
    runs = sorted((p for p in root.iterdir() if p.name not in before), key=lambda p: p.stat().st_mtime)
    where = runs[-1] if runs else root
    return PipelineRun(name=name, where=str(where), seconds=round(seconds, 1), state=state, outputs=_outputs(where))


@contextlib.contextmanager
def private_tmpdir() -> Iterator[Path]:
    """Point this run's step subprocesses at a temp folder of their own, and remove it afterwards.

    kfp's local runner writes each task's component source to ``$(mktemp -d)`` and never removes it. Cleaning the
    shared temp folder by pattern could delete a concurrent run's folders, so instead every subprocess started here
    gets ``TMPDIR`` set to a fresh folder, and that folder, with whatever the steps left in it, is all that goes.
    """
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="facegate-kfp-"))
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch)
    try:
        yield scratch
    finally:
        if previous is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous
        shutil.rmtree(scratch, ignore_errors=True)


def _outputs(run_dir: Path) -> dict[str, Any]:
    """The run's reports and decisions, by task: the files a person opens after a run."""
    import json

    found: dict[str, Any] = {}
    for f in sorted(run_dir.glob("*/report")) + sorted(run_dir.glob("*/executor_output.json")):
        task = f.parent.name
        if f.name == "report":
            found.setdefault(task, {})["report"] = str(f)
        else:
            try:
                params = json.loads(f.read_text()).get("parameterValues", {})
            except (OSError, json.JSONDecodeError):
                continue
            if "Output" in params:
                found.setdefault(task, {})["output"] = params["Output"]
    return found


def run_remote(
    name: str,
    params: dict[str, Any],
    *,
    host: str | None = None,
    namespace: str | None = None,
    experiment: str = "facegate",
    version: str | None = None,
) -> PipelineRun:
    """Upload a new version of the pipeline to Kubeflow Pipelines and start a run.

    Returns:
        The run, with its URL as ``where``.
    """
    import tempfile

    import kfp

    pipe, _ = load_pipeline(name)
    params = _check_params(name, pipe, params)
    client = kfp.Client(host=host or os.environ.get("KFP_HOST"), namespace=namespace)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(name, Path(tmp) / f"{name}.yaml")
        pipeline_name = getattr(pipe, "name", name)
        version_name = version or time.strftime(f"{name}-%Y%m%d-%H%M%S")
        pid = client.get_pipeline_id(pipeline_name)
        if pid is None:
            uploaded = client.upload_pipeline(str(package), pipeline_name=pipeline_name)
            pid = uploaded.pipeline_id
            vid = client.list_pipeline_versions(pid).pipeline_versions[0].pipeline_version_id
        else:
            vid = client.upload_pipeline_version(
                str(package), pipeline_version_name=version_name, pipeline_id=pid
            ).pipeline_version_id
    exp = client.create_experiment(experiment, namespace=namespace)
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        params=params,
        pipeline_id=pid,
        version_id=vid,
    )
    base = client._get_url_prefix()  # kfp's own UI address (KF_PIPELINES_UI_ENDPOINT or the host)
    return PipelineRun(name=name, where=f"{base.rstrip('/')}/#/runs/details/{run.run_id}", state="STARTED")
