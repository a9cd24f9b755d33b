"""Issue 19 §1: what a check-in costs the server beyond its own work. Check-in-sized buffers are reused, not
re-faulted; the server detects at a reduced size (looking again at full size when nothing is found) without
changing what it decides; OpenCV runs one thread per call in the server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from facegate.config import load_settings
from facegate.data.imageio import decode_image
from facegate.faces.detect import YuNetDetector
from facegate.serve.models import serve_aligner

pytestmark = pytest.mark.unit


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter (malloc and OpenCV settings are process-wide) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_check_in_sized_buffers_are_reused_not_faulted_in_again() -> None:
    """A 640x480 check-in's buffers (a 3.7 MB detector blob, a 0.9 MB image) cost no fresh pages per request."""
    from facegate.serve import memory

    if memory._LIBC is None:
        pytest.skip("no glibc: the allocator settings do nothing here")
    out = _run(
        """
        import resource, threading
        import numpy as np
        from facegate.serve.memory import limit_arenas

        limit_arenas()

        def check_ins(n):
            for _ in range(n):
                blob = np.empty(3_700_000, np.uint8); blob.fill(1)
                image = np.empty(921_600, np.uint8); image.fill(2)
                del blob, image

        def faults():
            check_ins(3)  # the first ones may grow the heap
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            check_ins(40)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        worker = []
        t = threading.Thread(target=lambda: worker.append(faults()))
        t.start(); t.join()
        print(faults(), worker[0])
        """
    )
    main, worker = (int(x) for x in out.split())
    # Fresh memory would be ~1,100 zeroed pages per check-in (44,000 here); reused heap memory costs none.
    assert main < 2000 and worker < 2000, out


def test_opencv_runs_one_thread_per_call_in_the_server(tmp_path: Path) -> None:
    """Building the runtime sets OpenCV's threads to ``serve.opencv_threads`` (its pool would busy-wait)."""
    out = _run(
        f"""
        import cv2
        from facegate.config import load_settings
        from facegate.serve.gallery import Gallery, KeyRing
        from facegate.serve.models import build_runtime

        before = cv2.getNumThreads()
        settings = load_settings(overrides={{"home": {str(tmp_path)!r}}}, env={{}})
        gallery = Gallery(settings.gallery_url(), KeyRing.from_env({{"FACEGATE_GALLERY_KEYS": KeyRing.generate()}}))
        rt = build_runtime(settings, "sface", gallery=gallery)
        print(before, cv2.getNumThreads(), settings.serve.opencv_threads)
        rt.close()
        """
    )
    before, after, wanted = (int(x) for x in out.split())
    assert wanted == 1 and after == wanted
    assert before != after or before == 1  # a 1-core machine starts at 1 already


class _Sides(YuNetDetector):
    """YuNet recording the sizes it detects at."""

    sides: list[int]

    def _detect_at(self, bgr, max_side):  # type: ignore[no-untyped-def]
        self.sides.append(max_side)
        return super()._detect_at(bgr, max_side)


def _recording(settings_overrides: dict[str, object]):  # type: ignore[no-untyped-def]
    aligner = serve_aligner(load_settings(overrides=settings_overrides, env={}))
    det = aligner.detector
    assert isinstance(det, YuNetDetector)
    det.__class__ = _Sides
    det.sides = []  # type: ignore[attr-defined]
    return aligner, det


def _check_in(path: Path) -> np.ndarray:
    """A photo letterboxed into 640x480, as a kiosk sends it (bench/serve_bench.py)."""
    import cv2

    img = decode_image(path.read_bytes())
    scale = min(640 / img.shape[1], 480 / img.shape[0])
    small = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    y, x = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def test_the_server_detects_at_the_reduced_size_and_looks_again_at_full_size(photos: Path) -> None:
    aligner, det = _recording({})
    assert (det.max_side, det.retry_side) == (320, 640)  # serve.detect_max_side, then detector.max_side
    crop = aligner.prepare(_check_in(photos / "test" / "obama1.jpg"), "always")
    assert det.sides == [320] and crop.face.shape == (112, 112, 3)  # found at 320: no second look
    assert crop.detection is not None and crop.detection.size > 100  # mapped back to the 640x480 frame
    det.sides.clear()
    assert det.detect(np.full((480, 640, 3), 90, np.uint8)) == []
    assert det.sides == [320, 640]  # nothing at 320: looked again at full size
    _, off = _recording({"serve.detect_max_side": 0})
    assert (off.max_side, off.retry_side) == (640, 0)  # 0: detection at detector.max_side, as before


def test_reduced_size_detection_verifies_as_full_size(photos: Path, sface) -> None:  # type: ignore[no-untyped-def]
    """Same person accepted and another refused with the same margin, at 320 and at 640 (SFace, real photos)."""
    from facegate.models.base import l2_normalize

    full = serve_aligner(load_settings(overrides={"serve.detect_max_side": 0}, env={}))
    reduced = serve_aligner(load_settings(env={}))
    threshold = sface.default_threshold
    scores = {}
    for name, aligner in (("full", full), ("reduced", reduced)):
        enrolled = [
            aligner.prepare(decode_image(p.read_bytes())).face for p in sorted((photos / "train" / "obama").iterdir())
        ]
        template = l2_normalize(sface.embed(np.stack(enrolled)).mean(axis=0, keepdims=True))[0]
        same = sface.embed(aligner.prepare(_check_in(photos / "test" / "obama1.jpg")).face[None])[0]
        other = sface.embed(aligner.prepare(_check_in(photos / "test" / "alex_lacamoire1.jpg")).face[None])[0]
        scores[name] = (float(same @ template), float(other @ template))
    for same, other in scores.values():
        assert same >= threshold > other
    assert abs(scores["full"][0] - scores["reduced"][0]) < 0.05, scores
    assert abs(scores["full"][1] - scores["reduced"][1]) < 0.05, scores
