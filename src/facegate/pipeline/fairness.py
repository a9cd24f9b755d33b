"""Equal treatment in the training pipeline: the group-report step and the gate's group labels.

The group-report step scores the *registered* challenger (the bundle that would ship, with the threshold it ships
with) on the verification sets, and writes the per-group report (:mod:`facegate.evaluate.groups`) three ways: as
the step's typed HTML artifact (tables and plots; ``groups.json`` in its metadata), as KFP metrics, and on the
model version in MLflow (tags ``groups.<set>.<column>.<group>.<rate>``, and ``groups/<set>/`` artifacts of its
registration run), so that whoever looks at a version sees how it treats each group.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from facegate.errors import DataError

__all__ = ["fairness_policy", "flat_group_numbers", "gate_groups", "group_report_step", "load_group_labels"]


def load_group_labels(uri: str, work: Path) -> Any:
    """Read a group CSV from a path, ``file://`` or an object-storage URI (``s3://bucket/key.csv``)."""
    from facegate.evaluate.groups import load_groups

    local = Path(uri.removeprefix("file://"))
    if local.is_file():
        return load_groups(local)
    if "://" not in uri:
        raise DataError(f"{uri}: group labels not found (a CSV path, file:// or s3:// URI)")
    from facegate.data.storage import open_storage

    prefix, _, name = uri.rpartition("/")
    dst = work / (name or "groups.csv")
    open_storage(prefix).get_file(name, dst)
    table = load_groups(dst)
    table.source = uri
    return table


def flat_group_numbers(report: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalars of a group report: ``<column>.<group>.{fnmr,fmr_within,fmr_across,fta}`` and the differentials."""
    out: dict[str, float] = {}
    for col, c in report["columns"].items():
        for name, g in c["groups"].items():
            for key, rate in (
                ("fnmr", g["fnmr"]),
                ("fmr_within", g["fmr_within"]),
                ("fmr_across", g["fmr_across"]),
                ("fta", g["failure_to_acquire"]),
            ):
                if rate["rate"] is not None:
                    out[f"{prefix}{col}.{name}.{key}"] = float(rate["rate"])
            out[f"{prefix}{col}.{name}.genuine_pairs"] = float(g["fnmr"]["pairs"])
        for key in ("fnmr_ratio", "fmr_ratio", "fdr"):
            value = c["differentials"][key]["value"]
            if value is not None:
                out[f"{prefix}{col}.{key}"] = float(value)
    return out


def _metric_key(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_").lower()


def group_report_step(
    model: str,
    sets: Sequence[str],
    group_labels: str,
    *,
    holdout_dir: str | None = None,
    metrics: Any = None,
    report_path: str | None = None,
    report_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-group error rates of a registered model version on every verification set.

    Args:
        model: ``models:/NAME/VERSION`` (the registered challenger).
        sets: Verification sets (as the evaluate step takes them).
        group_labels: The group CSV (path or URI); empty: nothing to report, the step says so and returns ``{}``.
        holdout_dir: The ingest step's held-out faces.
        metrics: KFP metrics: ``<set>_<column>_<group>_<rate>`` and the differentials.
        report_path: Output: the HTML report (tables and plots).
        report_metadata: The report artifact's metadata: receives ``groups.json`` per set.

    Returns:
        ``{set: flat numbers}``.
    """
    from facegate.bundles import load_embedder
    from facegate.evaluate.fairness_plots import groups_html, write_group_report
    from facegate.evaluate.runner import evaluate_pairs
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.pipeline.steps._common import _pairsets, _say, _settings
    from facegate.pipeline.steps.evaluate import _html
    from facegate.registry.models import get_version

    if not group_labels:
        _say("groups: no group labels configured (the group_labels parameter): no per-group report")
        if report_path:
            Path(report_path).write_text("<!doctype html><p>No group labels were configured for this run.</p>\n")
        return {}
    settings = _settings()
    version = get_version(model, home=settings.home)
    embedder = load_embedder(version.uri)
    threshold = float(embedder.default_threshold)
    results: dict[str, Any] = {}
    sections = []
    with tempfile.TemporaryDirectory(prefix="facegate-groups-") as tmp:
        table = load_group_labels(group_labels, Path(tmp))
        for i, (name, pairset) in enumerate(_pairsets(sets, holdout_dir)):
            _say(f"groups: {version.uri} on {name} ({len(pairset)} pairs) at threshold {threshold:.4f}")
            res = evaluate_pairs(
                embedder,
                pairset,
                aligner=aligner_from_settings(settings),
                limits=limits_from_settings(settings),
                progress=False,
            )
            out = Path(tmp) / str(i)
            report, plots = write_group_report(
                table,
                pairset.left,
                pairset.right,
                res.same,
                res.scores,
                threshold,
                out,
                failed_pairs=res.failed_pairs,
                failed_images=res.failed_keys,
                threshold_source=f"deployment threshold of {version.uri}",
            )
            flat = flat_group_numbers(report)
            results[name] = flat
            if metrics is not None:
                for k, v in flat.items():
                    metrics.log_metric(_metric_key(f"{name}_{k}"), v)
            if report_metadata is not None:
                report_metadata[f"groups_{_metric_key(name)}"] = json.loads(json.dumps(report))
            sections.append(f"<h2>{_html(name)}</h2>" + groups_html(report, plots))
            _record_groups(version, name, flat, out, settings.home)
    if report_path:
        Path(report_path).write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>facegate: equal treatment</title></head><body>"
            f"<h1>Equal treatment: {_html(version.uri)}</h1>{''.join(sections)}</body></html>\n"
        )
    return results


def _record_groups(version: Any, set_name: str, flat: Mapping[str, float], out: Path, home: Path) -> None:
    from mlflow import MlflowClient

    from facegate.registry.tracking import tracking_uri

    uri = tracking_uri(home)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for k, v in flat.items():
        client.set_model_version_tag(version.name, version.version, f"groups.{set_name}.{k}", f"{v:.6g}")
    if version.run_id:
        for f in sorted(out.iterdir()):
            client.log_artifact(version.run_id, str(f), f"groups/{set_name}")


def fairness_policy(overrides: Sequence[str] | None) -> Any:
    """The gate's :class:`~facegate.evaluate.fairness_gate.FairnessPolicy` with ``"measure=margin"`` overrides.

    Strings, not a dict: KFP stores dict defaults as protobuf maps, whose key order would make compiles differ.
    """
    from facegate.evaluate.fairness_gate import MEASURES, FairnessPolicy

    margins: dict[str, float] = {}
    for item in overrides or ():
        key, sep, value = item.partition("=")
        try:
            margins[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise DataError(f"fairness margin {item!r}: expected MEASURE=NUMBER, e.g. fnmr_ratio=0.25")
    unknown = set(margins) - set(MEASURES)
    if unknown:
        raise DataError(f"unknown fairness margin(s) {sorted(unknown)}; known: {sorted(MEASURES)}")
    from dataclasses import replace

    fields: dict[str, Any] = {f"{k}_margin": float(v) for k, v in margins.items()}
    return replace(FairnessPolicy(), **fields)


def gate_groups(group_labels: str, pairsets: Sequence[tuple[str, Any]]) -> list[Any]:
    """Every label column over the gate's pairs (all sets concatenated), for the gate's equal-treatment check."""
    from facegate.evaluate.groups import assign_groups

    if not group_labels:
        return []
    left = [k for _, p in pairsets for k in p.left]
    right = [k for _, p in pairsets for k in p.right]
    with tempfile.TemporaryDirectory(prefix="facegate-groups-") as tmp:
        table = load_group_labels(group_labels, Path(tmp))
    return [assign_groups(table, col, left, right) for col in table.columns]
