"""The fast evaluation path on real LFW faces: same scores as one face per forward pass, and a cache that works."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facegate.cli import app
from facegate.data.pairs import PairSet, load_pairs
from facegate.evaluate.embed_cache import EmbeddingCache
from facegate.evaluate.metrics import compute_metrics
from facegate.evaluate.runner import evaluate_pairs
from facegate.faces.detect import SFACE_FILE, packaged_model_path

pytestmark = pytest.mark.integration


def _spread(ps: PairSet, n: int) -> PairSet:
    """``n`` pairs spread over the whole file, so every fold keeps both classes."""
    idx = np.unique(np.linspace(0, len(ps) - 1, n).round().astype(int))
    return PairSet(
        ps.name, [ps.left[i] for i in idx], [ps.right[i] for i in idx], ps.same[idx], ps.folds[idx], ps.source
    )


@pytest.fixture(scope="module")
def subset(lfw):  # type: ignore[no-untyped-def]
    return _spread(load_pairs(lfw / "pairs.txt", lfw), 60)


def test_scores_match_the_packaged_model_one_face_at_a_time(subset, sface, aligner):
    """Folded weights, batching and the new scoring path change no score: the packaged ONNX, run one face per
    forward pass on the same crops, gives the same scores, accuracy and threshold."""
    res = evaluate_pairs(sface, subset, aligner=aligner, progress=False)
    assert sface._graph() != sface.weights, "the folded graph should be what runs (onnx is installed here)"
    net = cv2.dnn.readNetFromONNX(str(packaged_model_path(SFACE_FILE)))  # the file as shipped, dequantising per pass
    emb = {}
    for key in subset.image_keys():
        face = aligner.prepare(subset.source.load(key), "auto").face
        net.setInput(cv2.dnn.blobFromImages([face], 1.0, (112, 112), (0, 0, 0), swapRB=False, crop=False), "data")
        e = np.asarray(net.forward(), dtype=np.float32).reshape(-1)
        emb[key] = e / np.linalg.norm(e)
    ref = np.array([float(np.dot(emb[a], emb[b])) for a, b in zip(subset.left, subset.right, strict=True)])
    np.testing.assert_allclose(res.scores, ref, atol=1e-5)
    want = compute_metrics(subset.same, ref, subset.folds)
    assert res.metrics["accuracy"] == want["accuracy"]
    assert res.metrics["threshold"] == pytest.approx(want["threshold"], abs=1e-5)


def test_flip_shares_the_forward_pass_and_matches_two_passes(subset, sface, aligner):
    faces = np.stack([aligner.prepare(subset.source.load(k), "auto").face for k in subset.image_keys()[:10]])
    both = sface.embed(faces, flip=True)
    a, b = sface._forward(faces), sface._forward(np.ascontiguousarray(faces[:, :, ::-1, :]))
    ref = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    np.testing.assert_allclose(both, ref, atol=1e-5)


def test_cli_second_run_embeds_nothing(lfw, subset, tmp_path, monkeypatch):
    """`facegate evaluate` twice on the same faces: the second run takes every embedding from the cache."""
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "home"))
    pairs = tmp_path / "pairs.csv"
    rows = ["image_a,image_b,same"] + [
        f"{a},{b},{int(s)}" for a, b, s in zip(subset.left, subset.right, subset.same, strict=True)
    ]
    pairs.write_text("\n".join(rows) + "\n")
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        args = ["-q", "evaluate", "--model", "sface", "--pairs", str(pairs), "--images", str(lfw), "--out", str(out)]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        runs.append(json.loads((out / "metrics.json").read_text()))
    n = runs[0]["n_images"]
    assert (runs[0]["n_embedded"], runs[0]["n_cached"]) == (n, 0)
    assert (runs[1]["n_embedded"], runs[1]["n_cached"]) == (0, n)
    assert runs[1]["accuracy"] == runs[0]["accuracy"]
    assert runs[1]["threshold"] == runs[0]["threshold"]
    assert EmbeddingCache.at_home(tmp_path / "home").count() == n
