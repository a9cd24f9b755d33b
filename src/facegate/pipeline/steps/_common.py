"""What the steps share: settings from the environment, metric sinks, progress lines, raw-data fetches."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from facegate.config import Settings, load_settings
from facegate.errors import DataError

#: A verification set: ``"holdout"`` (every pair of the photos the ingest step held out of training), or
#: ``"[NAME=]PAIRS[|IMAGES]"``: a pairs file (LFW ``pairs.txt``, insightface ``.bin`` or CSV) and its image root.
#: Strings, not dicts: KFP stores dict defaults as protobuf maps, whose key order would make compiles differ.
VerificationSet = str


HOLDOUT = "holdout"


class MetricsSink(Protocol):
    """KFP ``Metrics``: one scalar per key, shown in the run's UI."""

    def log_metric(self, metric: str, value: float) -> None:
        """Record one metric."""


def _settings() -> Settings:
    return load_settings(os.environ.get("FACEGATE_CONFIG"))


def _log(sink: MetricsSink | None, values: dict[str, Any], prefix: str = "") -> None:
    if sink is None:
        return
    for k, v in values.items():
        # NaN is not a metric the UI can show (v == v is False only for NaN).
        if isinstance(v, bool | int | float) and v == v:
            sink.log_metric(prefix + k, float(v))


def _plain(value: Any) -> Any:
    """A step's return value as KFP can carry it: JSON types only, ``None`` dropped (KFP has no null)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    return value


def _say(text: str) -> None:
    # Component logs are what a data scientist reads in the KFP UI: one plain line per thing done.
    print(f"[facegate] {text}", flush=True)


def _pairsets(sets: Sequence[VerificationSet], holdout_dir: str | None) -> list[tuple[str, Any]]:
    from facegate.data.pairs import load_csv_pairs, load_pairs

    out = []
    for spec in sets:
        head, sep, tail = spec.partition("=")
        # NAME= only when it is a plain name: a pairs path may itself contain "=".
        name, rest = (head, tail) if sep and head and "/" not in head and "|" not in head else ("", spec)
        pairs, _, images = rest.partition("|")
        name = name or (HOLDOUT if pairs == HOLDOUT else Path(pairs).stem)
        if pairs == HOLDOUT:
            if not holdout_dir:
                raise DataError("the 'holdout' verification set needs the ingest step's held-out faces")
            with tempfile.TemporaryDirectory(prefix="facegate-pairs-") as tmp:  # the CSV is read at once
                _all_pairs_csv(Path(holdout_dir), Path(tmp) / "holdout.csv")
                out.append((name, load_csv_pairs(Path(tmp) / "holdout.csv", holdout_dir)))
        else:
            out.append((name, load_pairs(pairs, images or None)))
    if not out:
        raise DataError("no verification set configured")
    return out


#: Impostor pairs of the held-out set grow with the square of its size (2 photos of 1,000 students: 2 million);
#: above this many they are sampled, with a fixed seed so every step and every rerun scores the same pairs.
MAX_HOLDOUT_IMPOSTORS = 20_000


def _all_pairs_csv(root: Path, out: Path, max_impostors: int = MAX_HOLDOUT_IMPOSTORS) -> None:
    """Every genuine pair of an aligned folder and every impostor pair, or a fixed sample of ``max_impostors``."""
    import csv
    import itertools

    import numpy as np

    files = {d.name: sorted(f.relative_to(root).as_posix() for f in d.glob("*.jpg")) for d in sorted(root.iterdir())}
    files = {k: v for k, v in files.items() if v}
    rows = [(a, b, 1) for v in files.values() for a, b in itertools.combinations(v, 2)]
    sizes = [len(v) for v in files.values()]
    n_impostors = (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
    if n_impostors <= max_impostors:
        rows += [(a, b, 0) for i, j in itertools.combinations(files, 2) for a in files[i] for b in files[j]]
    else:
        flat = [(ident, f) for ident, v in files.items() for f in v]
        rng = np.random.default_rng(0)
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < max_impostors:
            i, j = sorted(int(x) for x in rng.integers(0, len(flat), 2))
            if flat[i][0] != flat[j][0]:
                chosen.add((i, j))
        rows += [(flat[i][1], flat[j][1], 0) for i, j in sorted(chosen)]
    if not rows or all(r[2] for r in rows) or not any(r[2] for r in rows):
        raise DataError(f"{root}: the held-out faces make no genuine and impostor pairs (hold out more photos)")
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_a", "image_b", "same"])
        w.writerows(rows)


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower() or "set"
