"""The embedding cache's keys: what must hit and what must miss."""

import shutil
from pathlib import Path

import numpy as np

from facegate.data.pairs import ArraySource, BytesSource, FolderSource
from facegate.evaluate.embed_cache import EmbeddingCache, image_digest, model_key
from facegate.evaluate.scoring import embed_keys
from facegate.faces.pipeline import FaceAligner
from facegate.models.base import Embedder


class Counting(Embedder):
    """A tiny embedder with a weights file, counting the faces it is asked to embed."""

    name, version, embedding_size = "counting", "v1", 4

    def __init__(self, weights: Path) -> None:
        self.weights = weights
        self.seen = 0
        self.prepared = 0

    def prepare(self) -> None:
        self.prepared += 1

    def _forward(self, faces: np.ndarray) -> np.ndarray:
        self.seen += len(faces)
        return faces.reshape(len(faces), 4, -1).mean(axis=2).astype(np.float32) + 1.0


def test_model_key_follows_weights_flip_and_alignment(tmp_path):
    w = tmp_path / "w.bin"
    w.write_bytes(b"weights-1")
    m, al = Counting(w), FaceAligner()
    base = model_key(m, flip=False, mode="auto", aligner=al)
    assert base is not None and base == model_key(m, flip=False, mode="auto", aligner=al)
    assert model_key(m, flip=True, mode="auto", aligner=al) != base
    assert model_key(m, flip=False, mode="always", aligner=al) != base
    w2 = tmp_path / "w2.bin"
    w2.write_bytes(b"weights-2")  # same name and version, other weights: must miss
    assert model_key(Counting(w2), flip=False, mode="auto", aligner=al) != base
    no_file = Counting(tmp_path / "absent.bin")
    assert model_key(no_file, flip=False, mode="auto", aligner=al) is None


def test_model_key_follows_precision_and_keeps_the_f32_key(tmp_path):
    """A bf16 run must neither read nor fill f32 entries; f32 keeps the key that earlier caches were written under."""
    w = tmp_path / "w.bin"
    w.write_bytes(b"weights-1")
    m, al = Counting(w), FaceAligner()
    f32 = model_key(m, flip=False, mode="auto", aligner=al)
    assert f32 is not None and "precision" not in f32
    m.precisions = ("f32", "bf16")
    m.set_precision("bf16")
    bf16 = model_key(m, flip=False, mode="auto", aligner=al)
    assert bf16 is not None and bf16 != f32 and "precision=bf16" in bf16


def test_image_digest_is_content_not_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"\xff\xd8 same bytes")
    shutil.copy(tmp_path / "a" / "x.jpg", tmp_path / "a" / "y.jpg")
    src = FolderSource(tmp_path)
    assert image_digest(src, "a/x.jpg") == image_digest(src, "a/y.jpg") is not None
    assert image_digest(src, "a/missing.jpg") is None
    assert image_digest(BytesSource([b"one", b"two"]), "0") != image_digest(BytesSource([b"one", b"two"]), "1")


def test_second_embedding_of_the_same_faces_runs_no_forward_pass(tmp_path, rng):
    w = tmp_path / "w.bin"
    w.write_bytes(b"weights")
    faces = rng.integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    faces[:, ::2] = 255 - faces[:, ::2]  # stripes: sharp enough for the aligner's blur check
    src, keys = ArraySource(faces), [str(i) for i in range(5)]
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    m = Counting(w)
    first, fail1, s1 = embed_keys(src, keys, m, FaceAligner(), cache=cache, progress=False)
    again, fail2, s2 = embed_keys(src, keys, m, FaceAligner(), cache=cache, progress=False)
    assert not fail1 and not fail2
    assert (s1.embedded, s1.cached, s2.embedded, s2.cached, m.seen) == (5, 0, 0, 5, 5)
    assert m.prepared == 1  # set up (beside the first decoding) for the run that embeds; not for the cached one
    for k in keys:
        np.testing.assert_array_equal(first[k], again[k])
    _, _, s3 = embed_keys(src, keys, m, FaceAligner(), flip=True, cache=cache, progress=False)
    assert s3.embedded == 5  # flip is another key
