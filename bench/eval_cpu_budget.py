"""Where the CPU of a cold ``facegate evaluate --model sface`` goes: wall-clock marks and CPU seconds by thread.

Runs the CLI in this process (so its threads can be read from ``/proc``) with an empty ``FACEGATE_HOME``, on all
6,000 LFW pairs unless ``--limit``. Marks: imports done, pairs loaded, first and last batch embedded, report written.
CPU: the whole process (``os.times``), the main thread, the native threads when the last batch is embedded
(OpenVINO's stream threads), and the rest (Python's other threads: decoding pool, matplotlib's import). On a 2-core
machine the wall time cannot be below half the CPU seconds, so this shows what a cold run could still lose.
Prints one JSON object::

    python bench/eval_cpu_budget.py
    python bench/eval_cpu_budget.py --limit 600
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import SHARED, emit, loadavg, require

T0 = time.perf_counter()
MARKS: dict[str, float] = {}
NATIVE_CPU: dict[int, float] = {}


def mark(label: str) -> None:
    MARKS.setdefault(label, round(time.perf_counter() - T0, 3))


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of this process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="pairs, spread over all folds (0 = all 6,000)")
    args = ap.parse_args()
    load_before = loadavg()
    import facegate.data.pairs as pairs_mod
    import facegate.models.sface as sface_mod
    from facegate.cli import run

    mark("imports")
    lfw = require(SHARED / "data" / "lfw-aligned")
    load_pairs = pairs_mod.load_pairs

    def timed_load_pairs(*a: Any, **k: Any) -> Any:
        out = load_pairs(*a, **k)
        mark("pairs_loaded")
        return out

    stream = sface_mod.SFaceEmbedder._stream_openvino

    def marked_stream(self: Any, batches: Any) -> Iterator[Any]:
        for item in stream(self, batches):
            mark("first_batch_embedded")
            yield item
        MARKS["last_batch_embedded"] = round(time.perf_counter() - T0, 3)
        # OpenVINO's stream threads end with the model: count them now. Threads Python did not start are native:
        # OpenVINO's (and idle library pools, near 0).
        python_threads = {t.native_id for t in threading.enumerate()}
        NATIVE_CPU.update({k: v for k, v in thread_cpu_seconds().items() if k not in python_threads})

    pairs_mod.load_pairs = timed_load_pairs  # type: ignore[assignment]
    sface_mod.SFaceEmbedder._stream_openvino = marked_stream  # type: ignore[assignment,method-assign]
    with tempfile.TemporaryDirectory(prefix="facegate-cpu-budget-") as tmp:
        pairs_file = lfw / "pairs.txt"
        if args.limit:
            from eval_bench import spread

            ps = spread(load_pairs(pairs_file, lfw), args.limit)
            pairs_file = Path(tmp) / "pairs.csv"
            rows = [f"{a},{b},{int(s)}" for a, b, s in zip(ps.left, ps.right, ps.same, strict=True)]
            pairs_file.write_text("image_a,image_b,same\n" + "\n".join(rows) + "\n")
        os.environ["FACEGATE_HOME"] = str(Path(tmp) / "home")
        sys.argv = ["facegate", "-q", "evaluate", "--model", "sface", "--pairs", str(pairs_file)]
        sys.argv += ["--images", str(lfw), "--out", str(Path(tmp) / "out")]
        runner: Callable[[], None] = run
        try:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # stdout carries only the JSON
                runner()
        except SystemExit as exc:
            if exc.code:
                raise
    mark("done")
    main_cpu = thread_cpu_seconds().get(threading.get_native_id(), 0.0)
    times = os.times()
    total = times.user + times.system
    native = sum(NATIVE_CPU.values())
    emit(
        {
            "benchmark": "CPU budget of a cold `facegate evaluate --model sface` (in process)",
            "marks_s": MARKS,
            "wall_s": MARKS["done"],
            "cpu_s": {
                "process": round(total, 2),
                "main_thread": round(main_cpu, 2),
                "native_threads (OpenVINO streams)": round(native, 2),
                "other_python_threads (decoding pool, matplotlib import)": round(total - main_cpu - native, 2),
            },
            "cores_busy": round(total / MARKS["done"], 2),
        },
        load_before,
    )


if __name__ == "__main__":
    main()
