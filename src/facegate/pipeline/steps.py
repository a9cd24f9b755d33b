"""One function per pipeline step: what each Kubeflow component in ``components/`` calls, and nothing else does.

Components only parse their typed artifacts and call exactly one function here, so every step runs (and is tested)
as a plain Python call too. Artifacts arrive duck-typed: a directory or file path, a ``metadata`` dict, and for
metrics the KFP ``Metrics.log_metric`` / ``ClassificationMetrics.log_roc_curve`` methods; anything with those
methods works (the tests pass small recorders).

Where state lives is the environment's business, never a parameter: ``FACEGATE_HOME`` (the embedded MLflow store,
the local object store, the gallery), ``MLFLOW_TRACKING_URI``, ``FACEGATE_SERVE__GALLERY_URL`` and the secrets
(``FACEGATE_GALLERY_KEYS``, ``AWS_*``) come from the pod's environment (Kubernetes Secrets on the cluster) or the
process running the local pipeline.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from facegate.config import Settings, load_settings
from facegate.errors import DataError, FacegateError
from facegate.pipeline.failures import record_pipeline_failure, records_failure

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

#: A verification set: ``"holdout"`` (every pair of the photos the ingest step held out of training), or
#: ``"[NAME=]PAIRS[|IMAGES]"``: a pairs file (LFW ``pairs.txt``, insightface ``.bin`` or CSV) and its image root.
#: Strings, not dicts: KFP stores dict defaults as protobuf maps, whose key order would make compiles differ.
VerificationSet = str
HOLDOUT = "holdout"
ROC_POINTS = 200  # the KFP UI draws the ROC from a table; a few hundred points are plenty and keep the MLMD row small


class MetricsSink(Protocol):
    """KFP ``Metrics``: one scalar per key, shown in the run's UI."""

    def log_metric(self, metric: str, value: float) -> None:
        """Record one metric."""


class RocSink(Protocol):
    """KFP ``ClassificationMetrics``: the ROC the KFP UI draws."""

    def log_roc_curve(self, fpr: list[float], tpr: list[float], threshold: list[float]) -> None:
        """Record the curve."""


def _settings() -> Settings:
    return load_settings(os.environ.get("FACEGATE_CONFIG"))


def _log(sink: MetricsSink | None, values: dict[str, Any], prefix: str = "") -> None:
    if sink is None:
        return
    for k, v in values.items():
        # NaN is not a metric the UI can show (v == v is False only for NaN).
        if isinstance(v, bool | int | float) and v == v:
            sink.log_metric(prefix + k, float(v))


def _plain(value: Any) -> Any:
    """A step's return value as KFP can carry it: JSON types only, ``None`` dropped (KFP has no null)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    return value


def _say(text: str) -> None:
    # Component logs are what a data scientist reads in the KFP UI: one plain line per thing done.
    print(f"[facegate] {text}", flush=True)


# --------------------------------------------------------------------------------------------------- ingest


def _fetch_raw(uri: str, work: Path) -> Path:
    local = Path(uri.removeprefix("file://"))
    if local.is_dir():
        return local
    if "://" not in uri:
        raise DataError(f"{uri}: dataset not found (a folder, file:// or s3:// URI)")
    from facegate.data.storage import open_storage

    dst = work / "raw"
    n = open_storage(uri).download_dir("", dst)
    if not n:
        raise DataError(f"{uri}: no files under that URI")
    _say(f"downloaded {n} files from {uri}")
    return dst


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the same bytes twice would double a large dataset on disk
    except OSError:
        shutil.copy2(src, dst)


@records_failure
def ingest_step(
    dataset_uri: str,
    train_dir: str,
    holdout_dir: str,
    *,
    holdout_per_identity: int = 2,
    metrics: MetricsSink | None = None,
    train_metadata: dict[str, Any] | None = None,
    holdout_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Detect and align a raw dataset, then split it into training faces and held-out faces.

    Args:
        dataset_uri: Raw photos ``<identity>/<image>``: a folder, ``file://`` or ``s3://`` URI.
        train_dir: Output: aligned faces for training (+ ``manifest.json``).
        holdout_dir: Output: the last ``holdout_per_identity`` photos of every identity that keeps at least two for
            training; the ``holdout`` verification set pairs all of them (photo-disjoint from training).
        holdout_per_identity: Photos held out per identity.
        metrics: Counts (aligned, failed per reason).
        train_metadata: Gets the dataset version (manifest hash) and counts.
        holdout_metadata: Gets the held-out set's version and counts.

    Returns:
        The ingest report's summary with both dataset versions.
    """
    from facegate.data.storage import write_manifest
    from facegate.faces.ingest import ingest

    with tempfile.TemporaryDirectory(prefix="facegate-ingest-") as tmp:
        raw = _fetch_raw(dataset_uri, Path(tmp))
        aligned = Path(tmp) / "aligned"
        _say(f"ingest: detecting and aligning every photo under {dataset_uri}")
        report = ingest(raw, aligned, _settings(), progress=True).to_dict()
        counts = {"train_images": 0, "holdout_images": 0, "identities": 0}
        Path(train_dir).mkdir(parents=True, exist_ok=True)
        for ident in sorted(p for p in aligned.iterdir() if p.is_dir()):
            faces = sorted(ident.glob("*.jpg"))
            if not faces:
                continue
            counts["identities"] += 1
            held = faces[-holdout_per_identity:] if len(faces) >= holdout_per_identity + 2 else []
            for f in faces:
                dest = Path(holdout_dir if f in held else train_dir) / ident.name / f.name
                _link_or_copy(f, dest)
                counts["holdout_images" if f in held else "train_images"] += 1
        Path(holdout_dir).mkdir(parents=True, exist_ok=True)
        train_manifest, holdout_manifest = write_manifest(train_dir), write_manifest(holdout_dir)
    summary = {
        "total": report["total"],
        "aligned": report["aligned"],
        "failed": report["failed"],
        "failure_reasons": report["failure_reasons"],
        **counts,
        "dataset_version": train_manifest["version"],
        "holdout_version": holdout_manifest["version"],
    }
    _say(
        f"ingest: {report['aligned']}/{report['total']} aligned, {report['failed']} refused "
        f"{json.dumps(report['failure_reasons'])}; {counts['train_images']} for training, "
        f"{counts['holdout_images']} held out"
    )
    _log(metrics, {k: v for k, v in summary.items() if isinstance(v, int)})
    _log(metrics, {f"refused_{k}": v for k, v in report["failure_reasons"].items()})
    for meta, version, n in (
        (train_metadata, train_manifest["version"], counts["train_images"]),
        (holdout_metadata, holdout_manifest["version"], counts["holdout_images"]),
    ):
        if meta is not None:
            meta.update({"version": version, "images": n, "source": dataset_uri})
    return summary


# ---------------------------------------------------------------------------------------------------- train


def _train_config(config: str, overrides: Sequence[str]) -> Any:
    from facegate.train.config import load_train_config

    if "\n" in config or not config.strip().endswith((".yaml", ".yml")):
        # Inline YAML (what the KFP UI's text box holds) rather than a path inside the image.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            fh.write(config)
        try:
            return load_train_config(fh.name, list(overrides))
        finally:
            os.unlink(fh.name)
    path = Path(config)
    root = os.environ.get("FACEGATE_CONFIG_ROOT")
    if not path.is_absolute() and not path.exists() and root:
        # In the pipeline image the repo's configs/ live under FACEGATE_CONFIG_ROOT, not the working directory.
        path = Path(root) / path
    return load_train_config(path, list(overrides))


@records_failure
def train_step(
    config: str,
    overrides: Sequence[str],
    data_dir: str,
    model_dir: str,
    *,
    backend: str = "local",
    metrics: MetricsSink | None = None,
    model_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on the aligned training faces and write the model bundle.

    Args:
        config: A training config: a YAML path (``configs/tiny_cpu.yaml``) or inline YAML.
        overrides: ``key.sub=value`` overrides; ``data.*`` and ``output`` are set by this step.
        data_dir: Aligned training faces (the ingest step's output).
        model_dir: Output: the trained bundle.
        backend: ``local`` trains in this process; ``trainjob`` submits a Kubeflow Trainer ``TrainJob`` (multi-node
            DDP on the GPU workers) and waits for it (:func:`facegate.pipeline.cluster.run_train_job`).
        metrics: Validation metrics and throughput.
        model_metadata: Gets the config, dataset hash and training figures.

    Returns:
        ``{"steps", "seconds", "samples_per_second", "validation", "mlflow_run_id", "dataset_hash"}``.
    """
    from facegate.data.storage import build_manifest

    dataset_hash = str(build_manifest(data_dir)["version"])
    with tempfile.TemporaryDirectory(prefix="facegate-train-") as tmp:
        cfg = _train_config(
            config, [*overrides, "data.kind=folder", f"data.path={data_dir}", f"output={Path(tmp) / 'run'}"]
        )
        if backend == "trainjob":
            from facegate.pipeline.cluster import run_train_job

            summary: dict[str, Any] = run_train_job(cfg, model_dir)
        elif backend == "local":
            from facegate.train.run import run_training

            _say(f"train: {cfg.model.backbone} on {data_dir}, {cfg.epochs} epochs (in this process)")
            result, run_id = run_training(cfg, home=_settings().home, resume=False, progress=True)
            if result.bundle is None:
                raise FacegateError("training produced no bundle", code="train_failed")
            shutil.copytree(result.bundle, model_dir, dirs_exist_ok=True)
            summary = {
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "samples_per_second": round(result.samples_per_second, 2),
                "validation": result.final_val or {},
                "mlflow_run_id": run_id,
            }
        else:
            raise FacegateError(f"unknown train backend {backend!r} (local | trainjob)", code="config_error")
    summary["dataset_hash"] = dataset_hash
    summary["config"] = cfg.to_dict()
    val = summary.get("validation") or {}
    _log(metrics, {k: summary[k] for k in ("steps", "seconds", "samples_per_second")})
    _log(metrics, {k: val.get(k) for k in ("accuracy", "auc", "eer")}, prefix="val_")
    if model_metadata is not None:
        model_metadata.update({"config": cfg.to_dict(), "dataset_hash": dataset_hash, "backbone": cfg.model.backbone})
    acc = val.get("accuracy")
    _say(f"train: done in {summary['seconds']} s" + (f"; validation accuracy {acc:.4f}" if acc is not None else ""))
    return dict(_plain(summary))


@records_failure
def tune_step(
    config: str,
    overrides: Sequence[str],
    data_dir: str,
    best_config_path: str,
    *,
    holdout_dir: str | None = None,
    samples: int = 4,
    backend: str = "local",
    metrics: MetricsSink | None = None,
) -> dict[str, Any]:
    """Search hyperparameters with Ray Tune (ASHA) and write the best training config as YAML.

    Args:
        config: Base training config (path or inline YAML).
        overrides: Overrides of the base config.
        data_dir: Aligned training faces.
        best_config_path: Output: the best config, ready for the training pipeline's ``config`` parameter.
        holdout_dir: Held-out faces; when given, every trial validates on all their pairs (trials are ranked by
            that accuracy; the config's own validation is used otherwise).
        samples: Trials.
        backend: ``local`` runs Ray in this process; ``rayjob`` submits a KubeRay ``RayJob`` and waits for it.
        metrics: The best accuracy and trial count.
    """
    import yaml

    with tempfile.TemporaryDirectory(prefix="facegate-tune-") as tmp:
        val: list[str] = []
        if holdout_dir:
            _all_pairs_csv(Path(holdout_dir), Path(tmp) / "holdout.csv")
            val = ["val.kind=pairs", f"val.pairs={Path(tmp) / 'holdout.csv'}", f"val.images={holdout_dir}"]
        base = _train_config(config, [*overrides, *val, "data.kind=folder", f"data.path={data_dir}"])
        if backend == "rayjob":
            from facegate.pipeline.cluster import run_ray_job

            best, best_acc, n = run_ray_job(base, samples)
        elif backend == "local":
            from facegate.tune.search import run_tune

            _say(f"tune: {samples} trials with Ray Tune + ASHA (Ray in this process)")
            res = run_tune(base, output=Path(tmp) / "tune", num_samples=samples, home=_settings().home)
            best, best_acc, n = res.best_config, res.best_accuracy, len(res.trials)
        else:
            raise FacegateError(f"unknown tune backend {backend!r} (local | rayjob)", code="config_error")
    # The trials' data and validation paths lived in this step's pod: the tuned config keeps the caller's.
    caller = _train_config(config, overrides).to_dict()
    best = {k: v for k, v in best.items() if k != "output"} | {"data": caller["data"], "val": caller["val"]}
    Path(best_config_path).parent.mkdir(parents=True, exist_ok=True)
    Path(best_config_path).write_text(yaml.safe_dump(best, sort_keys=False))
    _log(metrics, {"best_accuracy": best_acc, "trials": n})
    _say(f"tune: best validation accuracy {best_acc:.4f} over {n} trials")
    return dict(_plain({"best_accuracy": best_acc, "trials": n, "best_config": best}))


@records_failure
def config_text_step(path: str) -> str:
    """A training config file's text (a tuned config becomes the next step's inline ``config`` parameter).

    Raises:
        DataError: If the file is not a readable training config.
    """
    from facegate.train.config import load_train_config

    try:
        load_train_config(path)  # refuse junk here, not three steps later
        return Path(path).read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the tuned config ({exc})") from None


# ------------------------------------------------------------------------------------------------- evaluate


def _pairsets(sets: Sequence[VerificationSet], holdout_dir: str | None) -> list[tuple[str, Any]]:
    from facegate.data.pairs import load_csv_pairs, load_pairs

    out = []
    for spec in sets:
        head, sep, tail = spec.partition("=")
        # NAME= only when it is a plain name: a pairs path may itself contain "=".
        name, rest = (head, tail) if sep and head and "/" not in head and "|" not in head else ("", spec)
        pairs, _, images = rest.partition("|")
        name = name or (HOLDOUT if pairs == HOLDOUT else Path(pairs).stem)
        if pairs == HOLDOUT:
            if not holdout_dir:
                raise DataError("the 'holdout' verification set needs the ingest step's held-out faces")
            with tempfile.TemporaryDirectory(prefix="facegate-pairs-") as tmp:  # the CSV is read at once
                _all_pairs_csv(Path(holdout_dir), Path(tmp) / "holdout.csv")
                out.append((name, load_csv_pairs(Path(tmp) / "holdout.csv", holdout_dir)))
        else:
            out.append((name, load_pairs(pairs, images or None)))
    if not out:
        raise DataError("no verification set configured")
    return out


#: Impostor pairs of the held-out set grow with the square of its size (2 photos of 1,000 students: 2 million);
#: above this many they are sampled, with a fixed seed so every step and every rerun scores the same pairs.
MAX_HOLDOUT_IMPOSTORS = 20_000


def _all_pairs_csv(root: Path, out: Path, max_impostors: int = MAX_HOLDOUT_IMPOSTORS) -> None:
    """Every genuine pair of an aligned folder and every impostor pair, or a fixed sample of ``max_impostors``."""
    import csv
    import itertools

    import numpy as np

    files = {d.name: sorted(f.relative_to(root).as_posix() for f in d.glob("*.jpg")) for d in sorted(root.iterdir())}
    files = {k: v for k, v in files.items() if v}
    rows = [(a, b, 1) for v in files.values() for a, b in itertools.combinations(v, 2)]
    sizes = [len(v) for v in files.values()]
    n_impostors = (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
    if n_impostors <= max_impostors:
        rows += [(a, b, 0) for i, j in itertools.combinations(files, 2) for a in files[i] for b in files[j]]
    else:
        flat = [(ident, f) for ident, v in files.items() for f in v]
        rng = np.random.default_rng(0)
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < max_impostors:
            i, j = sorted(int(x) for x in rng.integers(0, len(flat), 2))
            if flat[i][0] != flat[j][0]:
                chosen.add((i, j))
        rows += [(flat[i][1], flat[j][1], 0) for i, j in sorted(chosen)]
    if not rows or all(r[2] for r in rows) or not any(r[2] for r in rows):
        raise DataError(f"{root}: the held-out faces make no genuine and impostor pairs (hold out more photos)")
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_a", "image_b", "same"])
        w.writerows(rows)


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@records_failure
def evaluate_step(
    model_dir: str,
    sets: Sequence[VerificationSet],
    out_model_dir: str,
    *,
    holdout_dir: str | None = None,
    target_far: float = 1e-3,
    metrics: MetricsSink | None = None,
    roc: RocSink | None = None,
    report_path: str | None = None,
) -> dict[str, Any]:
    """Evaluate a bundle on every verification set; the evaluated bundle carries the results and its threshold.

    The first set decides the bundle's threshold (at ``target_far``, or the accuracy-optimal one where its
    impostor count cannot resolve that FAR).

    Args:
        model_dir: The bundle to evaluate (read only: KFP inputs are immutable).
        sets: Verification sets.
        out_model_dir: Output: a copy of the bundle with its evaluations and threshold.
        holdout_dir: The ingest step's held-out faces (for the ``holdout`` set).
        target_far: FAR for the threshold.
        metrics: ``<set>_accuracy``, ``_auc``, ``_eer``, ``_tar_at_far`` per set.
        roc: The first set's ROC for the KFP UI.
        report_path: Output: an HTML report with every set's ROC and score histogram embedded.

    Returns:
        Metrics per set.
    """
    from facegate.evaluate.embed_cache import EmbeddingCache
    from facegate.evaluate.metrics import roc_curve
    from facegate.evaluate.runner import evaluate_pairs, record_in_bundle, write_report
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.models import load_embedder

    shutil.copytree(model_dir, out_model_dir, dirs_exist_ok=True)
    settings = _settings()
    embedder = load_embedder(out_model_dir)
    results: dict[str, Any] = {}
    sections = []
    with tempfile.TemporaryDirectory(prefix="facegate-eval-") as tmp:
        for i, (name, pairset) in enumerate(_pairsets(sets, holdout_dir)):
            _say(f"evaluate: {embedder.name} on {name} ({len(pairset)} pairs)")
            res = evaluate_pairs(
                embedder,
                pairset,
                aligner=aligner_from_settings(settings),
                target_far=target_far,
                limits=limits_from_settings(settings),
                progress=True,
                cache=EmbeddingCache.at_home(settings.home),
            )
            m = res.metrics
            m["pairs"] = name
            if i == 0:
                thr = record_in_bundle(out_model_dir, m)
                _log(metrics, {"threshold": thr})
                if roc is not None:
                    curve = roc_curve(res.same, res.scores)
                    keep = sorted({round(x) for x in _linspace(0, curve.fpr.size - 1, ROC_POINTS)})
                    roc.log_roc_curve(
                        [float(curve.fpr[k]) for k in keep],
                        [float(curve.tpr[k]) for k in keep],
                        [float(min(max(curve.thresholds[k], -1.0), 1.0)) for k in keep],
                    )
            tar = m["tar_at_far"].get(f"{target_far:g}")
            row = {"accuracy": m["accuracy"], "auc": m["auc"], "eer": m["eer"], "tar_at_far": tar}
            results[name] = {**row, "n_pairs": m["n_pairs"], "n_failed_pairs": m["n_failed_pairs"]}
            _log(metrics, row, prefix=f"{_key(name)}_")
            d = Path(tmp) / str(i)
            write_report(res, pairset, d)
            sections.append(
                f"<h2>{_html(name)}</h2><p>{m['n_pairs']} pairs; accuracy {m['accuracy']:.4f} ± "
                f"{m['accuracy_std']:.4f}, AUC {m['auc']:.4f}, EER {m['eer']:.4f}, TAR@FAR {target_far:g} "
                f"{'n/a' if tar is None else f'{tar:.4f}'}; failed pairs {m['n_failed_pairs']}</p>"
                f'<img alt="ROC on {_html(name)}" src="{_png_data_uri(d / "roc.png")}" width="480">'
                f'<img alt="score histograms on {_html(name)}" src="{_png_data_uri(d / "scores.png")}" width="480">'
            )
    if report_path:
        Path(report_path).write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>facegate evaluation</title></head><body>"
            f"<h1>Evaluation of {_html(embedder.name)} ({_html(embedder.version)})</h1>{''.join(sections)}"
            "</body></html>\n"
        )
    return dict(_plain(results))


def _linspace(a: float, b: float, n: int) -> list[float]:
    return [a + (b - a) * i / max(1, n - 1) for i in range(n)]


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower() or "set"


def _html(text: str) -> str:
    import html

    return html.escape(str(text))


# --------------------------------------------------------------------------------------------------- export


@records_failure
def export_step(
    model_dir: str,
    faces_dir: str,
    out_model_dir: str,
    *,
    sets: Sequence[VerificationSet] = (),
    holdout_dir: str | None = None,
    target_far: float = 1e-3,
    metrics: MetricsSink | None = None,
    model_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export to OpenVINO FP32 and INT8 behind the existing gates; the served bundle is INT8 when it passes.

    INT8 calibrates on one half of the faces and is judged on the other (parity) and on the first verification
    set (accuracy: at most 0.3 points lost). When INT8 fails its gate, FP32 is served and the step says so; when
    FP32 fails too, the step fails.

    Args:
        model_dir: The evaluated bundle.
        faces_dir: Real aligned faces (the training faces: calibration and parity).
        out_model_dir: Output: the chosen export bundle.
        sets: Verification sets (the first one gates accuracy).
        holdout_dir: Held-out faces (for the ``holdout`` set).
        target_far: FAR for each format's threshold.
        metrics: Parity and accuracy per format, and which format was chosen.
        model_metadata: Gets the chosen format and the export report.
    """
    from facegate.export.convert import ExportGateError, export_model, load_faces

    pairs = _pairsets(sets, holdout_dir)[0][1] if sets else None
    with tempfile.TemporaryDirectory(prefix="facegate-export-") as tmp:
        _say("export: OpenVINO FP32 and INT8, each gated on parity (and accuracy with a verification set)")
        try:
            export_model(
                model_dir,
                Path(tmp),
                load_faces(faces_dir, limit=200),
                formats=["openvino-fp32", "openvino-int8"],
                pairs=pairs,
                target_far=target_far,
            )
        except ExportGateError as exc:
            # The message names the temp folder's report; the served bundle keeps a copy of it.
            _say(f"export: {exc.message.split(' (see ')[0]}")
        report = json.loads((Path(tmp) / "export_report.json").read_text())
        chosen = next((f for f in ("openvino-int8", "openvino-fp32") if report["formats"][f]["passed"]), None)
        if chosen is None:
            raise ExportGateError(f"no export passed its gates: {json.dumps(report['formats'])[:2000]}")
        shutil.copytree(Path(tmp) / chosen, out_model_dir, dirs_exist_ok=True)
        shutil.copyfile(Path(tmp) / "export_report.json", Path(out_model_dir) / "export_report.json")
    for fmt, entry in report["formats"].items():
        key = fmt.replace("openvino-", "")
        _log(metrics, {f"{key}_cosine_mean": entry["parity"]["cosine_mean"], f"{key}_passed": entry["passed"]})
        if entry.get("accuracy_drop") is not None:
            _log(metrics, {f"{key}_accuracy_drop": entry["accuracy_drop"]})
    _log(metrics, {"int8_served": chosen == "openvino-int8"})
    _say(f"export: serving {chosen}")
    if model_metadata is not None:
        model_metadata.update({"format": chosen, "export_report": report["formats"]})
    return dict(_plain({"format": chosen, "report": report}))


# ------------------------------------------------------------------------------------------------- registry


@records_failure
def register_step(
    model_dir: str,
    *,
    name: str = "facegate",
    training: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    pipeline_run: str = "",
) -> str:
    """Register the exported bundle as a new version with alias ``challenger``.

    Its tags hold the metrics, the threshold (from the bundle), the dataset hash, the git commit and the config.

    Args:
        model_dir: The exported bundle.
        name: Registered model name.
        training: The train step's summary (config, dataset hash, MLflow training run).
        evaluation: The evaluate step's metrics per verification set.
        pipeline_run: The KFP run's name.

    Returns:
        ``models:/NAME/VERSION``.
    """
    from facegate.registry.models import register_bundle

    tr = training or {}
    tags: dict[str, Any] = {
        "dataset_hash": tr.get("dataset_hash", ""),
        "config": tr.get("config", {}),
        "training_run": tr.get("mlflow_run_id"),
        "pipeline_run": pipeline_run,
    }
    for set_name, row in (evaluation or {}).items():
        for k, v in row.items():
            tags[f"metric.{_key(set_name)}.{k}"] = v
    v = register_bundle(model_dir, name=name, alias="challenger", tags=tags, home=_settings().home)
    _say(f"register: {v.uri} ({v.model_version}) is {name}@challenger")
    return v.uri


# ----------------------------------------------------------------------------------------------------- gate


@records_failure
def gate_step(
    challenger: str,
    sets: Sequence[VerificationSet],
    *,
    holdout_dir: str | None = None,
    champion: str = "models:/facegate@champion",
    target_far: float = 1e-3,
    margin: float = 0.0,
    alpha: float = 0.05,
    metrics: MetricsSink | None = None,
    report_path: str | None = None,
    group_labels: str = "",
    fairness_margins: Sequence[str] = (),
) -> str:
    """Score champion and challenger on the same pairs and decide (see :mod:`facegate.evaluate.gate`).

    The decision and its numbers go to the challenger's model version (tags ``gate.*``, and ``gate.md`` in its
    registration run) and to ``report_path`` (the run's Markdown output). With ``group_labels`` (a group CSV) the
    challenger must also not widen the gaps between groups beyond ``fairness_margins`` (``"fnmr_ratio=0.25"``, ...;
    :mod:`facegate.evaluate.fairness_gate`).

    Returns:
        ``"promote"`` or ``"keep"``.
    """
    import numpy as np

    from facegate.evaluate.embed_cache import EmbeddingCache
    from facegate.evaluate.gate import GatePolicy, ModelScores, compare_models
    from facegate.evaluate.runner import evaluate_pairs
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.models import load_embedder
    from facegate.registry.models import NOT_REGISTERED, RegistryError, get_version

    settings = _settings()
    home = settings.home
    chall_v = get_version(challenger, home=home)
    try:
        champ_v = get_version(champion, home=home)
    except RegistryError as exc:
        if exc.code != NOT_REGISTERED:
            raise
        champ_v = None
    pairsets = _pairsets(sets, holdout_dir)
    labels = np.concatenate([p.same for _, p in pairsets])
    scored: dict[str, ModelScores] = {}
    cache = EmbeddingCache.at_home(settings.home)  # the champion's embeddings of unchanged sets are reused
    for role, v in (("challenger", chall_v), ("champion", champ_v)):
        if v is None:
            continue
        emb = load_embedder(v.uri)
        _say(f"gate: scoring the {role} {v.uri} ({v.model_version}) on {labels.size} pairs")
        parts = [
            evaluate_pairs(
                emb,
                p,
                aligner=aligner_from_settings(settings),
                target_far=target_far,
                limits=limits_from_settings(settings),
                progress=False,
                cache=cache,
            ).scores
            for _, p in pairsets
        ]
        scored[role] = ModelScores(v.uri, np.concatenate(parts), emb.default_threshold)
    # The challenger's bundle threshold was chosen on these same pairs (evaluate/export): judge both models by the
    # same fitted rule so neither is flattered.
    from facegate.pipeline.fairness import fairness_policy, gate_groups

    policy = GatePolicy(margin, target_far, alpha, thresholds="fitted", fairness=fairness_policy(fairness_margins))
    groups = gate_groups(group_labels, pairsets)
    decision = compare_models(labels, scored.get("champion"), scored["challenger"], policy, groups=groups)
    text = decision.to_markdown()
    _say("gate: " + ("PROMOTE" if decision.promote else "KEEP the champion") + "; " + "; ".join(decision.reasons))
    n = decision.numbers
    if "accuracy" in n:
        _log(
            metrics,
            {
                "champion_accuracy": n["accuracy"]["champion"],
                "challenger_accuracy": n["accuracy"]["challenger"],
                "champion_tar": n["tar"]["champion"],
                "challenger_tar": n["tar"]["challenger"],
                "mcnemar_p": n["mcnemar"]["p_value"],
                "tar_gain_lower": n["tar"]["gain_lower"],
            },
        )
    _log(metrics, {"promote": decision.promote})
    _record_gate(chall_v, decision.to_dict(), text, home)
    if report_path:
        Path(report_path).write_text(text)
    return "promote" if decision.promote else "keep"


def _record_gate(version: Any, decision: dict[str, Any], markdown: str, home: Path) -> None:
    from mlflow import MlflowClient

    from facegate.registry.tracking import tracking_uri

    uri = tracking_uri(home)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = {
        "gate.decision": "promote" if decision["promote"] else "keep",
        "gate.reasons": "; ".join(decision["reasons"]),
    }
    n = decision["numbers"]
    if "mcnemar" in n:
        tags.update(
            {
                "gate.champion": str(decision["champion"]),
                "gate.accuracy_gain": f"{n['accuracy']['gain']:.6f}",
                "gate.tar_gain": f"{n['tar']['gain']:.6f}",
                "gate.mcnemar_p": f"{n['mcnemar']['p_value']:.6g}",
                "gate.tar_gain_lower": f"{n['tar']['gain_lower']:.6f}",
            }
        )
        tags.update({f"gate.fairness.{f['column']}": "passed" if f["passed"] else "failed" for f in n["fairness"]})
    for k, v in tags.items():
        client.set_model_version_tag(version.name, version.version, k, v[:5000])
    if version.run_id:
        client.log_text(version.run_id, markdown, "gate.md")
        client.log_dict(version.run_id, decision, "gate.json")


# -------------------------------------------------------------------------------------------------- rollout


def _crd_dir() -> str | None:
    """CRDs to validate rollout objects against before they leave (``FACEGATE_CRD_DIR``; none in a pod)."""
    return os.environ.get("FACEGATE_CRD_DIR") or None


@records_failure
def reindex_step(model: str, *, shard: int = 0, shard_ids: Sequence[int] = (0,)) -> int:
    """Build gallery templates for ``model`` (a ``models:/`` URI), for one shard of the students, before traffic.

    The pipeline runs one per id of ``shard_ids`` side by side (:func:`facegate.serve.reindex.reindex_shard`;
    resumable, so a retried pod continues). The gallery is the verifier's (``serve.gallery_url``, else
    ``<home>/gallery.db``).

    Returns:
        Students of this shard with a template for the model.
    """
    from facegate.models import load_embedder
    from facegate.serve.gallery import Gallery
    from facegate.serve.reindex import reindex_shard

    embedder = load_embedder(model)
    shards = len(shard_ids)  # KFP may hand list items over as floats
    rep = reindex_shard(Gallery(_settings().gallery_url()), embedder, shard=int(shard), shards=shards)
    _say(f"reindex {rep.shards}: {rep.built} built, {rep.skipped} already done for {embedder.version}")
    return rep.built + rep.skipped


@records_failure
def canary_step(model: str, percent: int, *, target: str = "local", manifest_path: str | None = None) -> str:
    """Start a canary of ``model`` (refused when the gallery has no templates for it).

    Args:
        model: ``models:/`` URI of the challenger.
        percent: Share of kiosk traffic for the canary.
        target: ``cluster`` applies the KServe ``InferenceService`` (server-side apply); ``local`` only builds and
            validates it (a laptop has no KServe; the canary is then played locally by :func:`analyze_canary_step`).
        manifest_path: Output: the ``InferenceService`` YAML.

    Returns:
        The model version string the canary serves.
    """
    from facegate.registry.models import NOT_REGISTERED, RegistryError, get_version
    from facegate.rollout.kserve import canary, to_yaml

    settings = _settings()
    v = get_version(model, home=settings.home)
    try:
        baseline: str | None = get_version(f"models:/{v.name}@champion", home=settings.home).model_version
    except RegistryError as exc:
        if exc.code != NOT_REGISTERED:
            raise
        baseline = None
    obj = canary(
        v.storage_uri,
        v.model_version,
        percent,
        gallery=settings.gallery_url(),
        baseline_version=baseline,
        dry_run=target != "cluster",
        crd_dir=_crd_dir(),
    )
    text = to_yaml(obj)
    if manifest_path:
        Path(manifest_path).write_text(text)
    _say(f"canary: {v.uri} ({v.model_version}) at {percent}% ({'applied' if target == 'cluster' else 'dry run'})")
    return v.model_version


@records_failure
def analyze_canary_step(
    model: str,
    *,
    champion: str = "models:/facegate@champion",
    percent: int = 10,
    target: str = "local",
    photos_dir: str | None = None,
    report_path: str | None = None,
    metrics: MetricsSink | None = None,
) -> str:
    """Compare the canary with the champion in production metrics and decide.

    On the cluster the metrics come from Prometheus; locally both versions are served on 127.0.0.1, held-out
    photos are replayed through them split by ``percent``, and their ``/metrics`` are scraped.

    Returns:
        ``"promote"`` or ``"rollback"``.
    """
    from facegate.registry.models import NOT_REGISTERED, RegistryError, get_version
    from facegate.rollout.steps import analyze

    settings = _settings()
    chall = get_version(model, home=settings.home)
    try:
        champ = get_version(champion, home=settings.home)
    except RegistryError as exc:
        if exc.code != NOT_REGISTERED:
            raise
        champ = None
    result = analyze(
        champion=champ,
        challenger=chall,
        percent=percent,
        target=target,
        photos_dir=photos_dir,
        settings=settings,
    )
    _log(metrics, result.get("numbers", {}))
    if report_path:
        Path(report_path).write_text(result.get("markdown", ""))
    _say(f"canary analysis: {result['decision']}")
    return str(result["decision"])


@records_failure
def finish_rollout_step(decision: str, model: str, *, target: str = "local") -> str:
    """Promote (alias ``champion`` -> the challenger; canary field removed) or roll back (traffic pinned back).

    Returns:
        The alias state after the step, e.g. ``champion=models:/facegate/3``.
    """
    from facegate.registry.models import get_version, parse_model_uri, set_alias
    from facegate.rollout.kserve import promote, rollback

    settings = _settings()
    v = get_version(model, home=settings.home)
    dry = target != "cluster"
    if decision == "promote":
        promote(v.storage_uri, v.model_version, gallery=settings.gallery_url(), dry_run=dry, crd_dir=_crd_dir())
    else:
        rollback(v.storage_uri, v.model_version, dry_run=dry, crd_dir=_crd_dir())
    if decision == "promote":
        name = parse_model_uri(model)[0]
        set_alias(name, "champion", v.version, home=settings.home)
        _say(f"rollout: {v.uri} is now {name}@champion")
    else:
        _say(f"rollout: rolled back; {v.uri} stays challenger")
    champ = get_version(f"models:/{v.name}@champion", home=settings.home)
    return f"champion={champ.uri}"


def record_failure_step(state: str, error: str, pipeline_run: str = "") -> str:
    """The exit handler: record a failed (or cancelled) run in MLflow, naming the step that failed and its error.

    Returns:
        The MLflow run id holding the record, or ``""`` when the pipeline succeeded.
    """
    return record_pipeline_failure(state, error, pipeline_run, home=_settings().home)
