"""Evaluation verbs: ``evaluate`` (the LFW protocol, per-group reports) and ``verify``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli._common import _errors, _progress, _settings

# The verbs of this stage, merged into the root app without a group name.
commands = typer.Typer()


@commands.command()
@_errors
def evaluate(
    ctx: typer.Context,
    pairs: Annotated[Path, typer.Option(help="Pairs: LFW pairs.txt, insightface .bin, or CSV image_a,image_b,same.")],
    out: Annotated[Path, typer.Option(help="Output directory for metrics.json, roc.png, scores.png.")],
    model: Annotated[str | None, typer.Option(help="Registered model name or bundle directory.")] = None,
    images: Annotated[Path | None, typer.Option(help="Image root (default: the pairs file's folder).")] = None,
    align: Annotated[str | None, typer.Option(help="auto | always | never.")] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="Flip test-time augmentation.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Faces per forward pass.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="f32 | bf16: the network's arithmetic (bf16: SFace on OpenVINO, faster, scores move <= ~0.01)."
        ),
    ] = None,
    target_far: Annotated[float | None, typer.Option(help="FAR for the deployment threshold.")] = None,
    record: Annotated[
        bool, typer.Option(help="When --model is a bundle, store the result and its threshold in the bundle.")
    ] = True,
    groups: Annotated[
        Path | None,
        typer.Option(
            help="CSV image|identity,<label>...: per-group error rates at the model's deployment threshold "
            "(groups.json, plots; docs/fairness.md).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    covariates: Annotated[
        bool,
        typer.Option(
            "--covariates", help="Also bin every image by illumination, face size, pose and sharpness: covariates/."
        ),
    ] = False,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse and keep embeddings in <home>/cache (same model+image).")
    ] = True,
) -> None:
    """Run the LFW 10-fold verification protocol and write metrics and plots."""
    from facegate.bundles import load_embedder
    from facegate.data.pairs import load_pairs
    from facegate.evaluate.embed_cache import EmbeddingCache
    from facegate.evaluate.runner import evaluate_pairs, write_report
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings

    settings = _settings(
        ctx,
        model=model,
        **{
            "evaluate.align": align,
            "evaluate.flip": flip,
            "evaluate.batch_size": batch_size,
            "evaluate.precision": precision,
            "evaluate.target_far": target_far,
        },
    )
    ev = settings.evaluate
    # matplotlib's import (~1 s) on a spare thread while the faces are embedded, not after them.
    threading.Thread(target=_import_pyplot, daemon=True).start()
    pairset = load_pairs(pairs, images)
    embedder = load_embedder(settings.model)
    embedder.set_precision(ev.precision)
    result = evaluate_pairs(
        embedder,
        pairset,
        aligner=aligner_from_settings(settings),
        mode=ev.align,
        flip=ev.flip,
        batch_size=ev.batch_size,
        workers=ev.workers,
        target_far=ev.target_far,
        limits=limits_from_settings(settings),
        progress=_progress(ctx),
        cache=EmbeddingCache.at_home(settings.home) if cache else None,
    )
    write_report(result, pairset, out)
    settings.dump(out)
    m = result.metrics
    if groups is not None:
        from facegate.evaluate.fairness_plots import run_groups

        # The threshold the model version ships with, read before this run may record a new one in the bundle.
        for line in run_groups(groups, pairset, result, embedder, out):
            typer.echo(line)
    if covariates:
        from facegate.evaluate.covariates import run_covariates

        lines = run_covariates(
            pairset,
            result,
            embedder,
            aligner_from_settings(settings),
            out,
            mode=ev.align,
            workers=ev.workers,
            limits=limits_from_settings(settings),
        )
        typer.echo("\n".join(lines))
    if record and Path(settings.model).is_dir() and not m["n_failed_pairs"]:
        from facegate.evaluate.runner import record_in_bundle

        thr = record_in_bundle(settings.model, m)
        typer.echo(f"recorded in {settings.model}: threshold {thr:.4f} (target FAR {m['target_far']:g})")
    tar = ", ".join(f"{k}: {v:.4f}" for k, v in m["tar_at_far"].items() if v is not None)
    typer.echo(
        f"{m['model']} on {m['pairs']} ({m['n_pairs']} pairs): accuracy {m['accuracy']:.4f} "
        f"± {m['accuracy_std']:.4f}, AUC {m['auc']:.4f}, EER {m['eer']:.4f}"
    )
    typer.echo(f"TAR@FAR {{{tar}}}; threshold {m['threshold']:.4f}")
    if m["n_failed_pairs"]:
        typer.echo(
            f"warning: {m['n_failed_pairs']} pairs failed (scored as non-matches) because of "
            f"{len(m['failed_images'])} unusable images:",
            err=True,
        )
        for name, why in list(m["failed_images"].items())[:20]:
            typer.echo(f"  {name}: {why}", err=True)
        if len(m["failed_images"]) > 20:
            typer.echo(f"  ... and {len(m['failed_images']) - 20} more in {out / 'metrics.json'}", err=True)
    typer.echo(f"wrote {out / 'metrics.json'}, roc.png, scores.png, scores.csv")


def _import_pyplot() -> None:
    from facegate.evaluate.plots import _pyplot

    _pyplot()


@commands.command()
@_errors
def verify(
    ctx: typer.Context,
    image_a: Annotated[Path, typer.Argument(help="First photo.")],
    image_b: Annotated[Path, typer.Argument(help="Second photo.")],
    model: Annotated[str | None, typer.Option(help="Registered model name or bundle directory.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Cosine threshold (default: the model's).")] = None,
) -> None:
    """Do two photos show the same person? Prints JSON {score, match, threshold, model, ...}."""
    from facegate.bundles import load_embedder
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.verify import verify_pair

    settings = _settings(ctx, model=model, **{"verify.threshold": threshold})
    embedder = load_embedder(settings.model)
    result = verify_pair(
        image_a,
        image_b,
        embedder,
        aligner_from_settings(settings),
        threshold=settings.verify.threshold,
        limits=limits_from_settings(settings),
    )
    typer.echo(json.dumps(result, indent=2))
