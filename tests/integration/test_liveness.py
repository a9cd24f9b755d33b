"""Liveness (MiniFASNet) from the published weights in ../shared: the network definition, the parity-gated export,
the SHA-256 checks, the verifier's ``presentation_attack`` path, and ``facegate evaluate-pad``."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facegate.config import load_settings
from facegate.errors import ModelError
from facegate.faces.liveness import (
    KNOWN_WEIGHTS,
    LivenessChecker,
    LivenessGateError,
    convert_from_photos,
    crop_scaled,
)
from tests.conftest import SHARED

pytestmark = pytest.mark.integration

WEIGHTS = SHARED / "models" / "minifasnet"
ADMIN = secrets.token_urlsafe(24)  # made up per run, never a literal in the source


@pytest.fixture(scope="module")
def weights() -> Path:
    if not all((WEIGHTS / w.file).is_file() for w in KNOWN_WEIGHTS):
        pytest.skip(f"needs the MiniFASNet weights in {WEIGHTS} (../shared; never committed)")
    pytest.importorskip("torch", reason="converting the weights needs torch (the train extra)")
    return WEIGHTS


@pytest.fixture(scope="module")
def bundle(weights: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("liveness") / "bundle"
    convert_from_photos(weights, out, photos)
    return out


def test_network_definition_loads_the_published_state_dicts_strictly(weights: Path) -> None:
    import torch

    from facegate.models.minifasnet import MiniFASNet, strip_parallel_prefix

    for pub in KNOWN_WEIGHTS:
        state = torch.load(weights / pub.file, map_location="cpu", weights_only=True)
        net = MiniFASNet.from_state_dict(state)  # strict: every name and shape must match
        assert set(net.state_dict()) == set(strip_parallel_prefix(state))
        with torch.no_grad():
            logits = net(torch.zeros(2, 3, 80, 80))
        assert logits.shape == (2, 3)
    se = MiniFASNet.from_state_dict(torch.load(weights / KNOWN_WEIGHTS[1].file, map_location="cpu", weights_only=True))
    assert se.conv_4.model[5].se_module is not None and se.conv_4.model[0].se_module is None


def test_export_passes_the_parity_gate_and_serving_matches_torch(bundle: Path, weights: Path, photos: Path) -> None:
    import torch

    from facegate.data.imageio import decode_image
    from facegate.faces.pipeline import FaceAligner
    from facegate.faces.quality import select_face
    from facegate.models.minifasnet import MiniFASNet

    meta = json.loads((bundle / "liveness.json").read_text())
    assert [m["scale"] for m in meta["models"]] == [2.7, 4.0]
    for m in meta["models"]:
        assert m["parity"]["n_faces"] >= 15
        for fmt in ("onnx", "openvino"):
            assert m["parity"][fmt]["passed"] and m["parity"][fmt]["max_abs_diff_p_real"] <= 1e-4
    assert not list(bundle.glob("*.pth")), "the bundle carries exports only, never the source weights"

    image = decode_image((photos / "test" / "obama1.jpg").read_bytes())
    aligner = FaceAligner()
    box = select_face(aligner.detector.detect(image), image.shape, aligner.policy).box
    expected = 0.0
    for pub in KNOWN_WEIGHTS:
        net = MiniFASNet.from_state_dict(torch.load(weights / pub.file, map_location="cpu", weights_only=True))
        crop = crop_scaled(image[:, :, ::-1], box, pub.scale)  # BGR, as the published models take it
        x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32))
        with torch.no_grad():
            expected += float(net(x).softmax(1)[0, 1]) / 2
    for runtime in ("openvino", "onnx"):
        assert LivenessChecker(bundle, runtime=runtime).score(image, box) == pytest.approx(expected, abs=1e-4)


def test_weights_and_bundle_files_are_sha256_checked(weights: Path, bundle: Path, tmp_path: Path) -> None:
    fake = tmp_path / "weights"
    fake.mkdir()
    for pub in KNOWN_WEIGHTS:
        shutil.copy(weights / pub.file, fake / pub.file)
    data = bytearray((fake / KNOWN_WEIGHTS[0].file).read_bytes())
    data[-1] ^= 1
    (fake / KNOWN_WEIGHTS[0].file).write_bytes(bytes(data))
    with pytest.raises(LivenessGateError, match="SHA-256"):
        convert_from_photos(fake, tmp_path / "never", tmp_path)

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    binary = next(copy.glob("*.bin"))
    data = bytearray(binary.read_bytes())
    data[100] ^= 1
    binary.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        LivenessChecker(copy)


def _v2(image: bytes, student: str) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]},
            {"name": "student_id", "shape": [1], "datatype": "BYTES", "data": [student]},
        ]
    }


def test_presentation_attack_is_a_reject_audited_and_counted(bundle: Path, photos: Path, tmp_path: Path) -> None:
    from facegate.serve.app import create_app
    from facegate.serve.auth import ApiKeyStore
    from facegate.serve.gallery import Gallery, KeyRing
    from facegate.serve.metrics import DECISIONS, STAGE_SECONDS
    from facegate.serve.models import build_runtime

    # A threshold between the two photos' liveness scores (obama.jpg ~1.0, obama1.jpg ~0.74), so one real request
    # takes each path: the settings path (serve.liveness*) is the one `facegate serve` uses.
    settings = load_settings(
        overrides={
            "home": str(tmp_path),
            "serve.rate_burst": 1000,
            "serve.liveness": True,
            "serve.liveness_model": str(bundle),
            "serve.liveness_threshold": 0.9,
        },
        env={},
    )
    gallery = Gallery(settings.gallery_url(), KeyRing.from_env({"FACEGATE_GALLERY_KEYS": KeyRing.generate("k1")}))
    runtime = build_runtime(settings, "sface", gallery=gallery)
    assert runtime.liveness is not None and runtime.liveness.threshold == 0.9
    keys = ApiKeyStore(gallery.engine, env={"FACEGATE_ADMIN_KEY": ADMIN})
    kiosk = {"Authorization": f"Bearer {keys.create('kiosk-pad')}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    version = runtime.embedder.version
    attacks_before = DECISIONS.labels("reject", "presentation_attack", version)._value.get()
    liveness_before = STAGE_SECONDS.labels("liveness", runtime.embedder.name)._sum.get()
    with TestClient(create_app(settings, runtime, keys)) as client:
        enrol = base64.b64encode((photos / "train" / "obama" / "obama.jpg").read_bytes()).decode()
        assert client.put("/admin/v1/students/S1", json={"photos": [enrol]}, headers=admin).status_code == 200

        infer = "/v2/models/verifier/infer"
        spoof = client.post(infer, json=_v2((photos / "test" / "obama1.jpg").read_bytes(), "S1"), headers=kiosk)
        assert spoof.status_code == 200, spoof.text
        out = {o["name"]: o["data"][0] for o in spoof.json()["outputs"]}
        assert (out["decision"], out["reason"]) == ("reject", "presentation_attack")
        assert out["score"] == -1.0  # no face comparison was made

        same = (photos / "train" / "obama" / "obama.jpg").read_bytes()
        live = client.post(infer, json=_v2(same, "S1"), headers=kiosk)
        out = {o["name"]: o["data"][0] for o in live.json()["outputs"]}
        assert (out["decision"], out["reason"]) == ("accept", "match")

        entries = client.get("/admin/v1/audit/page?limit=5", headers=admin).json()["entries"]
        assert [(e["decision"], e["reason"]) for e in entries[:2]] == [
            ("accept", "match"),
            ("reject", "presentation_attack"),
        ]
        counters = client.get("/admin/v1/counters", headers=admin).json()
        assert counters["by_reason"]["presentation_attack"] == 1
    assert DECISIONS.labels("reject", "presentation_attack", version)._value.get() == attacks_before + 1
    assert STAGE_SECONDS.labels("liveness", runtime.embedder.name)._sum.get() > liveness_before


def test_evaluate_pad_on_a_labelled_folder(bundle: Path, photos: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facegate.cli import app

    root = tmp_path / "pad"
    (root / "bona_fide").mkdir(parents=True)
    (root / "attack" / "print").mkdir(parents=True)
    (root / "attack" / "replay").mkdir(parents=True)
    for name in ("obama.jpg", "obama2.jpg"):
        shutil.copy(photos / "train" / "obama" / name, root / "bona_fide" / name)
    # Stand-ins to exercise the arithmetic: real photos filed as attacks (so each counts as an accepted attack).
    shutil.copy(photos / "train" / "biden" / "biden.jpg", root / "attack" / "print" / "a.jpg")
    shutil.copy(photos / "obama_small.jpg", root / "attack" / "replay" / "b.jpg")
    cv2.imwrite(str(root / "attack" / "replay" / "blank.png"), np.full((200, 200, 3), 128, np.uint8))
    res = CliRunner().invoke(app, ["-q", "evaluate-pad", str(root), "--liveness", str(bundle), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "pad.json").read_text())
    assert report["n_bona_fide"] == 2 and report["bpcer"] == 0.0
    assert report["apcer"]["print"] == {"apcer": 1.0, "accepted": 1, "n": 1}
    assert report["apcer"]["replay"]["n"] == 1  # the blank frame is a failure to acquire, not an error
    assert report["failures_to_acquire"] == [
        {"file": str(root / "attack" / "replay" / "blank.png"), "reason": "no_face"}
    ]
    assert report["acer"] == pytest.approx((report["apcer_max"] + report["bpcer"]) / 2)
