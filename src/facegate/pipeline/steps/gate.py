"""The gate step: the statistical promotion decision, recorded on the model version."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facegate.pipeline.failures import records_failure
from facegate.pipeline.steps._common import MetricsSink, VerificationSet, _log, _pairsets, _say, _settings


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

    from facegate.bundles import load_embedder
    from facegate.evaluate.embed_cache import EmbeddingCache
    from facegate.evaluate.gate import GatePolicy, ModelScores, compare_models
    from facegate.evaluate.runner import evaluate_pairs
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
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
