"""``facegate ingest``: turn a raw ``root/<identity>/<image>`` dataset into aligned 112x112 faces.

- Parallel: worker processes each hold their own detector (``spawn``ed, so no OpenCV thread state is forked).
- Resumable: every finished image is appended to a journal (``.facegate-ingest.jsonl`` in the destination) and
  outputs are written atomically, so after an interrupt or a crash a rerun redoes nothing that finished and never
  trusts a half-written file.
- Nothing lost on bad input: each image that cannot be used (corrupt, not an image, too large, no face, ...) is
  recorded with a reason code in ``ingest_report.json`` and the run goes on.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from facegate.config import Settings
from facegate.data.folder import scan_image_folder
from facegate.data.imageio import ImageLimits, encode_jpeg, read_image
from facegate.errors import DataError, FacegateError, StorageError
from facegate.faces.pipeline import FaceAligner, aligner_from_settings, limits_from_settings
from facegate.utils import atomic_write_bytes, atomic_write_text

__all__ = ["JOURNAL_NAME", "REPORT_NAME", "IngestReport", "ingest"]

JOURNAL_NAME = ".facegate-ingest.jsonl"
REPORT_NAME = "ingest_report.json"


@dataclass
class IngestReport:
    """Outcome of an ingest run (also written as ``ingest_report.json``)."""

    src: str
    dst: str
    total: int = 0
    aligned: int = 0
    failed: int = 0
    resumed: int = 0
    processed: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    stray_files: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def reasons(self) -> dict[str, int]:
        """Failure counts by reason code."""
        return dict(Counter(f["code"] for f in self.failures))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "src": self.src,
            "dst": self.dst,
            "total": self.total,
            "aligned": self.aligned,
            "failed": self.failed,
            "resumed": self.resumed,
            "processed_this_run": self.processed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.processed / self.seconds, 2) if self.seconds > 0 else None,
            "failure_reasons": self.reasons,
            "failures": self.failures,
            "stray_files": self.stray_files,
            "interrupted": self.interrupted,
        }


# --- worker side -------------------------------------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _init_worker(settings_json: str) -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only oversubscribe
    settings = Settings.model_validate_json(settings_json)
    _worker["aligner"] = aligner_from_settings(settings)
    _worker["limits"] = limits_from_settings(settings)
    _worker["quality"] = settings.ingest.jpeg_quality


def _process(task: tuple[str, str, str]) -> dict[str, str]:
    return process_image(task, _worker["aligner"], _worker["limits"], _worker["quality"])


def process_image(
    task: tuple[str, str, str], aligner: FaceAligner, limits: ImageLimits, quality: int
) -> dict[str, str]:
    """Align one image; returns a journal entry. Never raises for a bad image."""
    rel, src, dst = task
    stamp = _stamp(src)
    try:
        image = read_image(src, limits=limits)
        crop = aligner.prepare(image, "always")
        data = encode_jpeg(crop.face, quality=quality)
    except FacegateError as exc:
        return {"src": rel, "status": "failed", "code": exc.code, "message": exc.message, "stamp": stamp}
    except Exception as exc:  # one pathological file must not end a million-image run; retried on resume
        message = f"{type(exc).__name__}: {exc}"
        return {"src": rel, "status": "failed", "code": "internal_error", "message": message, "stamp": stamp}
    try:
        atomic_write_bytes(dst, data)
    except OSError as exc:
        # A full disk or a read-only destination is not this image's fault: stop, so it is not recorded as failed.
        raise StorageError(
            f"{dst}: cannot write the aligned face ({exc.strerror}); fix it and rerun to resume"
        ) from None
    return {"src": rel, "status": "ok", "dst": Path(dst).name, "stamp": stamp}


def _stamp(path: str) -> str:
    """Size and modification time of a source file: a replaced photo is ingested again on resume."""
    try:
        st = Path(path).stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


# --- driver side -------------------------------------------------------------------------------------------------
def _read_journal(path: Path) -> dict[str, dict[str, str]]:
    done: dict[str, dict[str, str]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash: that image is simply redone
        if isinstance(entry, dict) and "src" in entry and "status" in entry:
            done[str(entry["src"])] = entry
    return done


def _output_names(rels: list[str]) -> dict[str, str]:
    """``identity/stem.jpg`` per input; inputs sharing a stem in one folder keep their extension in the name."""
    by_stem: Counter[str] = Counter(str(Path(r).with_suffix("")) for r in rels)
    out: dict[str, str] = {}
    for r in rels:
        p = Path(r)
        stem = str(p.with_suffix(""))
        # The suffix keeps its case: a.jpg and a.JPG are two photos and must not overwrite each other.
        out[r] = stem + ("_" + p.suffix.lstrip(".") if by_stem[stem] > 1 else "") + ".jpg"
    return out


def ingest(
    src: str | Path,
    dst: str | Path,
    settings: Settings | None = None,
    *,
    workers: int | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Align a raw image-folder dataset.

    Args:
        src: ``root/<identity>/<image>`` tree of raw photos.
        dst: Output root; gets ``<identity>/<stem>.jpg`` aligned faces, ``ingest_report.json``, ``manifest.json``
            and ``config.yaml``.
        settings: Resolved settings (defaults when omitted).
        workers: Worker processes (0 runs in this process); defaults to ``settings.ingest.workers``.
        resume: Skip images the journal says are finished.
        retry_failed: On resume, try failed images again.
        progress: Show a progress bar.

    Returns:
        The report.

    Raises:
        DataError: If ``src`` is missing or ``dst`` lies inside it.
    """
    from tqdm import tqdm

    settings = settings or Settings()
    src_root, dst_root = Path(src).resolve(), Path(dst).resolve()
    if dst_root == src_root or src_root in dst_root.parents:
        raise DataError(f"{dst_root}: destination must not be inside the source dataset")
    samples, stray = scan_image_folder(src_root)
    rels = [s.path for s in samples]
    names = _output_names(rels)
    dst_root.mkdir(parents=True, exist_ok=True)
    journal_path = dst_root / JOURNAL_NAME
    journal = _read_journal(journal_path) if resume else {}
    if not resume and journal_path.exists():
        journal_path.unlink()

    report = IngestReport(src=str(src_root), dst=str(dst_root), total=len(rels), stray_files=stray)
    todo: list[tuple[str, str, str]] = []
    current = set(rels)
    for rel, old in list(journal.items()):
        if rel not in current:
            # The source photo is gone: its aligned face must not linger in the dataset (or its manifest).
            if old.get("status") == "ok" and old.get("dst"):
                (dst_root / Path(rel).parent / str(old["dst"])).unlink(missing_ok=True)
            del journal[rel]
    for rel in rels:
        entry = journal.get(rel)
        out = dst_root / names[rel]
        unchanged = entry is not None and entry.get("stamp", "") == _stamp(str(src_root / rel))
        retry = retry_failed or (entry is not None and entry.get("code") == "internal_error")
        finished = (
            entry is not None
            and unchanged
            and ((entry["status"] == "ok" and out.exists()) or (entry["status"] == "failed" and not retry))
        )
        if finished:
            report.resumed += 1
        else:
            todo.append((rel, str(src_root / rel), str(out)))

    n_workers = settings.ingest.workers if workers is None else workers
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(rels),
        initial=report.resumed,
        desc="ingest",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
    try:
        with journal_path.open("a", encoding="utf-8") as jf:
            for entry in _run(todo, settings, n_workers):
                jf.write(json.dumps(entry, ensure_ascii=False) + "\n")
                jf.flush()
                journal[entry["src"]] = entry
                report.processed += 1
                bar.update(1)
    except KeyboardInterrupt:
        report.interrupted = True
    except FacegateError:
        report.interrupted = True
        bar.close()
        _finish(report, rels, journal, dst_root, settings, time.perf_counter() - t0)
        raise
    finally:
        bar.close()
    _finish(report, rels, journal, dst_root, settings, time.perf_counter() - t0)
    return report


def _finish(
    report: IngestReport,
    rels: list[str],
    journal: dict[str, dict[str, str]],
    dst_root: Path,
    settings: Settings,
    seconds: float,
) -> None:
    """Count outcomes, write the report and config, and (after a complete run) the manifest."""
    from facegate.data.storage import write_manifest

    report.seconds = seconds
    for rel in rels:
        entry = journal.get(rel)
        if entry is None:
            continue
        if entry["status"] == "ok":
            report.aligned += 1
        else:
            report.failed += 1
            report.failures.append(
                {"src": rel, "code": entry.get("code", "error"), "message": entry.get("message", "")}
            )
    atomic_write_text(dst_root / REPORT_NAME, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    settings.dump(dst_root)
    if not report.interrupted:
        write_manifest(dst_root)


def _run(todo: list[tuple[str, str, str]], settings: Settings, workers: int) -> Iterator[dict[str, str]]:
    if not todo:
        return
    if workers <= 0:
        aligner = aligner_from_settings(settings)
        limits = limits_from_settings(settings)
        for task in todo:
            yield process_image(task, aligner, limits, settings.ingest.jpeg_quality)
        return
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(settings.model_dump_json(),))
    try:
        yield from pool.imap_unordered(_process, todo, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
