"""The ingest step: raw photos to aligned faces, with a held-out split."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from facegate.errors import DataError
from facegate.pipeline.failures import records_failure
from facegate.pipeline.steps._common import MetricsSink, _log, _say, _settings


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
