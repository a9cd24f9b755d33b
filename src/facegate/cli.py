"""The ``facegate`` command: one verb per stage.

Settings resolve as defaults < ``--config`` YAML < ``FACEGATE_*`` environment < flags, and every command that
writes output dumps the resolved settings beside it as ``config.yaml``. Errors facegate expects (bad images, no
face, malformed pairs, unknown models) print one ``error:`` line naming the file or value and exit with status 2;
nothing is printed as a traceback unless it is a bug.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from facegate import __version__
from facegate.config import Settings, load_settings
from facegate.errors import FacegateError

app = typer.Typer(
    name="facegate",
    help="Face verification for exam check-in: ingest, evaluate, verify, and manage data and models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Datasets: manifests, integrity checks, synthetic data, object storage.", no_args_is_help=True
)
models_app = typer.Typer(help="Registered face-embedding models.", no_args_is_help=True)
gallery_app = typer.Typer(
    help="Enrollment gallery: enroll, delete, list, reindex for a new model, rotate keys (FACEGATE_GALLERY_KEYS).",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys of kiosks and administrators for the verifier service.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")
app.add_typer(keys_app, name="keys")

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 2


def _errors(fn: F) -> F:
    """Turn expected errors into one clear line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FacegateError as exc:
            typer.echo(f"error: {exc.message} [{exc.code}]", err=True)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    obj = ctx.ensure_object(dict)
    settings = load_settings(obj.get("config"), overrides)
    # `models:/` URIs resolve against <home>/mlflow.db (unless MLFLOW_TRACKING_URI is set) wherever they are loaded,
    # including in processes this command starts: one home for the whole command.
    os.environ["FACEGATE_HOME"] = str(settings.home)
    return settings


def _progress(ctx: typer.Context) -> bool:
    return not ctx.ensure_object(dict).get("quiet", False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facegate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file.", exists=True, dir_okay=False)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Face verification for exam check-in."""
    ctx.ensure_object(dict).update({"config": config, "quiet": quiet})


@app.command()
@_errors
def ingest(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="Raw dataset: SRC/<identity>/<image>.")],
    dst: Annotated[Path, typer.Argument(help="Output: aligned 112x112 faces, report, manifest.")],
    workers: Annotated[int | None, typer.Option(help="Worker processes (0 = in this process).")] = None,
    resume: Annotated[bool, typer.Option(help="Skip images a previous run finished.")] = True,
    retry_failed: Annotated[bool, typer.Option(help="On resume, retry images that failed before.")] = False,
) -> None:
    """Detect and align every face of a raw image-folder dataset (parallel, resumable).

    Images that cannot be used (corrupt, not an image, too large, no face, ...) are listed with a reason in
    DST/ingest_report.json; the run goes on.
    """
    from facegate.faces.ingest import ingest as run_ingest

    settings = _settings(ctx, **{"ingest.workers": workers})
    report = run_ingest(src, dst, settings, resume=resume, retry_failed=retry_failed, progress=_progress(ctx))
    d = report.to_dict()
    typer.echo(
        f"aligned {d['aligned']}/{d['total']} images ({d['resumed']} already done), {d['failed']} failed"
        + (f": {json.dumps(d['failure_reasons'])}" if d["failed"] else "")
    )
    typer.echo(f"report: {Path(dst) / 'ingest_report.json'}")
    if report.interrupted:
        typer.echo("interrupted: run the same command again to resume", err=True)
        raise typer.Exit(130)


@app.command()
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
    target_far: Annotated[float | None, typer.Option(help="FAR for the deployment threshold.")] = None,
    record: Annotated[
        bool, typer.Option(help="When --model is a bundle, store the result and its threshold in the bundle.")
    ] = True,
) -> None:
    """Run the LFW 10-fold verification protocol and write metrics and plots."""
    from facegate.data.pairs import load_pairs
    from facegate.evaluate.runner import evaluate_pairs, write_report
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.models import load_embedder

    settings = _settings(
        ctx,
        model=model,
        **{
            "evaluate.align": align,
            "evaluate.flip": flip,
            "evaluate.batch_size": batch_size,
            "evaluate.target_far": target_far,
        },
    )
    ev = settings.evaluate
    pairset = load_pairs(pairs, images)
    embedder = load_embedder(settings.model)
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
    )
    write_report(result, pairset, out)
    settings.dump(out)
    m = result.metrics
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


@app.command()
@_errors
def verify(
    ctx: typer.Context,
    image_a: Annotated[Path, typer.Argument(help="First photo.")],
    image_b: Annotated[Path, typer.Argument(help="Second photo.")],
    model: Annotated[str | None, typer.Option(help="Registered model name or bundle directory.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Cosine threshold (default: the model's).")] = None,
) -> None:
    """Do two photos show the same person? Prints JSON {score, match, threshold, model, ...}."""
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.models import load_embedder
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


@app.command(context_settings={"allow_extra_args": False})
@_errors
def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Training config YAML (see configs/).", exists=True, dir_okay=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides, e.g. optim.lr=0.05")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from <output>/checkpoints/last.pt if present.")] = True,
    track: Annotated[bool, typer.Option(help="Log to MLflow (MLFLOW_TRACKING_URI, else <home>/mlflow.db).")] = True,
) -> None:
    """Train a backbone with a margin softmax (run under torchrun for DDP: gloo on CPU, NCCL on GPU)."""
    from facegate.train.config import load_train_config
    from facegate.train.run import run_training

    cfg = load_train_config(config, overrides or [])
    settings = _settings(ctx)
    result, run_id = run_training(cfg, track=track, home=settings.home, resume=resume, progress=_progress(ctx))
    if result.bundle is None:  # not rank 0
        return
    val = result.final_val
    typer.echo(
        f"trained {result.steps} steps ({result.epochs:.2f} epochs) in {result.seconds:.1f} s, "
        f"{result.samples_per_second:.1f} samples/s"
        + (" (stopped early: target reached)" if result.stopped_early else "")
    )
    if val:
        typer.echo(f"validation accuracy {val['accuracy']:.4f} ± {val['accuracy_std']:.4f}, AUC {val['auc']:.4f}")
    typer.echo(f"model bundle: {result.bundle} (use --model {result.bundle})")
    if run_id:
        typer.echo(f"mlflow run: {run_id}")


@app.command()
@_errors
def tune(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Base training config YAML.", exists=True, dir_okay=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides of the base config")] = None,
    samples: Annotated[int, typer.Option(help="Number of trials.")] = 4,
    target: Annotated[float | None, typer.Option(help="Stop the search once a trial reaches this accuracy.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (trials, Ray results, best_config.yaml).")] = Path(
        ".facegate/tune"
    ),
    cpus: Annotated[int, typer.Option(help="CPUs Ray may use.")] = 2,
    cpus_per_trial: Annotated[int, typer.Option(help="CPUs per trial.")] = 1,
) -> None:
    """Tune lr, weight decay, margin, embedding size and batch with Ray Tune + ASHA; nested MLflow runs."""
    from facegate.train.config import load_train_config
    from facegate.tune.search import run_tune

    base = load_train_config(config, overrides or [])
    settings = _settings(ctx)
    res = run_tune(
        base,
        output=out,
        num_samples=samples,
        target_accuracy=target,
        home=settings.home,
        cpus=cpus,
        cpus_per_trial=cpus_per_trial,
    )
    for i, t in enumerate(res.trials):
        acc = "failed: " + (t["error"] or "")[:120] if t["accuracy"] is None else f"{t['accuracy']:.4f}"
        typer.echo(f"trial {i}: accuracy {acc}  {json.dumps(t['config'], sort_keys=True)}")
    typer.echo(f"best accuracy {res.best_accuracy:.4f}" + (" (target reached)" if res.reached_target else ""))
    typer.echo(f"best config: {res.best_config_path}; mlflow parent run: {res.parent_run_id}")


@app.command()
@_errors
def export(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name or bundle directory.")],
    out: Annotated[Path, typer.Option(help="Output root: one bundle per format under OUT/<format>/.")],
    faces: Annotated[Path, typer.Option(help="Folder of real aligned 112x112 faces (parity and INT8 calibration).")],
    formats: Annotated[
        str, typer.Option(help="Comma-separated: onnx, openvino-fp32, openvino-fp16, openvino-int8.")
    ] = ("onnx,openvino-fp32,openvino-fp16,openvino-int8"),
    max_faces: Annotated[int, typer.Option(help="Faces sampled from --faces.")] = 400,
    pairs: Annotated[Path | None, typer.Option(help="Pairs for the accuracy gate and per-format threshold.")] = None,
    images: Annotated[Path | None, typer.Option(help="Image root of --pairs.")] = None,
    target_far: Annotated[float | None, typer.Option(help="FAR for each format's threshold.")] = None,
) -> None:
    """Export to ONNX and OpenVINO FP32/FP16/INT8; each format must pass its parity gate to be written."""
    from facegate.data.pairs import load_pairs
    from facegate.export.convert import export_model, load_faces

    settings = _settings(ctx, **{"evaluate.target_far": target_far})
    pairset = load_pairs(pairs, images) if pairs is not None else None
    report = export_model(
        model,
        out,
        load_faces(faces, max_faces),
        formats=[f.strip() for f in formats.split(",")],
        pairs=pairset,
        target_far=settings.evaluate.target_far,
        progress=_progress(ctx),
    )
    for fmt, entry in report.formats.items():
        acc = entry.get("evaluation", {}) or {}
        typer.echo(
            f"{fmt:15s} cosine mean {entry['parity']['cosine_mean']:.5f} min {entry['parity']['cosine_min']:.5f}"
            + (f", accuracy {acc['accuracy']:.4f} (drop {entry['accuracy_drop'] * 100:+.2f} pts)" if acc else "")
            + f" -> {out / fmt}"
        )


@app.command()
@_errors
def demo(
    ctx: typer.Context,
    workdir: Annotated[Path | None, typer.Option(help="Working directory (default <home>/demo; emptied).")] = None,
) -> None:
    """Run the main job end to end on data that ships with the installed packages (no download, no cluster)."""
    from facegate.demo import format_summary, run_demo

    summary = run_demo(_settings(ctx), workdir, progress=_progress(ctx))
    typer.echo(format_summary(summary))
    if not summary["verify_same_person"]["match"] or summary["verify_different_people"]["match"]:
        typer.echo("error: the demo's verification went the wrong way", err=True)
        raise typer.Exit(1)


@app.command("config")
@_errors
def show_config(ctx: typer.Context) -> None:
    """Print the resolved settings (defaults < --config < FACEGATE_* env)."""
    import yaml

    typer.echo(yaml.safe_dump(_settings(ctx).to_dict(), sort_keys=True), nl=False)


@models_app.command("list")
@_errors
def models_list() -> None:
    """List registered models with their embedding size and default threshold."""
    from facegate.models import create_embedder, list_models

    for name in list_models():
        try:
            info = create_embedder(name).describe()
            typer.echo(
                f"{name:12s} dim={info['embedding_size']:<5d} threshold={info['default_threshold']:.3f} "
                f"version={info['version']}"
            )
        except FacegateError as exc:
            typer.echo(f"{name:12s} unavailable: {exc.message}")


@models_app.command("import-insightface")
@_errors
def models_import_insightface(
    ctx: typer.Context,
    pth: Annotated[Path, typer.Argument(help="insightface arcface_torch backbone.pth (a state dict).")],
    arch: Annotated[str, typer.Option(help="Architecture the checkpoint was trained as.")] = "iresnet50",
    name: Annotated[str | None, typer.Option(help="Bundle name (default: the file's folder name).")] = None,
    embedding_size: Annotated[int, typer.Option(help="Embedding size of the checkpoint.")] = 512,
    out: Annotated[Path | None, typer.Option(help="Bundle directory (default <home>/models/NAME).")] = None,
) -> None:
    """Register an insightface checkpoint as a facegate model bundle (usable as --model DIR everywhere)."""
    from facegate.models.torch_embedder import import_insightface

    settings = _settings(ctx)
    bundle_name = name or pth.resolve().parent.name or pth.stem
    target = out or settings.home / "models" / bundle_name
    bundle = import_insightface(pth, target, arch=arch, embedding_size=embedding_size, name=bundle_name)
    typer.echo(f"registered {arch} bundle at {bundle}; use --model {bundle}")


def _gallery(ctx: typer.Context, url: str | None) -> Any:
    from facegate.serve.gallery import Gallery

    return Gallery(url or _settings(ctx).gallery_url())


GalleryUrl = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL (default sqlite:///<home>/gallery.db).")]


@gallery_app.command("enroll")
@_errors
def gallery_enroll(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(help="The student's id (1-64 printable characters).")],
    photos: Annotated[list[Path], typer.Argument(help="1..N photos of the student.")],
    model: Annotated[str | None, typer.Option(help="Model whose template is built.")] = None,
    db: GalleryUrl = None,
) -> None:
    """Enroll or re-enroll a student; photos without exactly one clear face are rejected with the reason."""
    from facegate.errors import ImageError
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.models import load_embedder

    settings = _settings(ctx, model=model)
    limits = limits_from_settings(settings)
    blobs = []
    for p in photos:
        size = p.stat().st_size if p.is_file() else -1
        if size < 0:
            raise ImageError(f"{p}: file not found", code="missing_image")
        if size > limits.max_bytes:
            raise ImageError(f"{p}: {size} bytes exceeds the {limits.max_bytes}-byte limit", code="too_large")
        blobs.append(p.read_bytes())
    res = _gallery(ctx, db).enroll(
        student_id,
        blobs,
        load_embedder(settings.model),
        aligner_from_settings(settings, multiple="reject"),
        limits=limits,
        admin="cli",
    )
    typer.echo(
        json.dumps(
            {
                "student_id": res.student_id,
                "accepted": res.accepted,
                "rejected": res.rejected,
                "model_version": res.model_version,
            },
            indent=2,
        )
    )


@gallery_app.command("delete")
@_errors
def gallery_delete(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(help="The student's id.")],
    db: GalleryUrl = None,
) -> None:
    """Delete a student and all their biometric data (crops and templates)."""
    if not _gallery(ctx, db).delete(student_id, admin="cli"):
        typer.echo(f"error: no student {student_id!r} [unknown_student]", err=True)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"deleted {student_id}")


@gallery_app.command("list")
@_errors
def gallery_list(ctx: typer.Context, db: GalleryUrl = None) -> None:
    """List enrolled students (ids, photo counts, model versions; no biometric data)."""
    typer.echo(json.dumps(_gallery(ctx, db).students(), indent=2))


@gallery_app.command("reindex")
@_errors
def gallery_reindex(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model (bundle) whose templates to build from the stored crops.")],
    db: GalleryUrl = None,
) -> None:
    """Build templates for a new model version before it takes traffic."""
    from facegate.models import load_embedder

    embedder = load_embedder(model)
    n = _gallery(ctx, db).reindex(embedder)
    typer.echo(f"indexed {n} students for model version {embedder.version}")


@gallery_app.command("rotate-keys")
@_errors
def gallery_rotate(ctx: typer.Context, db: GalleryUrl = None) -> None:
    """Re-encrypt every stored crop with the active (first) key of FACEGATE_GALLERY_KEYS."""
    typer.echo(f"re-encrypted {_gallery(ctx, db).rotate_keys()} crops")


@gallery_app.command("new-key")
def gallery_new_key(key_id: Annotated[str, typer.Argument(help="Id of the new key.")] = "k1") -> None:
    """Print a new id:base64key entry for FACEGATE_GALLERY_KEYS (store it in a secret, never in git)."""
    from facegate.serve.gallery import KeyRing

    typer.echo(KeyRing.generate(key_id))


def _keys(ctx: typer.Context, url: str | None) -> Any:
    from facegate.serve.auth import ApiKeyStore

    return ApiKeyStore.from_url(url or _settings(ctx).gallery_url())


@keys_app.command("create")
@_errors
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Kiosk id or administrator name.")],
    role: Annotated[str, typer.Option(help="kiosk (verify, embed) or admin (also enroll, delete, audit).")] = "kiosk",
    db: GalleryUrl = None,
) -> None:
    """Create (or replace) an API key; it is printed once and stored only as its SHA-256."""
    typer.echo(_keys(ctx, db).create(name, role))  # type: ignore[arg-type]


@keys_app.command("list")
@_errors
def keys_list(ctx: typer.Context, db: GalleryUrl = None) -> None:
    """List key names, roles and dates (never the keys)."""
    typer.echo(json.dumps(_keys(ctx, db).list(), indent=2))


@keys_app.command("revoke")
@_errors
def keys_revoke(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Key name.")], db: GalleryUrl = None
) -> None:
    """Revoke a key (running servers stop accepting it within 5 seconds)."""
    if not _keys(ctx, db).revoke(name):
        typer.echo(f"error: no active key named {name!r} [key_not_found]", err=True)
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"revoked {name}")


@app.command()
@_errors
def serve(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option(help="Registered model or bundle (an OpenVINO export in production).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1; 0.0.0.0 in a pod).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8080).")] = None,
    db: GalleryUrl = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /metrics (default 8082, on serve.metrics_host; 0 = a free port).")
    ] = None,
) -> None:
    """Serve the KServe verifier (v2 /v2/models/verifier/infer, v1 :predict), the embed model and the admin API.

    Needs FACEGATE_GALLERY_KEYS (crop encryption) and API keys (`facegate keys create`, or FACEGATE_ADMIN_KEY for
    a bootstrap admin). Logs are JSON lines on stderr; Prometheus metrics on their own port (the "starting" log
    line gives their URL).
    """
    from facegate.logs import configure_json_logging
    from facegate.serve.app import serve as run_server

    settings = _settings(
        ctx,
        model=model,
        **{"serve.host": host, "serve.port": port, "serve.gallery_url": db, "serve.metrics_port": metrics_port},
    )
    configure_json_logging(settings.log_level, queued=True)  # log lines off the request path
    run_server(settings)


@data_app.command("manifest")
@_errors
def data_manifest(root: Annotated[Path, typer.Argument(help="Dataset root (<identity>/<image>).")]) -> None:
    """Write ROOT/manifest.json (path, identity, sha256, bytes per file) and print the dataset version."""
    from facegate.data.storage import write_manifest

    m = write_manifest(root)
    typer.echo(f"{m['n_files']} files, {m['n_identities']} identities, version {m['version']}")


@data_app.command("check")
@_errors
def data_check(root: Annotated[Path, typer.Argument(help="Dataset root with manifest.json.")]) -> None:
    """Compare a dataset with its manifest; exit 1 and list the files that changed, vanished or appeared."""
    from facegate.data.storage import check_manifest

    diff = check_manifest(root)
    if diff.ok:
        typer.echo("dataset matches its manifest")
        return
    for label, items in (("changed", diff.changed), ("missing", diff.missing), ("added", diff.added)):
        for item in items:
            typer.echo(f"{label}: {item}")
    raise typer.Exit(1)


@data_app.command("synth")
@_errors
def data_synth(
    out: Annotated[Path, typer.Argument(help="Output folder (<identity>/<image>.jpg, already aligned).")],
    identities: Annotated[int, typer.Option(help="Number of identities.")] = 20,
    per_identity: Annotated[int, typer.Option(help="Images per identity.")] = 10,
    pairs: Annotated[int, typer.Option(help="Also write OUT/pairs.csv with this many pairs (0 = none).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the deterministic synthetic identity dataset (aligned cartoon faces for tests and demos)."""
    from facegate.data.storage import write_manifest
    from facegate.data.synthetic import write_synthetic_folder, write_synthetic_pairs

    files = write_synthetic_folder(out, identities, per_identity, seed)
    if pairs:
        write_synthetic_pairs(out / "pairs.csv", identities, per_identity, pairs, seed)
    m = write_manifest(out)
    typer.echo(f"wrote {len(files)} images of {identities} identities to {out} (version {m['version'][:12]})")


@data_app.command("push")
@_errors
def data_push(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="Local dataset or bundle directory.")],
    key: Annotated[str, typer.Argument(help="Destination prefix inside the store.")],
) -> None:
    """Upload a directory to the object store (settings storage.url: a path, or s3://bucket/prefix)."""
    from facegate.data.storage import open_storage

    settings = _settings(ctx)
    store = open_storage(settings.storage_url(), endpoint_url=settings.storage.s3_endpoint)
    n = store.upload_dir(src, key)
    typer.echo(f"uploaded {n} files to {store.url}/{key}")


@data_app.command("pull")
@_errors
def data_pull(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Prefix inside the store.")],
    dst: Annotated[Path, typer.Argument(help="Local directory.")],
) -> None:
    """Download a prefix of the object store into a directory, then check its manifest if it has one."""
    from facegate.data.storage import MANIFEST_NAME, check_manifest, open_storage

    settings = _settings(ctx)
    store = open_storage(settings.storage_url(), endpoint_url=settings.storage.s3_endpoint)
    n = store.download_dir(key, dst)
    typer.echo(f"downloaded {n} files from {store.url}/{key}")
    if (dst / MANIFEST_NAME).is_file():
        diff = check_manifest(dst)
        if not diff.ok:
            typer.echo(f"error: downloaded data does not match its manifest: {diff}", err=True)
            raise typer.Exit(1)
        typer.echo("manifest verified")


registry_app = typer.Typer(
    help="MLflow Model Registry: versions of the `facegate` model and the champion/challenger aliases.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
ModelName = Annotated[str, typer.Option("--name", help="Registered model name.")]


@registry_app.command("list")
@_errors
def registry_list(ctx: typer.Context, name: ModelName = "facegate") -> None:
    """Every version, newest first, with its aliases, bundle version and accuracy tags."""
    from facegate.registry.models import list_versions

    versions = list_versions(name, home=_settings(ctx).home)
    if not versions:
        typer.echo(f"no versions of {name!r} registered yet (facegate registry register BUNDLE)")
    for v in versions:
        aliases = ",".join(v.aliases) or "-"
        typer.echo(f"{v.uri:22s} {aliases:22s} {v.model_version:40s} threshold {v.tags.get('threshold', '?')}")


@registry_app.command("show")
@_errors
def registry_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="models:/NAME@ALIAS or models:/NAME/VERSION.")]
) -> None:
    """One version as JSON: storage URI, bundle version, aliases and every tag."""
    from facegate.registry.models import get_version

    typer.echo(json.dumps(get_version(ref, home=_settings(ctx).home).to_dict(), indent=2))


@registry_app.command("alias")
@_errors
def registry_alias(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="champion, challenger, or any alias.")],
    version: Annotated[str, typer.Argument(help="Version number to point it at.")],
    name: ModelName = "facegate",
) -> None:
    """Point an alias at a version (e.g. a manual promotion or rollback of the registry state)."""
    from facegate.registry.models import set_alias

    v = set_alias(name, alias, version, home=_settings(ctx).home)
    typer.echo(f"{name}@{alias} -> {v.uri} ({v.model_version})")


@registry_app.command("register")
@_errors
def registry_register(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.", exists=True, file_okay=False)],
    alias: Annotated[str | None, typer.Option(help="Alias for the new version ('' for none).")] = "challenger",
    name: ModelName = "facegate",
) -> None:
    """Register a bundle as a new version (its metrics and threshold become tags)."""
    from facegate.registry.models import register_bundle

    v = register_bundle(bundle, name=name, alias=alias or None, home=_settings(ctx).home)
    typer.echo(f"registered {v.uri} ({v.model_version})" + (f" as {name}@{alias}" if alias else ""))


rollout_app = typer.Typer(
    help="KServe rollout of the verifier: canary, promote, rollback, status (server-side apply).", no_args_is_help=True
)
app.add_typer(rollout_app, name="rollout")

RolloutModel = Annotated[
    str | None, typer.Option("--model", help="Registered version: models:/facegate@challenger or models:/facegate/3.")
]
StorageUri = Annotated[str | None, typer.Option(help="Bundle URI (instead of --model; with --model-version).")]
ModelVersionOpt = Annotated[str | None, typer.Option(help="Bundle version string (instead of --model).")]
Namespace = Annotated[str, typer.Option(help="Namespace of the InferenceService.")]
IsvcName = Annotated[str, typer.Option("--name", help="InferenceService name.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the object (YAML) instead of applying it.")]
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
) -> None:
    """Route PERCENT % of check-ins to a new version; refused unless the gallery has its templates."""
    from facegate.rollout.kserve import canary

    uri, version = _rollout_target(ctx, model, storage_uri, model_version)
    baseline = _serving_version(name, namespace, dry_run)
    obj = canary(uri, version, percent, gallery=db or _settings(ctx).gallery_url(), baseline_version=baseline,
                 name=name, namespace=namespace, crd_dir=crds, dry_run=dry_run)  # fmt: skip
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
) -> None:
    """Send 100 % of check-ins to the version (removes canaryTrafficPercent); templates are checked first."""
    from facegate.rollout.kserve import promote

    uri, version = _rollout_target(ctx, model, storage_uri, model_version)
    obj = promote(uri, version, gallery=db or _settings(ctx).gallery_url(), name=name, namespace=namespace,
                  crd_dir=crds, dry_run=dry_run)  # fmt: skip
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
    obj = rollback(uri, version, name=name, namespace=namespace, crd_dir=crds, dry_run=dry_run)
    _rollout_done("rollback", obj, dry_run)


@rollout_app.command("status")
@_errors
def rollout_status(namespace: Namespace = "facegate", name: IsvcName = "facegate-verifier") -> None:
    """What serves now: model version, canary percent, revisions and their traffic (JSON)."""
    from facegate.rollout.kserve import get_status

    typer.echo(json.dumps(get_status(name, namespace).to_dict(), indent=2))


pipeline_app = typer.Typer(
    help="Kubeflow pipelines of pipelines/: compile them, run them locally or on a cluster.", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")
PipelineName = Annotated[str, typer.Argument(help="Pipeline: a file name in pipelines/ (training, tuning).")]


@pipeline_app.command("compile")
@_errors
def pipeline_compile(
    name: PipelineName,
    out: Annotated[Path | None, typer.Option(help="Output YAML (default: pipelines/NAME.yaml).")] = None,
) -> None:
    """Compile a pipeline to the KFP v2 IR YAML (what `python pipelines/NAME.py` writes)."""
    from facegate.pipeline.runner import compile_pipeline

    typer.echo(f"wrote {compile_pipeline(name, out)}")


@pipeline_app.command("run")
@_errors
def pipeline_run(
    ctx: typer.Context,
    name: PipelineName,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A pipeline parameter, key=value (value parsed as YAML).")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp's SubprocessRunner (offline).")] = False,
    root: Annotated[Path | None, typer.Option(help="--local: where runs go (default <home>/pipelines).")] = None,
    host: Annotated[str | None, typer.Option(help="KFP API address (default KFP_HOST or in-cluster).")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace.")] = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "facegate",
    verbose: Annotated[bool, typer.Option(help="--local: stream every step's full log (kfp's own output).")] = False,
) -> None:
    """Run a pipeline: --local on this machine (MLflow on SQLite, local object store), else on Kubeflow."""
    import yaml

    from facegate.pipeline.runner import run_local, run_remote

    settings = _settings(ctx)
    params: dict[str, Any] = {}
    for item in param or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected key=value", param_hint="--param")
        params[key.strip()] = yaml.safe_load(raw)
    if local:
        where = root or settings.home / "pipelines"
        where.mkdir(parents=True, exist_ok=True)
        log = where / f"{name}-last.log"
        run = run_local(name, params, pipeline_root=where, log_path=None if verbose else log, echo=typer.echo)
        if not verbose:
            typer.echo(f"every step's full log: {log}")
        typer.echo(f"pipeline {name}: {run.state} in {run.seconds:.0f} s; artifacts under {run.where}")
        for task, out in run.outputs.items():
            text = ", ".join(f"{k} {v}" for k, v in out.items())
            typer.echo(f"  {task}: " + (text if len(text) <= 160 else text[:157] + "..."))
    else:
        run = run_remote(name, params, host=host, namespace=namespace, experiment=experiment)
        typer.echo(f"started {name}: {run.where}")


@app.command()
@_errors
def drift(
    scores: Annotated[
        Path,
        typer.Argument(
            help="The champion's scores.csv on the new labelled pairs (evaluate --out).", exists=True, dir_okay=False
        ),
    ],
    reference: Annotated[
        Path, typer.Option(help="Its scores.csv on the reference pairs.", exists=True, dir_okay=False)
    ],
    model: Annotated[
        str | None, typer.Option(help="The model whose threshold is judged (models:/... or bundle).")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="The serving threshold (instead of --model).")] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(help="The new evaluation's metrics.json, added to the report.", exists=True, dir_okay=False),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write drift.json and drift.md here.")] = None,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with status 1 when drift is found.")] = False,
) -> None:
    """Drift report: PSI and KS of genuine and impostor scores against the reference, TAR/FAR at the threshold."""
    from facegate.evaluate.drift import drift_report, read_scores, report_markdown
    from facegate.utils import atomic_write_text

    if threshold is None:
        if model is None:
            raise FacegateError("give --model (its threshold is used) or --threshold", code="bad_usage")
        from facegate.models import load_embedder

        threshold = load_embedder(model).default_threshold
    recent_metrics = json.loads(metrics.read_text()) if metrics else None
    report = drift_report(read_scores(scores), read_scores(reference), float(threshold), recent_metrics=recent_metrics)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "drift.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(out / "drift.md", report_markdown(report))
    typer.echo(json.dumps(report, indent=2))
    if fail_on_drift and report["drifted"]:
        raise typer.Exit(1)


liveness_app = typer.Typer(
    help="Passive liveness (MiniFASNet, optional): convert the published weights into a parity-gated bundle.",
    no_args_is_help=True,
)
app.add_typer(liveness_app, name="liveness")


@liveness_app.command("convert")
@_errors
def liveness_convert(
    weights: Annotated[Path, typer.Option(help="Folder with the published MiniFASNet .pth files (SHA-256 checked).")],
    out: Annotated[Path, typer.Option(help="Liveness bundle folder to write (ONNX + OpenVINO + liveness.json).")],
    photos: Annotated[Path, typer.Option(help="Real face photos; their crops are the parity gate's inputs.")],
    threshold: Annotated[float, typer.Option(help="Liveness threshold the bundle ships.")] = 0.5,
) -> None:
    """Convert MiniFASNet V2 (scale 2.7) and V1SE (scale 4.0) to ONNX and OpenVINO, gated by parity with PyTorch."""
    from facegate.faces.liveness import convert_from_photos

    bundle = convert_from_photos(weights, out, photos, threshold)
    typer.echo(json.dumps({m["name"]: m["parity"] for m in bundle["models"]}, indent=2))
    typer.echo(f"liveness bundle written to {out} (threshold {bundle['threshold']})")


@app.command("evaluate-pad")
@_errors
def evaluate_pad_command(
    ctx: typer.Context,
    root: Annotated[
        Path | None, typer.Argument(help="Labelled folder: bona_fide/** and attack/<type>/** (optional).")
    ] = None,
    liveness: Annotated[str | None, typer.Option(help="Liveness bundle (default: serve.liveness_model).")] = None,
    bona_fide: Annotated[
        list[Path] | None, typer.Option(help="A folder of bona fide photos (repeatable), besides ROOT's.")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold (default: the bundle's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write pad.json here as well.")] = None,
) -> None:
    """ISO/IEC 30107-3 figures of the liveness check: APCER per attack type, BPCER, ACER."""
    from facegate.evaluate.pad import run_pad
    from facegate.utils import atomic_write_text

    settings = _settings(ctx)
    bundle = liveness or settings.serve.liveness_model
    if not bundle:
        typer.echo("error: give --liveness (a bundle from `facegate liveness convert`) [model_missing]", err=True)
        raise typer.Exit(EXIT_ERROR)
    report = run_pad(bundle, root, bona_fide or [], threshold)
    text = json.dumps(report, indent=2)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "pad.json", text + "\n")
    typer.echo(text)


# Third-party telemetry stays off in everything the `facegate` command starts (set by the console entry point,
# never on import: importing facegate changes no environment).
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "OPENVINO_TELEMETRY_OPT_OUT": "1",
    "NNCF_TELEMETRY_OPT_OUT": "1",
}


def run() -> None:
    """Console entry point: telemetry off, then the Typer app."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    app(prog_name="facegate")
