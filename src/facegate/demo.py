"""``make demo`` / ``facegate demo``: the main job end to end on data a fresh machine already has.

No ``../shared``, no download: the photos are the portraits that ship inside installed packages (Grace Hopper in
matplotlib's sample data, astronaut Eileen Collins and the cameraman in scikit-image's data), turned into a small raw
"check-in" dataset by placing each face on a 640x480 frame at varied size, position, tilt, lighting and JPEG
quality, plus a 0-byte file, a text file named .jpg and a photo without a face to show that bad input is reported,
not fatal. The demo then:

1. ingests (detects and aligns) the raw dataset with 2 worker processes,
2. evaluates the SFace baseline on every genuine and impostor pair of the aligned set (metrics, ROC, histograms),
3. verifies two raw photos of the same person and two of different people,
4. exports SFace to OpenVINO and registers it in MLflow (SQLite) as the first ``champion``,
5. runs the training pipeline locally with kfp's SubprocessRunner: ingest → train a tiny CPU model → evaluate →
   export → register as ``challenger`` → the statistical gate against the champion (a tiny CPU model should lose,
   and the demo says so with the gate's numbers),
6. serves ``models:/facegate@champion`` as the KServe verifier on 127.0.0.1 (in this process), enrolls one person
   over the admin API and checks in a photo of them, one of someone else and one without a face over the v2
   protocol.

Variants of one portrait are easier than real check-in photos: the point is the pipeline, not the figures.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facegate.config import Settings
from facegate.data.imageio import encode_jpeg, read_image
from facegate.errors import DataError

__all__ = ["bundled_portraits", "make_raw_dataset", "run_demo"]


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    return None


def bundled_portraits() -> dict[str, Path]:
    """Portrait photos shipped inside installed packages, by identity name.

    Raises:
        DataError: If fewer than two are available (the demo needs impostor pairs).
    """
    candidates = {
        "grace_hopper": ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
        "eileen_collins": ("skimage", "data", "astronaut.png"),
        "cameraman": ("skimage", "data", "camera.png"),
    }
    found = {name: p for name, (pkg, *parts) in candidates.items() if (p := _package_file(pkg, *parts)) is not None}
    if len(found) < 2:
        raise DataError("the demo needs matplotlib and scikit-image installed (`make demo` installs them)")
    return found


def _place(face: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """Put a portrait on a frame at a random scale, position, tilt and lighting."""
    w, h = size
    bg = np.empty((h, w, 3), np.float64)
    bg[:] = rng.uniform(40, 220, size=3)
    bg += np.linspace(-30, 30, w)[None, :, None]
    scale = rng.uniform(0.55, 0.85) * h / face.shape[0]
    fh, fw = round(face.shape[0] * scale), round(face.shape[1] * scale)
    small = cv2.resize(face, (fw, fh), interpolation=cv2.INTER_AREA).astype(np.float64)
    x0 = int(rng.integers(0, max(1, w - fw)))
    y0 = int(rng.integers(0, max(1, h - fh)))
    bg[y0 : y0 + fh, x0 : x0 + fw] = small[: h - y0, : w - x0]
    m = cv2.getRotationMatrix2D((x0 + fw / 2, y0 + fh / 2), rng.uniform(-12, 12), 1.0)
    out = cv2.warpAffine(bg, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    out = out * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.asarray(np.clip(out, 0, 255), dtype=np.uint8)


def make_raw_dataset(root: Path, per_identity: int = 12, seed: int = 0) -> dict[str, list[Path]]:
    """Write the raw demo dataset (``root/<identity>/<k>.jpg``) plus three bad files in ``root/bad_input/``.

    Returns:
        Files written per identity.
    """
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for name, src in bundled_portraits().items():
        portrait = read_image(src)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for k in range(per_identity):
            path = folder / f"{k:02d}.jpg"
            path.write_bytes(encode_jpeg(_place(portrait, rng), quality=int(rng.integers(60, 96))))
            written[name].append(path)
    bad = root / "bad_input"
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is a text file with a .jpg name\n")
    landscape = np.clip(np.linspace(0, 255, 640)[None, :, None] + rng.normal(0, 8, (480, 640, 3)), 0, 255)
    (bad / "no_face.jpg").write_bytes(encode_jpeg(landscape.astype(np.uint8)))
    return written


def _pairs_csv(aligned: Path, out: Path) -> Path:
    identities = sorted(p.name for p in aligned.iterdir() if p.is_dir() and p.name != "bad_input")
    files = {i: sorted(f.relative_to(aligned).as_posix() for f in (aligned / i).glob("*.jpg")) for i in identities}
    rows: list[tuple[str, str, int]] = []
    for i in identities:
        rows += [(a, b, 1) for a, b in itertools.combinations(files[i], 2)]
    for i, j in itertools.combinations(identities, 2):
        rows += [(a, b, 0) for a in files[i] for b in files[j]]
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_a", "image_b", "same"])
        w.writerows(rows)
    return out


def run_demo(
    settings: Settings | None = None, workdir: str | Path | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Run the demo; returns (and writes as ``summary.json``) its summary.

    Args:
        settings: Resolved settings.
        workdir: Where to work (default ``<home>/demo``; emptied first).
        progress: Show progress bars.
    """
    from facegate.bundles import load_embedder
    from facegate.data.pairs import load_csv_pairs
    from facegate.evaluate.runner import evaluate_pairs, write_report
    from facegate.faces.ingest import ingest
    from facegate.faces.pipeline import aligner_from_settings, limits_from_settings
    from facegate.utils import atomic_write_text
    from facegate.verify import verify_pair

    settings = settings or Settings()
    work = Path(workdir) if workdir is not None else settings.home / "demo"
    if work.exists():
        shutil.rmtree(work)
    raw, aligned, evaldir = work / "raw", work / "aligned", work / "eval"
    raw.mkdir(parents=True)
    written = make_raw_dataset(raw)

    report = ingest(raw, aligned, settings, progress=progress)
    pairs = load_csv_pairs(_pairs_csv(aligned, work / "pairs.csv"), aligned)
    embedder = load_embedder(settings.model)
    aligner = aligner_from_settings(settings)
    limits = limits_from_settings(settings)
    result = evaluate_pairs(
        embedder,
        pairs,
        aligner=aligner,
        mode="never",
        batch_size=settings.evaluate.batch_size,
        target_far=settings.evaluate.target_far,
        limits=limits,
        progress=progress,
    )
    write_report(result, pairs, evaldir)
    settings.dump(evaldir)

    names = list(written)
    same = verify_pair(written[names[0]][0], written[names[0]][1], embedder, aligner, limits=limits)
    diff = verify_pair(written[names[0]][0], written[names[1]][0], embedder, aligner, limits=limits)
    m = result.metrics
    summary = {
        "workdir": str(work),
        "ingest": {k: report.to_dict()[k] for k in ("total", "aligned", "failed", "failure_reasons")},
        "ingest_failures": [f"{f['src']}: {f['code']}" for f in report.failures],
        "evaluate": {
            "model": m["model"],
            "pairs": m["n_pairs"],
            "accuracy": m["accuracy"],
            "auc": m["auc"],
            "eer": m["eer"],
            "threshold": m["threshold"],
            "outputs": [str(evaldir / n) for n in ("metrics.json", "roc.png", "scores.png")],
        },
        "verify_same_person": {
            "a": str(same["image_a"]["path"]),
            "b": str(same["image_b"]["path"]),
            "score": same["score"],
            "match": same["match"],
        },
        "verify_different_people": {
            "a": str(diff["image_a"]["path"]),
            "b": str(diff["image_b"]["path"]),
            "score": diff["score"],
            "match": diff["match"],
        },
        "threshold": same["threshold"],
    }
    champion = register_champion(settings, work, aligned)
    summary["pipeline"] = pipeline_demo(work, raw)
    summary["serve"] = serve_demo(settings, work, written, champion)
    atomic_write_text(work / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _say(text: str) -> None:
    print(text, flush=True)


def register_champion(settings: Settings, work: Path, aligned: Path) -> str:
    """Export SFace to OpenVINO FP32 and register it as the first ``champion`` in the demo's MLflow registry.

    The demo's MLflow store is ``<workdir>/mlflow.db`` (``FACEGATE_HOME`` is the work directory for the rest of
    the demo, so the pipeline's steps, which are subprocesses, use the same store and gallery).
    """
    import os

    from facegate.export.convert import export_model, load_faces
    from facegate.registry.models import register_bundle

    os.environ["FACEGATE_HOME"] = str(work.resolve())
    _say("\n[demo] exporting SFace to OpenVINO FP32 (parity-gated) and registering it as models:/facegate@champion")
    export_model(settings.model, work / "export", load_faces(aligned, limit=40), formats=["openvino-fp32"])
    register_bundle(work / "export" / "openvino-fp32", alias="champion", home=work.resolve())
    return "models:/facegate@champion"


def pipeline_demo(work: Path, raw: Path) -> dict[str, Any]:
    """Run the training pipeline locally on the raw demo photos; returns the gate's decision and where things are."""
    import os
    import sys

    from facegate.pipeline.runner import find_pipeline, run_local
    from facegate.serve.gallery import KeyRing

    config = find_pipeline("training").parents[1] / "configs" / "demo_cpu.yaml"
    params = {
        "dataset_uri": str(raw.resolve()),
        "config": str(config),
        "holdout_per_identity": 4,
        "train_backend": "local",
        "rollout_target": "local",
    }
    _say("[demo] running the training pipeline locally (kfp SubprocessRunner: every step is a subprocess here)")
    # Only a promotion reindexes the gallery; its key is made up for this run and lives in this process's
    # environment (inherited by the steps) until the pipeline ends: never written or printed.
    os.environ.setdefault("FACEGATE_GALLERY_KEYS", KeyRing.generate("demo"))
    run = run_local("training", params, pipeline_root=work / "pipelines", log_path=work / "pipeline.log", echo=_say)
    report = Path(run.where) / "gate" / "report"
    return {
        "seconds": run.seconds,
        "run": run.where,
        "log": str(work / "pipeline.log"),
        "decision": run.outputs.get("gate", {}).get("output", "?"),
        "gate_report": str(report),
        "gate_markdown": report.read_text() if report.is_file() else "",
        # The mlflow command beside this interpreter: it is there whether or not the venv is activated.
        "mlflow_ui": f"{Path(sys.executable).with_name('mlflow')} ui "
        f"--backend-store-uri sqlite:///{(work / 'mlflow.db').resolve()} --host 127.0.0.1",
    }


def serve_demo(settings: Settings, work: Path, written: dict[str, list[Path]], model: str) -> dict[str, Any]:
    """Serve ``model`` (the champion) on 127.0.0.1, enroll one person over HTTP and check in three photos.

    The gallery encryption key and the admin and kiosk API keys are made up for this run and held in memory only:
    nothing secret is written or printed.
    """
    import base64
    import secrets

    import httpx

    from facegate.serve.app import create_app
    from facegate.serve.auth import ApiKeyStore
    from facegate.serve.client import outputs, verify_request
    from facegate.serve.gallery import Gallery, KeyRing
    from facegate.serve.local import LocalServer
    from facegate.serve.models import build_runtime

    _say(f"[demo] serving {model} as the KServe verifier on 127.0.0.1; enrolling and checking in")
    url = f"sqlite:///{(work / 'gallery.db').resolve()}"
    gallery = Gallery(url, KeyRing.from_env())  # the key pipeline_demo made up (a reindex would have used it)
    admin_key = secrets.token_urlsafe(24)
    keys = ApiKeyStore(gallery.engine, env={"FACEGATE_ADMIN_KEY": admin_key})
    kiosk_key = keys.create("demo-kiosk")
    app = create_app(settings, build_runtime(settings, model, gallery=gallery), keys)
    names = list(written)
    student, other = names[0], names[1]

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    checks = {
        "same person": written[student][2],
        "different person": written[other][0],
        "no face": work / "raw" / "bad_input" / "no_face.jpg",
    }
    out: dict[str, Any] = {"model": model, "student": student, "checks": {}}
    with LocalServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        out["url"] = server.url
        r = client.put(
            f"/admin/v1/students/{student}",
            json={"photos": [b64(p) for p in written[student][:2]]},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        r.raise_for_status()
        out["enrolled_photos"] = r.json()["accepted"]
        for label, path in checks.items():
            body = verify_request(path.read_bytes(), student)
            t0 = time.perf_counter()
            r = client.post("/v2/models/verifier/infer", json=body, headers={"Authorization": f"Bearer {kiosk_key}"})
            ms = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            res = outputs(r.json())
            out["checks"][label] = {
                "photo": str(path),
                "decision": res["decision"],
                "reason": res["reason"],
                "score": res["score"],
                "ms": round(ms, 1),
            }
        out["threshold"] = res["threshold"]
        out["no_key_status"] = client.post("/v2/models/verifier/infer", json=body).status_code
    return out


def _pipeline_lines(p: dict[str, Any]) -> list[str]:
    """The gate's verdict and its numbers, from the run's Markdown report."""
    verdict = {"keep": "KEEP the champion (SFace)", "promote": "PROMOTE the challenger"}.get(p["decision"], "?")
    lines = [f"pipeline  training pipeline ran locally in {p['seconds']:.0f} s; gate decision: {verdict}"]
    for row in p["gate_markdown"].splitlines():
        if row.startswith(("| accuracy", "| TAR", "| threshold", "McNemar", "TAR gain", "- ")):
            lines.append("            " + row)
    if p["decision"] == "keep":
        lines.append(
            "            a tiny CPU model trained for seconds on 3 people does not beat SFace: the gate kept it out"
        )
    lines += [
        f"            gate report: {p['gate_report']}",
        f"            every step's log: {p['log']}",
        f"            MLflow UI: {p['mlflow_ui']}",
    ]
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """The demo's human-readable summary."""
    ing, ev = summary["ingest"], summary["evaluate"]
    s, d = summary["verify_same_person"], summary["verify_different_people"]
    lines = [
        "",
        "facegate demo — summary",
        "=" * 60,
        f"ingest    {ing['aligned']}/{ing['total']} photos aligned; {ing['failed']} refused "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(ing['failure_reasons'].items())) or 'none'})",
        *[f"            refused {x}" for x in summary["ingest_failures"]],
        f"evaluate  {ev['model']} on {ev['pairs']} pairs: accuracy {ev['accuracy']:.4f}, AUC {ev['auc']:.4f}, "
        f"EER {ev['eer']:.4f}",
        f"            plots and metrics: {', '.join(ev['outputs'])}",
        f"verify    same person:      score {s['score']:+.3f} -> {'MATCH' if s['match'] else 'no match'}",
        f"verify    different people: score {d['score']:+.3f} -> {'MATCH' if d['match'] else 'no match'}",
        f"            (threshold {summary['threshold']:.3f})",
        *_pipeline_lines(summary["pipeline"]),
        f"serve     KServe verifier ({summary['serve']['model']}) on {summary['serve']['url']}: "
        f"enrolled {summary['serve']['student']} from {summary['serve']['enrolled_photos']} photos",
        *[
            f"            {label:<17} -> {c['decision']} ({c['reason']}, score {c['score']:+.3f}, {c['ms']:.0f} ms)"
            for label, c in summary["serve"]["checks"].items()
        ],
        f"            without an API key -> HTTP {summary['serve']['no_key_status']}",
        f"all outputs under {summary['workdir']}",
    ]
    return "\n".join(lines)
