"""The evaluate step: the LFW protocol on every verification set, the ROC and the HTML report."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from facegate.pipeline.failures import records_failure
from facegate.pipeline.steps._common import MetricsSink, VerificationSet, _key, _log, _pairsets, _plain, _say, _settings

ROC_POINTS = 200  # the KFP UI draws the ROC from a table; a few hundred points are plenty and keep the MLMD row small


class RocSink(Protocol):
    """KFP ``ClassificationMetrics``: the ROC the KFP UI draws."""

    def log_roc_curve(self, fpr: list[float], tpr: list[float], threshold: list[float]) -> None:
        """Record the curve."""


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
    from facegate.bundles import load_embedder
    from facegate.evaluate.embed_cache import EmbeddingCache
    from facegate.evaluate.metrics import roc_curve
    from facegate.evaluate.runner import evaluate_pairs, record_in_bundle, write_report
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings

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


def _html(text: str) -> str:
    import html

    return html.escape(str(text))
