import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facegate.bundles import load_embedder
from facegate.cli import app
from facegate.errors import ModelError
from facegate.models.backbones import create_model, list_backbones
from facegate.models.torch_embedder import TorchEmbedder

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parents[1] / "fixtures" / "insightface_iresnet_state_dict.json"


@pytest.mark.parametrize("name", ["iresnet18", "iresnet34", "iresnet50", "iresnet100"])
def test_state_dict_names_and_shapes_match_insightface(name):
    # The fixture was generated from insightface arcface_torch's own iresnet.py (source recorded inside it).
    expected = json.loads(FIXTURE.read_text())["models"][name]
    got = [[k, list(v.shape)] for k, v in create_model(name).state_dict().items()]
    assert got == expected


@pytest.mark.parametrize("name", ["iresnet18", "iresnet34", "iresnet50", "iresnet100"])
def test_every_backbone_gives_finite_unit_norm_embeddings(name):
    torch.manual_seed(0)
    # The published size, in training mode: freshly initialised BN running statistics (0 and 1) are meaningless,
    # and in eval mode a fresh iResNet-100 overflows; arcface_torch never evaluates an untrained net either.
    model = create_model(name).train()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512)
    emb = torch.nn.functional.normalize(out)
    assert torch.isfinite(emb).all()
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, rtol=1e-5)


def test_registry_lists_and_rejects():
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100"} <= set(list_backbones())
    with pytest.raises(KeyError, match="unknown backbone"):
        create_model("resnet9000")


def _import(pth, out):
    args = [
        "models",
        "import-insightface",
        str(pth),
        "--arch",
        "iresnet18",
        "--embedding-size",
        "32",
        "--out",
        str(out),
    ]
    return CliRunner().invoke(app, args)


def test_import_insightface_checkpoint(tmp_path):
    # An insightface-style checkpoint (DDP "module." prefix) of a narrow r18 becomes a bundle that loads and embeds.
    src = create_model("iresnet18", embedding_size=32, width=0.25)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "backbone.pth")
    with pytest.raises(ModelError, match="do not fit"):
        TorchEmbedder("iresnet18", weights=tmp_path / "backbone.pth", embedding_size=512)
    out = _import(tmp_path / "backbone.pth", tmp_path / "bundle")
    assert out.exit_code != 0  # width 0.25 is not the published r18: strict loading refuses it
    full = create_model("iresnet18", embedding_size=32)
    torch.save(full.state_dict(), tmp_path / "full.pth")
    out = _import(tmp_path / "full.pth", tmp_path / "bundle")
    assert out.exit_code == 0, out.output
    emb = load_embedder(tmp_path / "bundle")
    faces = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    got = emb.embed(faces)
    full.eval()
    with torch.no_grad():
        ref = full(torch.from_numpy(faces).permute(0, 3, 1, 2).float().sub(127.5).div(127.5))
    np.testing.assert_allclose(got, torch.nn.functional.normalize(ref).numpy(), atol=1e-5)
