"""Evaluation on real data: the SFace baseline on LFW, and honest accounting of unusable images."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from facegate.cli import app

pytestmark = pytest.mark.integration


def test_sface_lfw_10fold_bar(lfw, tmp_path):
    """The foundation bar: `facegate evaluate --model sface` on LFW reaches >= 0.990 (published: 0.994)."""
    out = tmp_path / "lfw"
    res = CliRunner().invoke(
        app,
        [
            "-q",
            "evaluate",
            "--model",
            "sface",
            "--pairs",
            str(lfw / "pairs.txt"),
            "--images",
            str(lfw),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_pairs"] == 6000
    assert m["n_failed_pairs"] == 0
    assert m["accuracy"] >= 0.990
    assert m["auc"] > 0.99
    assert m["eer"] < 0.02
    assert set(m["tar_at_far"]) == {"0.1", "0.01", "0.001"}
    assert m["tar_at_far"]["0.001"] > 0.95
    assert 0.2 < m["threshold"] < 0.5
    for name in ("roc.png", "scores.png", "scores.csv", "config.yaml"):
        assert (out / name).stat().st_size > 0
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mixed_csv_with_unaligned_missing_and_faceless_images(lfw, photos, tmp_path):
    imgs = tmp_path / "imgs"
    for person in ("Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody"):
        shutil.copytree(lfw / person, imgs / person)
    shutil.copy(photos / "train" / "obama" / "obama.jpg", imgs / "obama_raw.jpg")  # unaligned: auto-aligned
    shutil.copy(photos / "train" / "obama" / "obama2.jpg", imgs / "obama_raw2.jpg")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    a, g, b = (
        sorted(p.relative_to(imgs).as_posix() for p in (imgs / n).glob("*.jpg"))
        for n in ("Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody")
    )
    rows = [
        f"{a[0]},{a[1]},1",
        f"{g[0]},{g[1]},yes",
        f"{b[0]},{b[1]},true",
        "obama_raw.jpg,obama_raw2.jpg,1",
        f"{a[0]},{g[0]},0",
        f"{g[2]},{b[2]},no",
        f"obama_raw.jpg,{b[3]},false",
        f"missing/nobody.jpg,{b[0]},0",
        f"broken.jpg,{a[2]},1",
    ]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b,same\n" + "\n".join(rows) + "\n")
    out = tmp_path / "ev"
    res = CliRunner().invoke(
        app, ["-q", "evaluate", "--pairs", str(pairs), "--images", str(imgs), "--out", str(out), "--flip"]
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_pairs"] == 9
    assert m["n_failed_pairs"] == 2
    failed = m["failed_images"]
    assert any(k.endswith("missing/nobody.jpg") and v.startswith("missing_image") for k, v in failed.items())
    assert any(k.endswith("broken.jpg") for k in failed)
    assert "2 pairs failed" in res.stderr
    assert "nobody.jpg" in res.stderr
    assert m["flip"] is True
    scores = (out / "scores.csv").read_text().splitlines()
    assert scores[4].startswith("obama_raw.jpg,obama_raw2.jpg,1,")
    assert float(scores[4].split(",")[3]) > 0.5  # the unaligned photos were detected, aligned and matched
    # Failed pairs count as "no match": the genuine broken.jpg pair is an error, the impostor missing pair is not.
    assert m["best_accuracy_all_pairs"] == pytest.approx(8 / 9)
