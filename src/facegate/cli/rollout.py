"""``facegate rollout``: KServe canary, promote, rollback and status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from facegate.cli._common import GalleryUrl, _errors, _settings
from facegate.errors import FacegateError

rollout_app = typer.Typer(
    help="KServe rollout of the verifier: canary, promote, rollback (helm upgrade of the release), status.",
    no_args_is_help=True,
)


RolloutModel = Annotated[
    str | None, typer.Option("--model", help="Registered version: models:/facegate@challenger or models:/facegate/3.")
]


StorageUri = Annotated[str | None, typer.Option(help="Bundle URI (instead of --model; with --model-version).")]


ModelVersionOpt = Annotated[str | None, typer.Option(help="Bundle version string (instead of --model).")]


Namespace = Annotated[str, typer.Option(help="Namespace of the InferenceService.")]


IsvcName = Annotated[str, typer.Option("--name", help="InferenceService name.")]


DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the object (YAML) instead of applying it.")]


Release = Annotated[str, typer.Option(envvar="FACEGATE_HELM_RELEASE", help="Helm release that owns the verifier.")]


Chart = Annotated[
    str, typer.Option(envvar="FACEGATE_HELM_CHART", help="Chart of the release: OCI/repo reference or a local folder.")
]


HelmBin = Annotated[str, typer.Option("--helm", envvar="FACEGATE_HELM", help="The helm executable.")]


_CHART = "oci://ghcr.io/facegate/charts/facegate"  # facegate.rollout.helm.DEFAULT_CHART (cli imports lazily)


def _release(release: str, chart: str, helm: str, namespace: str) -> Any:
    from facegate.rollout.helm import HelmRelease

    return HelmRelease(release=release, namespace=namespace, chart=chart, helm=helm)


CrdDir = Annotated[
    Path | None, typer.Option("--crds", help="Validate against the KServe CRDs in this folder first.", file_okay=False)
]


def _rollout_target(ctx: typer.Context, model: str | None, storage_uri: str | None, version: str | None) -> Any:
    """``(storage_uri, model_version)`` from a registry reference or the explicit options."""
    if model:
        from facegate.registry.models import get_version

        rv = get_version(model, home=_settings(ctx).home)
        return rv.storage_uri, rv.model_version
    if storage_uri and version:
        return storage_uri, version
    raise FacegateError("give --model models:/NAME@ALIAS (or /VERSION), or --storage-uri and --model-version",
                        code="bad_usage")  # fmt: skip


def _rollout_done(action: str, obj: dict[str, Any], dry_run: bool) -> None:
    from facegate.rollout.kserve import status_of, to_yaml

    if dry_run:
        typer.echo(to_yaml(obj), nl=False)
        return
    typer.echo(json.dumps({"action": action, **status_of(obj).to_dict()}, indent=2))


def _serving_version(name: str, namespace: str, dry_run: bool) -> str | None:
    """The model version the cluster serves now (``None`` in a dry run or before the first rollout)."""
    if dry_run:
        return None
    from facegate.rollout.kserve import RolloutError, get_status

    try:
        return get_status(name, namespace).model_version
    except RolloutError as exc:
        if exc.code == "not_deployed":
            return None
        raise


@rollout_app.command("canary")
@_errors
def rollout_canary(
    ctx: typer.Context,
    percent: Annotated[int, typer.Option(help="Share of check-ins sent to the new version (1-99).")],
    model: RolloutModel = None,
    storage_uri: StorageUri = None,
    model_version: ModelVersionOpt = None,
    namespace: Namespace = "facegate",
    name: IsvcName = "facegate-verifier",
    db: GalleryUrl = None,
    crds: CrdDir = None,
    dry_run: DryRun = False,
    release: Release = "facegate",
    chart: Chart = _CHART,
    helm: HelmBin = "helm",
) -> None:
    """Route PERCENT % of check-ins to a new version; refused unless the gallery has its templates."""
    from facegate.rollout.kserve import canary

    uri, version = _rollout_target(ctx, model, storage_uri, model_version)
    baseline = _serving_version(name, namespace, dry_run)
    obj = canary(uri, version, percent, gallery=db or _settings(ctx).gallery_url(), baseline_version=baseline,
                 name=name, namespace=namespace, crd_dir=crds, dry_run=dry_run,
                 release=_release(release, chart, helm, namespace))  # fmt: skip
    _rollout_done("canary", obj, dry_run)


@rollout_app.command("promote")
@_errors
def rollout_promote(
    ctx: typer.Context,
    model: RolloutModel = None,
    storage_uri: StorageUri = None,
    model_version: ModelVersionOpt = None,
    namespace: Namespace = "facegate",
    name: IsvcName = "facegate-verifier",
    db: GalleryUrl = None,
    crds: CrdDir = None,
    dry_run: DryRun = False,
    release: Release = "facegate",
    chart: Chart = _CHART,
    helm: HelmBin = "helm",
) -> None:
    """Send 100 % of check-ins to the version (removes canaryTrafficPercent); templates are checked first."""
    from facegate.rollout.kserve import promote

    uri, version = _rollout_target(ctx, model, storage_uri, model_version)
    obj = promote(uri, version, gallery=db or _settings(ctx).gallery_url(), name=name, namespace=namespace,
                  crd_dir=crds, dry_run=dry_run, release=_release(release, chart, helm, namespace))  # fmt: skip
    _rollout_done("promote", obj, dry_run)


@rollout_app.command("rollback")
@_errors
def rollout_rollback(
    ctx: typer.Context,
    model: RolloutModel = None,
    storage_uri: StorageUri = None,
    model_version: ModelVersionOpt = None,
    namespace: Namespace = "facegate",
    name: IsvcName = "facegate-verifier",
    crds: CrdDir = None,
    dry_run: DryRun = False,
    release: Release = "facegate",
    chart: Chart = _CHART,
    helm: HelmBin = "helm",
) -> None:
    """Pin every check-in to the last rolled-out revision (canaryTrafficPercent: 0).

    The canary's version is read from the cluster unless --model (or --storage-uri/--model-version) names it.
    """
    from facegate.rollout.kserve import get_status, rollback

    if model or storage_uri or model_version:
        uri, version = _rollout_target(ctx, model, storage_uri, model_version)
    else:
        st = get_status(name, namespace)
        if not st.storage_uri or not st.model_version:
            raise FacegateError(f"{namespace}/{name} has no facegate model version to keep", code="not_deployed")
        uri, version = st.storage_uri, st.model_version
    obj = rollback(uri, version, name=name, namespace=namespace, crd_dir=crds, dry_run=dry_run,
                   release=_release(release, chart, helm, namespace))  # fmt: skip
    _rollout_done("rollback", obj, dry_run)


@rollout_app.command("status")
@_errors
def rollout_status(namespace: Namespace = "facegate", name: IsvcName = "facegate-verifier") -> None:
    """What serves now: model version, canary percent, revisions and their traffic (JSON)."""
    from facegate.rollout.kserve import get_status

    typer.echo(json.dumps(get_status(name, namespace).to_dict(), indent=2))


@rollout_app.command("executor")
@_errors
def rollout_executor(
    namespace: Annotated[str, typer.Option(help="Serving namespace: the release's and the request ConfigMap's.")] = (
        "facegate"
    ),
    configmap: Annotated[str, typer.Option(help="ConfigMap the pipeline writes rollout requests to.")] = (
        "facegate-rollout-request"
    ),
    poll: Annotated[float, typer.Option(help="Seconds between looks at the ConfigMap.")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="Handle what is pending, then exit.")] = False,
    heartbeat: Annotated[
        Path | None, typer.Option(help="File touched before each look (the Deployment's liveness probe).")
    ] = None,
    release: Release = "facegate",
    chart: Chart = _CHART,
    helm: HelmBin = "helm",
) -> None:
    """Carry out the training pipeline's rollout requests on the Helm release (the executor Deployment's command).

    The pipeline may only write a request (action, storage URI, model version, percent) into CONFIGMAP; this runs
    the `helm upgrade --reuse-values` for it under the executor's own ServiceAccount (docs/deploy.md).
    """
    from facegate.rollout.executor import run_executor

    run_executor(_release(release, chart, helm, namespace), configmap=configmap, poll_s=poll,
                 max_polls=1 if once else None, heartbeat=heartbeat)  # fmt: skip
