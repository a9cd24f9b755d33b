"""The rollout steps: reindex the gallery, the canary, its analysis, promote or roll back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from facegate.pipeline.failures import records_failure
from facegate.pipeline.steps._common import MetricsSink, _log, _say, _settings

if TYPE_CHECKING:
    from facegate.rollout.executor import RemoteRelease


def _crd_dir() -> str | None:
    """CRDs to validate rollout objects against before they leave (``FACEGATE_CRD_DIR``; none in a pod)."""
    return os.environ.get("FACEGATE_CRD_DIR") or None


def _cluster_release() -> RemoteRelease:
    """The release as the pipeline may change it: through the rollout executor, never with helm in this pod.

    The pipeline runner holds no rights on the release (its Secrets sit beside the gallery keys); it writes a
    request the executor in the serving namespace carries out (:mod:`facegate.rollout.executor`).
    """
    from facegate.rollout.executor import RemoteRelease

    return RemoteRelease()


@records_failure
def reindex_step(model: str, *, shard: int = 0, shard_ids: Sequence[int] = (0,)) -> int:
    """Build gallery templates for ``model`` (a ``models:/`` URI), for one shard of the students, before traffic.

    The pipeline runs one per id of ``shard_ids`` side by side (:func:`facegate.serve.reindex.reindex_shard`;
    resumable, so a retried pod continues). The gallery is the verifier's (``serve.gallery_url``, else
    ``<home>/gallery.db``).

    Returns:
        Students of this shard with a template for the model.
    """
    from facegate.bundles import load_embedder
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
        target: ``cluster`` asks the rollout executor to upgrade the Helm release with the canary's values;
            ``local`` only builds and validates the ``InferenceService`` (a laptop has no KServe; the canary is
            then played locally by :func:`analyze_canary_step`).
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
        release=_cluster_release() if target == "cluster" else None,
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
    release = _cluster_release() if not dry else None
    if decision == "promote":
        promote(
            v.storage_uri,
            v.model_version,
            gallery=settings.gallery_url(),
            dry_run=dry,
            crd_dir=_crd_dir(),
            release=release,
        )
    else:
        rollback(v.storage_uri, v.model_version, dry_run=dry, crd_dir=_crd_dir(), release=release)
    if decision == "promote":
        name = parse_model_uri(model)[0]
        set_alias(name, "champion", v.version, home=settings.home)
        _say(f"rollout: {v.uri} is now {name}@champion")
    else:
        _say(f"rollout: rolled back; {v.uri} stays challenger")
    champ = get_version(f"models:/{v.name}@champion", home=settings.home)
    return f"champion={champ.uri}"
