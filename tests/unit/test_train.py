"""Trainer behaviour: exact resume, DDP == single process with the same global batch, learning on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facegate.cli import app
from facegate.errors import ConfigError
from facegate.train.config import load_train_config
from facegate.train.data import EpochPlan, micro_batches
from facegate.train.trainer import TrainingError, train

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny_cpu.yaml"

# A very small, fast configuration for mechanics (not accuracy).
MICRO = [
    "model.width=0.0625",
    "model.embedding_size=16",
    "batch_size=8",
    "epochs=2",
    "data.synthetic_identities=8",
    "data.synthetic_per_identity=4",
    "val.kind=none",
    "log_every_steps=1",
    "optim.warmup_epochs=0.5",
    "model.dropout=0.2",
]


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "model" / "model.pt", weights_only=True)


def test_resume_is_bit_identical(tmp_path):
    straight = load_train_config(TINY, [*MICRO, f"output={tmp_path / 'a'}"])
    r = train(straight, progress=False)
    assert r.steps == 8
    half = load_train_config(TINY, [*MICRO, f"output={tmp_path / 'b'}", "max_steps=3"])
    assert train(half, progress=False).steps == 3
    rest = load_train_config(TINY, [*MICRO, f"output={tmp_path / 'b'}"])
    assert train(rest, progress=False).steps == 8
    a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # ...and the checkpoint really carried the data position: without it the resumed run would restart epoch 0.
    ck = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)  # no unpickling needed
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (2, 0, 8)


def test_data_plan_partitions_global_batches():
    plan = EpochPlan.make(64, seed=1, epoch=0, flip=True)
    single = micro_batches(plan, 1, batch=8, world=1, rank=0, accum=2)
    ddp = [micro_batches(plan, 1, batch=8, world=2, rank=r, accum=1)[0] for r in (0, 1)]
    assert single == ddp  # 1 process x 2 accumulation steps sees what 2 ranks see
    assert EpochPlan.make(64, 1, 0, True).order.tolist() == plan.order.tolist()
    assert EpochPlan.make(64, 1, 1, True).order.tolist() != plan.order.tolist()


def test_ddp_two_processes_match_single_process(tmp_path):
    common = [*MICRO, "model.dropout=0.0", "data.synthetic_identities=16", "epochs=1", "batch_size=4"]
    # Same thread count on both sides: float sums then happen in the same order, so the runs agree to the bit
    # (measured); the tolerance only allows for platforms where gloo's all-reduce orders the two halves otherwise.
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    single = [
        sys.executable,
        "-m",
        "facegate",
        "-q",
        "train",
        str(TINY),
        *common,
        "grad_accum=2",
        f"output={tmp_path / 'single'}",
    ]
    ddp = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "facegate",
        "-q",
        "train",
        str(TINY),
        *common,
        f"output={tmp_path / 'ddp'}",
    ]
    for cmd in (single, ddp):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
    a, b = _params(tmp_path / "single"), _params(tmp_path / "ddp")
    n = 0
    for k, v in a.items():
        if "running" in k or "num_batches" in k:
            continue  # BN running statistics: DDP keeps rank 0's, accumulation sees both halves
        torch.testing.assert_close(b[k], v, rtol=1e-5, atol=1e-6)
        n += 1
    assert n > 50


def test_tiny_training_learns(tmp_path):
    """The tiny config reaches >= 0.95 validation accuracy on held-out synthetic identities, well above the same
    network untrained."""
    cfg = load_train_config(TINY, [f"output={tmp_path / 'tiny'}"])
    untrained = load_train_config(TINY, [f"output={tmp_path / 'untrained'}", "max_steps=1", "optim.lr=1e-9"])
    base = train(untrained, progress=False).final_val
    res = train(cfg, progress=False)
    acc = res.final_val["accuracy"]
    assert acc >= 0.95
    assert acc > base["accuracy"] + 0.02
    meta = json.loads((res.bundle / "facegate.json").read_text())
    assert meta["model"] == "iresnet18"
    assert meta["threshold"] is not None
    # The bundle works wherever a model is accepted.
    from facegate.bundles import load_embedder

    emb = load_embedder(res.bundle)
    assert emb.embedding_size == 64


def test_cli_train_and_bad_overrides(tmp_path):
    out = CliRunner().invoke(app, ["-q", "train", str(TINY), *MICRO, "max_steps=2", f"output={tmp_path / 'c'}"])
    assert out.exit_code == 0, out.output
    assert "model bundle" in out.stdout
    with pytest.raises(ConfigError, match="optim.lr"):
        load_train_config(TINY, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_train_config(TINY, ["lr"])


def test_nan_stops_with_message(tmp_path):
    cfg = load_train_config(TINY, [*MICRO, "optim.lr=1e30", "optim.clip_grad_norm=null", f"output={tmp_path}"])
    with pytest.raises(TrainingError, match=r"stopped at step \d+: loss is"):
        train(cfg, progress=False)


def test_teacher_distillation_runs_and_resumes_exactly(tmp_path):
    micro = [*MICRO, "teacher=sface", "distill_weight=0.5", "model.dropout=0.0"]
    a = load_train_config(TINY, [*micro, f"output={tmp_path / 'a'}"])
    train(a, progress=False)
    train(load_train_config(TINY, [*micro, f"output={tmp_path / 'b'}", "max_steps=5"]), progress=False)
    train(load_train_config(TINY, [*micro, f"output={tmp_path / 'b'}"]), progress=False)
    pa, pb = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    ck = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)  # no unpickling needed
    assert ck["proj"]["weight"].shape == (128, 16)  # student 16-d projected onto SFace's 128-d
    plain = load_train_config(TINY, [*MICRO, "model.dropout=0.0", f"output={tmp_path / 'c'}"])
    train(plain, progress=False)
    assert not all(torch.equal(pa[k], _params(tmp_path / "c")[k]) for k in pa)  # the teacher changed training


_NAN_ON_ONE_RANK = """
import os, sys
import torch
from facegate.models import heads
from facegate.train.config import load_train_config
from facegate.train.trainer import TrainingError, train

calls = 0
margin = heads.CombinedMarginLoss.forward


def poisoned(self, cosine, target):
    global calls
    calls += 1
    logits = margin(self, cosine, target)
    return logits * float("nan") if os.environ["RANK"] == "1" and calls >= 3 else logits


heads.CombinedMarginLoss.forward = poisoned
try:
    train(load_train_config(sys.argv[1], sys.argv[2:]), progress=False)
except TrainingError as exc:
    print(f"STOPPED: {exc}", file=sys.stderr)
    sys.exit(3)
"""


def test_ddp_nan_on_one_rank_stops_every_rank(tmp_path):
    """A non-finite loss on rank 1 only stops rank 0 too, with the same clear error.

    Without the agreement, rank 0 dies in the gradient all-reduce with a gloo "connection closed" traceback (seen),
    and under NCCL it would wait there until the process group times out.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"}
    base |= {"WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    args = [str(TINY), *MICRO, "epochs=4", f"output={tmp_path / 'nan'}"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _NAN_ON_ONE_RANK, *args],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for r in (0, 1)
    ]
    try:
        errs = [p.communicate(timeout=180)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [3, 3], errs
    assert "another rank" in errs[0]
    assert "loss is nan" in errs[1]


def test_resume_refuses_a_checkpoint_that_needs_unpickling(tmp_path):
    """Checkpoints load with weights_only=True: one carrying arbitrary pickled objects is refused, clearly."""
    ckpt = tmp_path / "x" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save({"model": {}, "rng": {"numpy": np.random.get_state()}}, ckpt / "last.pt")
    cfg = load_train_config(TINY, [*MICRO, "max_steps=1", f"output={tmp_path / 'x'}"])
    with pytest.raises(TrainingError, match="cannot resume from .*--no-resume"):
        train(cfg, progress=False)
