"""Embed the images of a pair set and score its pairs: the one path behind every evaluation.

``facegate evaluate``, the pipeline's evaluate and gate steps, exports' parity checks and per-group reports all call
:func:`score_pairs` (or :func:`embed_keys` for a bare list of images), so they embed the same way and share the
embedding cache.

How it keeps both cores busy: images are decoded and aligned on a thread pool (Pillow and OpenCV release the GIL)
one chunk ahead of the main thread, which runs the forward pass of the previous chunk. Images already in the
:class:`~facegate.evaluate.embed_cache.EmbeddingCache` are neither decoded nor embedded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from facegate.data.imageio import DEFAULT_LIMITS, ImageLimits
from facegate.data.pairs import ImageSource, PairSet
from facegate.errors import FacegateError
from facegate.evaluate.embed_cache import EmbeddingCache, image_digest, model_key
from facegate.faces.pipeline import AlignMode, FaceAligner
from facegate.models.base import Embedder

__all__ = ["FAILED_SCORE", "EmbedStats", "PairScores", "embed_keys", "score_pairs"]

#: Score of a pair with an unusable image: the lowest cosine, i.e. "no match", as a kiosk would judge it.
FAILED_SCORE = -1.0


@dataclass
class EmbedStats:
    """What embedding a set of images cost.

    Attributes:
        embedded: Images that went through the network in this call.
        cached: Images whose embedding came from the cache.
        failed: Images that could not be used.
        seconds: Wall time of the call.
    """

    embedded: int = 0
    cached: int = 0
    failed: int = 0
    seconds: float = 0.0


@dataclass
class PairScores:
    """Scores of a pair set.

    Attributes:
        scores: Cosine similarity per pair (``FAILED_SCORE`` where an image failed).
        failed_pairs: Indices of pairs with a failed image.
        failures: ``{image key: "code: message"}`` for every image that could not be used.
        stats: Embedding counts and time.
    """

    scores: np.ndarray
    failed_pairs: list[int]
    failures: dict[str, str]
    stats: EmbedStats = field(default_factory=EmbedStats)


def _prepare_one(
    source: ImageSource, key: str, aligner: FaceAligner, mode: AlignMode, limits: ImageLimits
) -> tuple[str, np.ndarray | None, str | None]:
    try:
        crop = aligner.prepare(source.load(key, limits), mode)
    except FacegateError as exc:
        return key, None, f"{exc.code}: {exc.message}"
    return key, crop.face, None


def _prepare_many(
    source: ImageSource, keys: Sequence[str], aligner: FaceAligner, mode: AlignMode, limits: ImageLimits
) -> list[tuple[str, np.ndarray | None, str | None]]:
    return [_prepare_one(source, k, aligner, mode, limits) for k in keys]


def _chunks(keys: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def embed_keys(
    source: ImageSource,
    keys: Sequence[str],
    embedder: Embedder,
    aligner: FaceAligner,
    *,
    mode: AlignMode = "auto",
    flip: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    limits: ImageLimits = DEFAULT_LIMITS,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    desc: str = "embed",
) -> tuple[dict[str, np.ndarray], dict[str, str], EmbedStats]:
    """Embed the images behind ``keys`` (decoding pipelined against inference, cached embeddings reused).

    Args:
        source: Where keys are read from.
        keys: Distinct image keys.
        embedder: The model.
        aligner: Detection/alignment for images that are not aligned yet.
        mode: ``auto`` | ``always`` | ``never`` (see :meth:`FaceAligner.prepare`).
        flip: Flip test-time augmentation (mirrored faces share the originals' forward pass).
        batch_size: Faces per forward pass.
        workers: Threads decoding and aligning.
        limits: Image limits.
        cache: Embedding cache to read and fill (``None``: embed everything).
        progress: Show a progress bar.
        desc: Progress bar label.

    Returns:
        ``(embeddings by key, failures by key, stats)``.
    """
    t0 = time.perf_counter()
    embeddings: dict[str, np.ndarray] = {}
    failures: dict[str, str] = {}
    stats = EmbedStats()
    ns = model_key(embedder, flip=flip, mode=mode, aligner=aligner) if cache is not None else None
    digests: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        todo: Sequence[str] = keys
        if cache is not None and ns is not None:
            # A few hundred files per task: one future per image costs more than hashing a small JPEG.
            hashed = pool.map(lambda ks: [image_digest(source, k, limits) for k in ks], _chunks(keys, 256))
            found = dict(zip(keys, (d for part in hashed for d in part), strict=True))
            digests = {k: d for k, d in found.items() if d is not None}
            hits = cache.get_many(ns, list(digests.values()))
            for k, d in digests.items():
                if d in hits:
                    embeddings[k] = hits[d]
            todo = [k for k in keys if k not in embeddings]
            stats.cached = len(embeddings)
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
        # The model's set-up (runtime import, compilation: ~1 s) runs beside the first chunk's decoding, and only when
        # something is left to embed: a run answered from the cache never loads the network.
        setup: Future[None] | None = pool.submit(embedder.prepare) if todo else None

        def decoded() -> Iterator[tuple[list[str], np.ndarray]]:
            """Aligned faces chunk by chunk, the next chunk's decoding submitted before this one is handed on."""
            nonlocal setup
            pending: list[Future[list[tuple[str, np.ndarray | None, str | None]]]] | None = None
            for chunk in [*_chunks(todo, batch_size), None]:
                # One task per worker and chunk (not per image): fewer futures for the main thread to juggle.
                nxt = (
                    None
                    if chunk is None
                    else [
                        pool.submit(_prepare_many, source, part, aligner, mode, limits)
                        for part in _chunks(chunk, -(-len(chunk) // max(1, workers)))
                    ]
                )
                if pending is not None:
                    done = [r for f in pending for r in f.result()]
                    failures.update({k: err for k, _, err in done if err is not None})
                    bar.update(sum(1 for _, face, _ in done if face is None))
                    if setup is not None:
                        setup.result()  # its error, if any, is the model's: raise it here rather than on a pass
                        setup = None
                    ok = [(k, face) for k, face, _ in done if face is not None]
                    if ok:
                        yield [k for k, _ in ok], np.stack([f for _, f in ok])
                pending = nxt

        # The embedder queues each chunk's forward pass before handing back the one before: caching the results
        # and decoding ahead overlap the network instead of leaving it idle between chunks.
        for done_keys, embs in embedder.embed_stream(decoded(), flip=flip):
            fresh = list(zip(done_keys, embs, strict=True))
            embeddings.update(fresh)
            stats.embedded += len(fresh)
            if cache is not None and ns is not None:
                cache.put_many(ns, [(digests[k], e) for k, e in fresh if k in digests])
            bar.update(len(fresh))
        bar.close()
    stats.failed = len(failures)
    stats.seconds = time.perf_counter() - t0
    return embeddings, failures, stats


def score_pairs(
    embedder: Embedder,
    pairset: PairSet,
    *,
    aligner: FaceAligner | None = None,
    mode: AlignMode = "auto",
    flip: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    limits: ImageLimits = DEFAULT_LIMITS,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
) -> PairScores:
    """Cosine score of every pair of ``pairset`` (``FAILED_SCORE`` where an image is unusable).

    The arguments are those of :func:`embed_keys`; ``aligner`` defaults to YuNet, loaded only if an image needs it.
    """
    keys = pairset.image_keys()
    embs, failures, stats = embed_keys(
        pairset.source,
        keys,
        embedder,
        aligner or FaceAligner(),
        mode=mode,
        flip=flip,
        batch_size=batch_size,
        workers=workers,
        limits=limits,
        cache=cache,
        progress=progress,
        desc=f"embed {pairset.name}",
    )
    scores = np.full(len(pairset), FAILED_SCORE, dtype=np.float64)
    failed: list[int] = []
    for i, (a, b) in enumerate(zip(pairset.left, pairset.right, strict=True)):
        ea, eb = embs.get(a), embs.get(b)
        if ea is None or eb is None:
            failed.append(i)
        else:
            scores[i] = float(np.dot(ea, eb))
    return PairScores(scores=scores, failed_pairs=failed, failures=failures, stats=stats)
