"""The trainer: one CPU to a DDP GPU cluster, exact resume, periodic verification, early stop.

Run it as ``facegate train CONFIG.yaml [key=value ...]``; under ``torchrun`` it joins the process group itself
(gloo on CPU, NCCL on GPU). Rank 0 alone writes checkpoints, the model bundle and logs.

Exact resume: a checkpoint holds the model, head, optimiser, LR scheduler and grad-scaler states, every RNG state
(torch, numpy, Python) and the data position (epoch and step). Data order is a function of (seed, epoch, step)
(see :mod:`facegate.train.data`), so N steps straight and N/2 + resume + N/2 give bit-identical weights on CPU.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from facegate.errors import FacegateError
from facegate.models.backbones import create_model
from facegate.models.heads import CombinedMarginLoss, NonFiniteLossError, PartialFC
from facegate.train.config import TrainConfig
from facegate.train.data import EpochPlan, FaceSource, build_source, build_val_pairs, epoch_loader

__all__ = ["Callback", "TrainResult", "TrainingError", "train"]

CKPT_DIR = "checkpoints"
LAST = "last.pt"


class TrainingError(FacegateError):
    """Training stopped on purpose (non-finite loss, bad data)."""

    code = "training_failed"


class Callback(Protocol):
    """Hooks for trackers (MLflow) and tuners (Ray Tune)."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        """Training metrics every ``log_every_steps``."""

    def on_validation(self, step: int, metrics: dict[str, Any]) -> None:
        """Verification metrics after each validation."""


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    steps: int
    epochs: float
    history: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    bundle: Path | None = None
    seconds: float = 0.0
    samples_per_second: float = 0.0

    @property
    def final_val(self) -> dict[str, Any] | None:
        """The last validation's metrics."""
        return self.validations[-1] if self.validations else None


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _lr_lambda(total: int, warmup: int, power: float) -> Any:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup)) ** power

    return f


def _rng_state() -> dict[str, Any]:
    # Tensors and plain Python values only, so that checkpoints load with torch.load(weights_only=True): a resumed
    # checkpoint may come from shared storage, and a full unpickle would run whatever code it names.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _Embedder:
    """Evaluate the training model with the evaluation module (no copy of the weights)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        from facegate.models.torch_embedder import TorchEmbedder

        self.inner = TorchEmbedder(cfg.model.backbone, embedding_size=cfg.model.embedding_size, module=model)
        self.device = device

    def evaluate(self, pairs: Any, flip: bool) -> dict[str, Any]:
        from facegate.evaluate.runner import evaluate_pairs

        was_training = self.inner.model.training
        self.inner.model.eval()
        try:
            res = evaluate_pairs(self.inner, pairs, mode="auto", flip=flip, progress=False)
        finally:
            self.inner.model.train(was_training)
        return res.metrics


class _TrainNet(nn.Module):
    """Backbone + margin head (+ distillation projection) as one module, so DDP synchronises all their gradients."""

    def __init__(
        self,
        backbone: nn.Module,
        head: PartialFC,
        amp_dtype: torch.dtype | None,
        proj: nn.Module | None = None,
        distill_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone, self.head, self.amp_dtype = backbone, head, amp_dtype
        self.proj, self.distill_weight = proj, distill_weight

    def forward(self, x: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            emb = self.backbone(x)
        loss = self.head(emb, labels)
        if teacher is not None and self.proj is not None:
            # Embedding distillation: the student's projected embedding should point where the teacher's does.
            student = nn.functional.normalize(self.proj(emb.float()))
            loss = loss + self.distill_weight * (1.0 - (student * teacher).sum(dim=1)).mean()
        return loss


class _Teacher:
    """A frozen embedder (e.g. SFace) whose embeddings of the training images are cached by (index, flip)."""

    def __init__(self, name: str) -> None:
        from facegate.bundles import load_embedder

        self.embedder = load_embedder(name)
        self.dim = self.embedder.embedding_size
        self.cache: dict[int, np.ndarray] = {}

    def targets(self, x_u8: torch.Tensor, keys: torch.Tensor, device: torch.device) -> torch.Tensor:
        missing = [i for i, k in enumerate(keys.tolist()) if k not in self.cache]
        if missing:
            faces = x_u8[missing].permute(0, 2, 3, 1).contiguous().numpy()
            # One face per pass: batched kernels may round differently with the batch's size and contents, and a
            # resumed run fills its cache in other batches than the uninterrupted one (SFace costs the same per face).
            for i, e in zip(missing, self.embedder.embed(faces, batch_size=1), strict=True):
                self.cache[int(keys[i])] = e
        return torch.from_numpy(np.stack([self.cache[int(k)] for k in keys.tolist()])).to(device)


def train(
    cfg: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train a face-recognition backbone.

    Args:
        cfg: The configuration.
        callbacks: Trackers and tuners (rank 0 only).
        resume: Continue from ``<output>/checkpoints/last.pt`` when it exists.
        progress: Show a progress bar (rank 0).

    Returns:
        The result; the trained bundle is ``<output>/model`` (``model.pt`` + ``facegate.json``).

    Raises:
        TrainingError: On a non-finite loss (with the step and advice), or unusable data.
    """
    from tqdm import tqdm

    rank, world, local_rank = _dist_info()
    device = _device(cfg, local_rank)
    is_main = rank == 0
    out = Path(cfg.output)
    ckpt_dir = out / CKPT_DIR
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    np.random.seed(cfg.seed % (2**32))
    random.seed(cfg.seed)

    source: FaceSource = build_source(cfg)
    val_pairs = build_val_pairs(cfg) if is_main else None
    global_batch = cfg.batch_size * world * cfg.grad_accum
    steps_per_epoch = len(source) // global_batch
    if steps_per_epoch < 1:
        raise TrainingError(f"{len(source)} images cannot fill one global batch of {global_batch}")
    total_steps = steps_per_epoch * cfg.epochs
    stop_at = min(total_steps, cfg.max_steps or total_steps)

    model = create_model(
        cfg.model.backbone, embedding_size=cfg.model.embedding_size, width=cfg.model.width, dropout=cfg.model.dropout
    ).to(device)
    # channels_last only on GPU: it is where it pays (tensor cores), and torch 2.13's CPU backward of a stride-2
    # 1x1 convolution with 8 channels in channels_last aborts the process (double free) - seen with width 0.125.
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    m = cfg.margin
    head = PartialFC(
        cfg.model.embedding_size,
        source.num_classes,
        CombinedMarginLoss(m.s, m.m1, m.m2, m.m3),
        sample_rate=m.sample_rate,
    ).to(device)
    teacher = _Teacher(cfg.teacher) if cfg.teacher else None
    proj = nn.Linear(cfg.model.embedding_size, teacher.dim).to(device) if teacher else None
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    if proj is not None:
        params += list(proj.parameters())
    o = cfg.optim
    optimizer: torch.optim.Optimizer
    if o.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    warmup = round(o.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup, o.power))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    epoch, step_in_epoch, global_step = 0, 0, 0
    history: list[dict[str, Any]] = []
    validations: list[dict[str, Any]] = []
    last = ckpt_dir / LAST
    if resume and last.is_file():
        try:
            state = torch.load(last, map_location=device, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise TrainingError(
                f"cannot resume from {last}: not a checkpoint this version writes ({type(exc).__name__}); move it "
                "away to start afresh, or pass --no-resume"
            ) from None
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        if proj is not None and state.get("proj") is not None:
            proj.load_state_dict(state["proj"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        history, validations = state.get("history", []), state.get("validations", [])
        _set_rng_state(state["rng"])
        if is_main:
            print(f"resumed from {last} at step {global_step} (epoch {epoch}, step {step_in_epoch})", file=sys.stderr)

    net: nn.Module = _TrainNet(model, head, amp_dtype, proj, cfg.distill_weight)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    evaluator = _Embedder(model, cfg, device) if is_main and val_pairs is not None else None

    def save(path: Path) -> None:
        if not is_main:
            return
        _atomic_save(
            {
                "model": model.state_dict(),
                "head": head.state_dict(),
                "proj": proj.state_dict() if proj is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": global_step,
                "history": history,
                "validations": validations,
                "config": cfg.to_dict(),
            },
            path,
        )

    def _agree(stop: bool) -> bool:
        # Only rank 0 validates: every rank must learn its verdict, or the others would wait in the next
        # all-reduce while rank 0 has left the loop.
        if world == 1:
            return stop
        flag = torch.tensor([int(stop)], device=device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _agree_finite(error: NonFiniteLossError | None) -> None:
        # A rank whose loss is not finite stops; the others must stop with it, before the backward pass, or they
        # would wait in DDP's gradient all-reduce until the process group times out (30 minutes by default).
        if world > 1:
            flag = torch.tensor([int(error is not None)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and error is None:
                error = NonFiniteLossError("the loss on another rank is not finite; see that rank's log")
        if error is not None:
            raise error

    def validate() -> dict[str, Any] | None:
        if evaluator is None or val_pairs is None:
            return None
        metrics = evaluator.evaluate(val_pairs, cfg.val.flip)
        if metrics["n_failed_pairs"]:
            # Unusable validation images would make the accuracy meaningless (and early stopping silent).
            first = next(iter(metrics["failed_images"].items()))
            raise TrainingError(f"{metrics['n_failed_pairs']} validation pairs failed; first: {first}")
        keep = {
            k: metrics[k]
            for k in ("accuracy", "accuracy_std", "auc", "eer", "threshold", "tar_at_far", "threshold_target_far")
        }
        keep["step"] = global_step
        validations.append(keep)
        for cb in callbacks:
            cb.on_validation(global_step, keep)
        return keep

    bar = tqdm(
        total=stop_at,
        initial=global_step,
        desc=cfg.name,
        unit="step",
        disable=not (progress and is_main),
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 15.0,
    )
    stopped_early = False
    t_start = time.perf_counter()
    samples = 0
    model.train()
    head.train()
    try:
        while global_step < stop_at and not stopped_early:
            plan = EpochPlan.make(len(source), cfg.seed, epoch, cfg.data.flip)
            last_step = min(steps_per_epoch, step_in_epoch + (stop_at - global_step))
            loader = epoch_loader(source, plan, range(step_in_epoch, last_step), cfg, world, rank)
            it = iter(loader)
            t_log = time.perf_counter()
            seen_since_log = 0
            while step_in_epoch < last_step:
                optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for micro in range(cfg.grad_accum):
                    x_u8, labels, keys = next(it)
                    target = teacher.targets(x_u8, keys, device) if teacher is not None else None
                    x = x_u8.to(device, non_blocking=True).float().sub_(127.5).div_(127.5)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    labels = labels.to(device, non_blocking=True)
                    sync = micro == cfg.grad_accum - 1
                    no_sync = getattr(net, "no_sync", None)
                    ctx = no_sync() if (no_sync is not None and not sync) else nullcontext()
                    with ctx:
                        bad: NonFiniteLossError | None = None
                        try:
                            loss = net(x, labels, target) / cfg.grad_accum
                        except NonFiniteLossError as exc:
                            bad = exc
                        _agree_finite(bad)
                        scaler.scale(loss).backward()
                    loss_sum += float(loss.detach())
                    seen_since_log += x.shape[0] * world
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, o.clip_grad_norm or math.inf))
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step_in_epoch += 1
                global_step += 1
                samples += global_batch
                bar.update(1)
                if global_step % cfg.log_every_steps == 0 or global_step == stop_at:
                    dt = time.perf_counter() - t_log
                    rec = {
                        "step": global_step,
                        "epoch": epoch + step_in_epoch / steps_per_epoch,
                        "loss": loss_sum,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "samples_per_s": seen_since_log / dt if dt > 0 else 0.0,
                    }
                    history.append(rec)
                    bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{rec['lr']:.3g}", sps=f"{rec['samples_per_s']:.0f}")
                    for cb in callbacks:
                        cb.on_log(global_step, {k: float(v) for k, v in rec.items()})
                    t_log, seen_since_log = time.perf_counter(), 0
                v = cfg.val
                if v.every_steps and global_step % v.every_steps == 0:
                    val = validate()
                    stopped_early = _agree(bool(val and v.target_accuracy and val["accuracy"] >= v.target_accuracy))
                    if stopped_early:
                        break
                if cfg.checkpoint_every_steps and global_step % cfg.checkpoint_every_steps == 0:
                    save(last)
            if step_in_epoch >= steps_per_epoch:
                epoch, step_in_epoch = epoch + 1, 0
                if not cfg.val.every_steps and not stopped_early:
                    val = validate()
                    goal = cfg.val.target_accuracy
                    stopped_early = _agree(bool(val and goal and val["accuracy"] >= goal))
                if not cfg.checkpoint_every_steps:
                    save(last)
    except NonFiniteLossError as exc:
        raise TrainingError(f"stopped at step {global_step + 1}: {exc}") from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    save(last)
    if validations == [] or validations[-1]["step"] != global_step:
        validate()
    result = TrainResult(
        output=out,
        steps=global_step,
        epochs=epoch + step_in_epoch / steps_per_epoch,
        history=history,
        validations=validations,
        stopped_early=stopped_early,
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
    )
    if is_main:
        result.bundle = _write_bundle(out / "model", model, cfg, result)
    if world > 1:
        dist.barrier()
    return result


def _write_bundle(path: Path, model: nn.Module, cfg: TrainConfig, result: TrainResult) -> Path:
    from facegate.models.base import BUNDLE_FILE
    from facegate.utils import atomic_write_text

    path.mkdir(parents=True, exist_ok=True)
    _atomic_save(model.state_dict(), path / "model.pt")
    val = result.final_val or {}
    meta = {
        "model": cfg.model.backbone,
        "weights": "model.pt",
        "version": f"{cfg.name}-step{result.steps}",
        "model_kwargs": {"embedding_size": cfg.model.embedding_size, "width": cfg.model.width},
        "input": {"channels": "RGB", "mean": 127.5, "std": 127.5, "size": 112},
        "threshold": val.get("threshold_target_far") or val.get("threshold"),
        "validation": val,
        "train": {"steps": result.steps, "epochs": result.epochs, "config": cfg.to_dict()},
    }
    atomic_write_text(path / BUNDLE_FILE, json.dumps(meta, indent=2, default=str) + "\n")
    return path
