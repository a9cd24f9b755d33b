"""Per-group error rates at the deployment threshold (ISO/IEC 19795-10 style) and the differentials between groups.

A group table maps images (``image,<label>...``) or identities (``identity,<label>...``) to one or more label
columns (gender, an illumination bin, ...). For every column and every group it reports, at one threshold:

- **FNMR** over the genuine pairs whose two images are both in the group;
- **FMR within** the group (both impostor images in it) and **FMR across** (one image in it, the other labelled
  with another group);
- **failure to acquire**: the group's images that detection or the quality policy refused (``no_face``,
  ``multiple_faces``, ``face_too_small``, ``blurry``); only raw photos can fail that way;
- the pairs, images and identities behind every rate, and a Clopper-Pearson interval on each rate.

A group with fewer than ``min_pairs`` pairs or ``min_identities`` identities behind a rate is *inconclusive* for
that rate: it is reported but not ranked, i.e. it takes no part in the differentials:

- **max/min ratios** of FNMR and of within-group FMR. For the ratio only, each group's rate is shrunk towards the
  pooled rate ``p`` of the ranked groups by half an error's worth of evidence, ``(errors + 0.5) / (pairs + 0.5 / p)``:
  a group with no error then does not make the ratio infinite, groups of very different sizes with no error at all
  get the ratio 1 (not the ratio of their sizes), and groups with many errors keep their raw rates. The raw rates
  are reported as well;
- the **fairness discrepancy rate** of de Freitas Pereira & Marcel (2021),
  ``FDR = 1 - (alpha * max|FMR_i - FMR_j| + beta * max|FNMR_i - FNMR_j|)`` with ``alpha = beta = 0.5``; 1 is
  perfectly even, lower is worse.

Their uncertainty comes from a bootstrap over **identities**, not pairs: the pairs of one person share that
person's face, so resampling pairs would pretend to more evidence than there is. Each replicate draws identities
with replacement; a genuine pair counts as many times as its person was drawn, an impostor pair as the product of
its two people's draws.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facegate.errors import DataError

__all__ = [
    "ACQUISITION_CODES",
    "GroupPolicy",
    "GroupTable",
    "PairGroups",
    "assign_groups",
    "clopper_pearson",
    "differentials",
    "group_report",
    "identity_of",
    "load_groups",
]

#: Failure codes that mean "no usable face was acquired" (decode errors and missing files are not).
ACQUISITION_CODES = ("no_face", "multiple_faces", "face_too_small", "blurry")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SMOOTH = 0.5


@dataclass(frozen=True)
class GroupPolicy:
    """How groups are judged.

    Attributes:
        min_pairs: Fewest pairs behind a rate for the group to be ranked on it.
        min_identities: Fewest identities behind a rate for the group to be ranked on it.
        alpha: One minus the confidence of every interval (two-sided).
        bootstrap: Identity-bootstrap replicates.
        seed: Bootstrap seed (reports are reproducible).
    """

    min_pairs: int = 100
    min_identities: int = 10
    alpha: float = 0.05
    bootstrap: int = 1000
    seed: int = 0


@dataclass
class GroupTable:
    """Group labels of images or identities.

    Attributes:
        kind: ``image`` when keys are image paths, ``identity`` when they are identities.
        columns: Label column names, in file order.
        labels: ``{column: {key: group}}``; empty values are left out.
        source: Where the table came from (for reports).
    """

    kind: Literal["image", "identity"]
    columns: list[str]
    labels: dict[str, dict[str, str]]
    source: str = ""


def load_groups(path: str | Path) -> GroupTable:
    """Read a group CSV: first column ``image`` (or ``identity``), then one or more label columns.

    Raises:
        DataError: If the file cannot be read, has no label column, or names a key twice.
    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read the group table ({exc})") from None
    if not rows or len(rows[0]) < 2:
        raise DataError(f"{p}: expected a header 'image|identity,<label>[,<label>...]'")
    head = [h.strip() for h in rows[0]]
    keys = [r[0].strip() for r in rows[1:] if r and r[0].strip()]
    if head[0].lower() in ("image", "path", "file"):
        kind: Literal["image", "identity"] = "image"
    elif head[0].lower() in ("identity", "subject", "person", "name"):
        kind = "identity"
    else:  # no telling header: image paths look like paths
        kind = "image" if any("/" in k or k.lower().endswith(_IMAGE_EXTS) for k in keys) else "identity"
    labels: dict[str, dict[str, str]] = {c: {} for c in head[1:]}
    seen: set[str] = set()
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        key = row[0].strip()
        if key in seen:
            raise DataError(f"{p}:{lineno}: {key!r} is listed twice")
        seen.add(key)
        for col, value in zip(head[1:], row[1:], strict=False):
            if value.strip():
                labels[col][key] = value.strip()
    return GroupTable(kind=kind, columns=head[1:], labels=labels, source=str(p))


def identity_of(key: str) -> str:
    """The identity behind an image key: its folder (``Name/Name_0001.jpg`` -> ``Name``), else the key itself."""
    parent = key.replace("\\", "/").rpartition("/")[0]
    return parent or key


def clopper_pearson(errors: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) two-sided ``1 - alpha`` interval of a binomial rate; ``None`` when ``n == 0``.

    Solved by bisection on the binomial tail (no SciPy in the core dependencies): the lower end is the ``p`` with
    ``P(X >= errors) = alpha / 2``, the upper end the ``p`` with ``P(X <= errors) = alpha / 2``.
    """
    if n <= 0:
        return None
    if not 0 <= errors <= n:
        raise ValueError(f"errors must lie in [0, {n}], got {errors}")
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    ks = np.arange(n + 1)
    log_comb = logfact[n] - logfact[ks] - logfact[n - ks]

    def cdf(p: float, upto: int) -> float:  # P(X <= upto)
        if p <= 0.0:
            return 1.0
        if p >= 1.0:
            return 1.0 if upto >= n else 0.0
        logs = log_comb[: upto + 1] + ks[: upto + 1] * math.log(p) + (n - ks[: upto + 1]) * math.log1p(-p)
        top = float(logs.max())
        return min(1.0, math.exp(top) * float(np.exp(logs - top).sum()))

    half = alpha / 2
    # P(X >= errors) grows with p: the lower end is where it reaches alpha/2; P(X <= errors) shrinks with p: the
    # upper end is where it falls to alpha/2.
    lower = 0.0 if errors == 0 else _bisect(lambda p: 1.0 - cdf(p, errors - 1) >= half)
    upper = 1.0 if errors == n else _bisect(lambda p: cdf(p, errors) <= half)
    return float(lower), float(upper)


def _bisect(reached: Any) -> float:
    """The smallest ``p`` in [0, 1] where the monotone condition ``reached(p)`` turns true (to ~1e-15)."""
    lo, hi = 0.0, 1.0
    for _ in range(55):
        mid = (lo + hi) / 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


@dataclass
class PairGroups:
    """One label column applied to a pair set, as integer codes ready for vectorised counting.

    Attributes:
        column: The label column.
        names: Group names; code ``i`` is ``names[i]``, ``-1`` is unlabelled.
        left: Group code of each pair's first image.
        right: Group code of each pair's second image.
        id_left: Identity code of each pair's first image.
        id_right: Identity code of each pair's second image.
        n_identities: Number of identity codes.
        image_groups: Group of every labelled image key (for failure to acquire).
    """

    column: str
    names: list[str]
    left: np.ndarray
    right: np.ndarray
    id_left: np.ndarray
    id_right: np.ndarray
    n_identities: int
    image_groups: dict[str, int] = field(default_factory=dict)


def assign_groups(
    table: GroupTable,
    column: str,
    left: Sequence[str],
    right: Sequence[str],
    identities: Mapping[str, str] | None = None,
) -> PairGroups:
    """Group and identity codes of every pair for one label column.

    Args:
        table: The group table.
        column: Which label column.
        left: First image key of each pair.
        right: Second image key of each pair.
        identities: Identity per image key; by default its folder (:func:`identity_of`).

    Raises:
        DataError: If the column is unknown or labels no image of these pairs.
    """
    if column not in table.labels:
        raise DataError(f"{table.source}: no label column {column!r} (columns: {', '.join(table.columns)})")
    lab = table.labels[column]

    def ident(k: str) -> str:
        return identities[k] if identities is not None and k in identities else identity_of(k)

    keys = list(dict.fromkeys([*left, *right]))
    found = {k: lab.get(k if table.kind == "image" else ident(k)) for k in keys}
    names = sorted({g for g in found.values() if g is not None})
    if not names:
        raise DataError(f"{table.source}: column {column!r} labels none of the {len(keys)} images of these pairs")
    code = {n: i for i, n in enumerate(names)}
    image_groups = {k: code[g] for k, g in found.items() if g is not None}
    id_code: dict[str, int] = {}
    for k in keys:
        id_code.setdefault(ident(k), len(id_code))
    return PairGroups(
        column=column,
        names=names,
        left=np.array([image_groups.get(k, -1) for k in left], dtype=np.int64),
        right=np.array([image_groups.get(k, -1) for k in right], dtype=np.int64),
        id_left=np.array([id_code[ident(k)] for k in left], dtype=np.int64),
        id_right=np.array([id_code[ident(k)] for k in right], dtype=np.int64),
        n_identities=len(id_code),
        image_groups=image_groups,
    )


# ------------------------------------------------------------------------------------------------- counting


@dataclass
class _Counts:
    """Weighted error and pair counts per group (shape ``(G,)`` each)."""

    gen_n: np.ndarray
    gen_err: np.ndarray
    within_n: np.ndarray
    within_err: np.ndarray
    across_n: np.ndarray
    across_err: np.ndarray


@dataclass
class _Masks:
    genuine: np.ndarray  # usable genuine pairs with both images in one group
    within: np.ndarray  # usable impostor pairs with both images in one group
    across: np.ndarray  # usable impostor pairs between two different labelled groups


def _masks(pg: PairGroups, same: np.ndarray, usable: np.ndarray) -> _Masks:
    labelled = (pg.left >= 0) & (pg.right >= 0)
    one = labelled & (pg.left == pg.right) & usable
    return _Masks(genuine=one & same, within=one & ~same, across=labelled & (pg.left != pg.right) & ~same & usable)


def _count(pg: PairGroups, m: _Masks, rejected: np.ndarray, accepted: np.ndarray, w: np.ndarray) -> _Counts:
    g = len(pg.names)

    def bc(idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.bincount(idx, weights=weights, minlength=g)[:g]

    lft, r = pg.left, pg.right
    wa = w * accepted
    return _Counts(
        gen_n=bc(lft[m.genuine], w[m.genuine]),
        gen_err=bc(lft[m.genuine], (w * rejected)[m.genuine]),
        within_n=bc(lft[m.within], w[m.within]),
        within_err=bc(lft[m.within], wa[m.within]),
        across_n=bc(lft[m.across], w[m.across]) + bc(r[m.across], w[m.across]),
        across_err=bc(lft[m.across], wa[m.across]) + bc(r[m.across], wa[m.across]),
    )


def _spread(err: np.ndarray, n: np.ndarray, ranked: np.ndarray) -> tuple[float, float, int, int] | None:
    """``(smoothed max/min ratio, raw max - min gap, argmax, argmin)`` over ranked groups with pairs; else None."""
    ok = ranked & (n > 0)
    if ok.sum() < 2:
        return None
    idx = np.flatnonzero(ok)
    raw = err[idx] / n[idx]
    pooled = float(err[idx].sum() / n[idx].sum())
    if pooled <= 0.0:  # no error in any ranked group: no measured difference
        return 1.0, 0.0, int(idx[0]), int(idx[0])
    smooth = (err[idx] + _SMOOTH) / (n[idx] + _SMOOTH / pooled)
    hi, lo = int(np.argmax(smooth)), int(np.argmin(smooth))
    return float(smooth[hi] / smooth[lo]), float(raw.max() - raw.min()), int(idx[hi]), int(idx[lo])


def differentials(counts: _Counts, rank_fnmr: np.ndarray, rank_fmr: np.ndarray) -> dict[str, float | None]:
    """FNMR ratio, FMR ratio and the fairness discrepancy rate from counts (None where under two groups rank)."""
    fn = _spread(counts.gen_err, counts.gen_n, rank_fnmr)
    fm = _spread(counts.within_err, counts.within_n, rank_fmr)
    fdr = None if fn is None and fm is None else 1.0 - 0.5 * (fm[1] if fm else 0.0) - 0.5 * (fn[1] if fn else 0.0)
    return {"fnmr_ratio": fn[0] if fn else None, "fmr_ratio": fm[0] if fm else None, "fdr": fdr}


def identity_weights(pg: PairGroups, same: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One identity-bootstrap replicate as pair weights (see the module docstring)."""
    drawn = np.bincount(rng.integers(0, pg.n_identities, pg.n_identities), minlength=pg.n_identities)
    weights: np.ndarray = np.where(same, drawn[pg.id_left], drawn[pg.id_left] * drawn[pg.id_right])
    return weights.astype(np.float64)


def bootstrap_differentials(
    pg: PairGroups,
    same: np.ndarray,
    usable: np.ndarray,
    decisions: Sequence[np.ndarray],
    rank_fnmr: np.ndarray,
    rank_fmr: np.ndarray,
    policy: GroupPolicy,
) -> list[dict[str, np.ndarray]]:
    """Identity-bootstrap replicates of the differentials for one or more models on the same draws (paired).

    Args:
        pg: Groups of the pairs.
        same: Label per pair.
        usable: Pairs whose two images were acquired.
        decisions: Per model, the accept decision per pair (``score >= threshold``).
        rank_fnmr: Groups ranked on FNMR (decided on the full sample, fixed across replicates).
        rank_fmr: Groups ranked on FMR.
        policy: Replicates and seed.

    Returns:
        Per model, ``{"fnmr_ratio", "fmr_ratio", "fdr"}`` arrays of ``policy.bootstrap`` values (NaN where a
        replicate leaves fewer than two ranked groups).
    """
    m = _masks(pg, same, usable)
    rng = np.random.default_rng(policy.seed)
    out = [{k: np.full(policy.bootstrap, np.nan) for k in ("fnmr_ratio", "fmr_ratio", "fdr")} for _ in decisions]
    for b in range(policy.bootstrap):
        w = identity_weights(pg, same, rng)
        for res, accept in zip(out, decisions, strict=True):
            d = differentials(_count(pg, m, ~accept, accept, w), rank_fnmr, rank_fmr)
            for k, v in d.items():
                if v is not None:
                    res[k][b] = v
    return out


def _interval(values: np.ndarray, alpha: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    return [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))]


# --------------------------------------------------------------------------------------------------- report


def _rate(err: float, n: float, identities: int, policy: GroupPolicy) -> dict[str, Any]:
    k, total = round(err), round(n)
    why = []
    if total < policy.min_pairs:
        why.append(f"{total} pairs < {policy.min_pairs}")
    if identities < policy.min_identities:
        why.append(f"{identities} identities < {policy.min_identities}")
    return {
        "errors": k,
        "pairs": total,
        "identities": identities,
        "rate": k / total if total else None,
        "interval": clopper_pearson(k, total, policy.alpha),
        "inconclusive": bool(why),
        "inconclusive_why": "; ".join(why) or None,
    }


def _distinct(*codes: np.ndarray) -> int:
    return int(np.unique(np.concatenate(codes)).size) if any(c.size for c in codes) else 0


def column_report(
    pg: PairGroups,
    same: np.ndarray,
    scores: np.ndarray,
    usable: np.ndarray,
    threshold: float,
    failed: Mapping[str, str],
    policy: GroupPolicy,
) -> dict[str, Any]:
    """Per-group rates and the differentials for one label column (see the module docstring).

    Args:
        pg: Groups of the pairs.
        same: Label per pair.
        scores: Score per pair.
        usable: Pairs whose two images were acquired (the others count only in failure to acquire).
        threshold: The operating threshold (a pair matches when ``score >= threshold``).
        failed: ``{image key: "code: message"}`` for images that could not be used.
        policy: Small-group rule, interval level, bootstrap.
    """
    accept = scores >= threshold
    m = _masks(pg, same, usable)
    c = _count(pg, m, ~accept, accept, np.ones(same.size))
    groups: dict[str, Any] = {}
    rank_fnmr = np.zeros(len(pg.names), dtype=bool)
    rank_fmr = np.zeros(len(pg.names), dtype=bool)
    labelled = (pg.left >= 0) & (pg.right >= 0)
    for i, name in enumerate(pg.names):
        gen, within = m.genuine & (pg.left == i), m.within & (pg.left == i)
        across = m.across & ((pg.left == i) | (pg.right == i))
        images = [k for k, g in pg.image_groups.items() if g == i]
        reasons: dict[str, int] = {}
        for k in images:
            code = failed.get(k, "").partition(":")[0]
            if code in ACQUISITION_CODES:
                reasons[code] = reasons.get(code, 0) + 1
        n_fail = sum(reasons.values())
        fnmr = _rate(c.gen_err[i], c.gen_n[i], _distinct(pg.id_left[gen]), policy)
        fmr = _rate(c.within_err[i], c.within_n[i], _distinct(pg.id_left[within], pg.id_right[within]), policy)
        rank_fnmr[i], rank_fmr[i] = not fnmr["inconclusive"], not fmr["inconclusive"]
        in_group = labelled & ((pg.left == i) | (pg.right == i))
        groups[name] = {
            "images": len(images),
            "identities": _distinct(pg.id_left[in_group & (pg.left == i)], pg.id_right[in_group & (pg.right == i)]),
            "fnmr": fnmr,
            "fmr_within": fmr,
            "fmr_across": _rate(
                c.across_err[i], c.across_n[i], _distinct(pg.id_left[across], pg.id_right[across]), policy
            ),
            "failure_to_acquire": {
                "failed": n_fail,
                "images": len(images),
                "rate": n_fail / len(images) if images else None,
                "interval": clopper_pearson(n_fail, len(images), policy.alpha),
                "by_reason": reasons,
            },
            "failed_pairs": int((in_group & ~usable).sum()),
        }
    point = differentials(c, rank_fnmr, rank_fmr)
    boot = bootstrap_differentials(pg, same, usable, [accept], rank_fnmr, rank_fmr, policy)[0]
    fn = _spread(c.gen_err, c.gen_n, rank_fnmr)
    fm = _spread(c.within_err, c.within_n, rank_fmr)

    def ratio(spread: tuple[float, float, int, int] | None, key: str, rank: np.ndarray) -> dict[str, Any]:
        if spread is None:
            return {"value": None, "why": f"{int(rank.sum())} group(s) large enough to rank (need 2)"}
        return {
            "value": spread[0],
            "interval": _interval(boot[key], policy.alpha),
            "highest": pg.names[spread[2]],
            "lowest": pg.names[spread[3]],
            "ranked_groups": [pg.names[i] for i in np.flatnonzero(rank)],
        }

    return {
        "groups": groups,
        "differentials": {
            "fnmr_ratio": ratio(fn, "fnmr_ratio", rank_fnmr),
            "fmr_ratio": ratio(fm, "fmr_ratio", rank_fmr),
            "fdr": {
                "value": point["fdr"],
                "interval": _interval(boot["fdr"], policy.alpha),
                "fnmr_gap": fn[1] if fn else None,
                "fmr_gap": fm[1] if fm else None,
                "alpha": 0.5,
                "beta": 0.5,
            },
            "bootstrap": {"unit": "identity", "replicates": policy.bootstrap, "seed": policy.seed},
        },
        "unlabelled_pairs": int((~labelled).sum()),
        "mixed_genuine_pairs": int((labelled & (pg.left != pg.right) & same).sum()),
        "identities": pg.n_identities,
    }


def group_report(
    table: GroupTable,
    left: Sequence[str],
    right: Sequence[str],
    same: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    failed_pairs: Sequence[int] = (),
    failed_images: Mapping[str, str] | None = None,
    policy: GroupPolicy | None = None,
    threshold_source: str = "",
    columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``groups.json`` document: every label column's per-group rates and differentials at ``threshold``.

    Args:
        table: Group labels.
        left: First image key of each pair.
        right: Second image key of each pair.
        same: Label per pair.
        scores: Score per pair.
        threshold: Operating threshold (the model version's deployment threshold).
        failed_pairs: Indices of pairs with an unusable image (left out of FNMR and FMR).
        failed_images: ``{image key: "code: message"}`` of unusable images.
        policy: Small-group rule, interval level, bootstrap.
        threshold_source: Where the threshold came from (for the report).
        columns: Label columns to report (all by default).
    """
    policy = policy or GroupPolicy()
    y = np.asarray(same, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    usable = np.ones(y.size, dtype=bool)
    usable[list(failed_pairs)] = False
    out: dict[str, Any] = {
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "groups_file": table.source,
        "keyed_by": table.kind,
        "n_pairs": int(y.size),
        "policy": {
            "min_pairs": policy.min_pairs,
            "min_identities": policy.min_identities,
            "alpha": policy.alpha,
            "ratio_smoothing": f"(errors + {_SMOOTH}) / (pairs + {_SMOOTH} / pooled rate); 1 when no group errs",
        },
        "columns": {},
    }
    for col in columns or table.columns:
        pg = assign_groups(table, col, left, right)
        out["columns"][col] = column_report(pg, y, s, usable, threshold, failed_images or {}, policy)
    return out
