"""Training throughput of iResNet-50 + ArcFace: facegate's trainer step vs insightface arcface_torch's, same machine.

Both sides run forward, margin softmax, backward and an SGD step on the same synthetic batch, alternating rounds so
drift hits both alike. insightface's code is *not* part of facegate: point ``--insightface`` at the
``recognition/arcface_torch`` folder of a checkout of deepinsight/insightface to include it; without it only
facegate's figures are printed. Prints one JSON object.

Usage: ``python bench/train_bench.py [--device cpu|cuda] [--batch N] [--amp none|bf16|fp16] [--insightface DIR]``.
On a GPU the reference setting is ``--device cuda --batch 256 --amp bf16`` (arcface_torch runs its fp16 recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from _common import machine

from facegate.models.backbones import create_model
from facegate.models.heads import CombinedMarginLoss, PartialFC

Step = Callable[[], None]


def facegate_step(device: torch.device, batch: int, classes: int, amp: str, compile_: bool) -> Step:
    model = create_model("iresnet50").to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fwd = torch.compile(model) if compile_ else model
    head = PartialFC(512, classes, CombinedMarginLoss(64.0, 1.0, 0.5, 0.0)).to(device)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    x = torch.randn(batch, 3, 112, 112, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            emb = fwd(x)
        loss = head(emb, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def insightface_step(root: Path, device: torch.device, batch: int, classes: int, amp: str) -> Step:
    sys.path.insert(0, str(root))
    from backbones import get_model  # type: ignore[import-not-found]
    from losses import CombinedMarginLoss as TheirMargin  # type: ignore[import-not-found]

    fp16 = amp != "none" and device.type == "cuda"  # their backbone autocasts to fp16 itself (cuda only)
    model = get_model("r50", fp16=fp16, num_features=512).to(device)
    margin = TheirMargin(64, 1.0, 0.5, 0.0)
    # PartialFC_V2 at world size 1 and sample rate 1 (it insists on torch.distributed, so its math is inlined).
    weight = torch.nn.Parameter(torch.normal(0, 0.01, (classes, 512), device=device))
    opt = torch.optim.SGD([*model.parameters(), weight], lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    x = torch.randn(batch, 3, 112, 112, device=device)
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        emb = model(x)
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            logits = F.linear(F.normalize(emb), F.normalize(weight))
        logits = margin(logits.float().clamp(-1, 1), y.view(-1, 1).clone())
        loss = F.cross_entropy(logits, y)
        scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        scaler.step(opt)
        scaler.update()

    return step


def timed(step: Step, n: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="default 256 on cuda, 8 on cpu")
    ap.add_argument("--amp", default=None, choices=["none", "bf16", "fp16"], help="default bf16 on cuda, none on cpu")
    ap.add_argument("--classes", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default 20 cuda, 3 cpu)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile facegate's backbone")
    ap.add_argument("--insightface", type=Path, default=None, help="path to insightface recognition/arcface_torch")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (256 if cuda else 8)
    amp = args.amp or ("bf16" if cuda else "none")
    steps = args.steps or (20 if cuda else 3)
    torch.manual_seed(0)
    sides: dict[str, Step] = {"facegate": facegate_step(device, batch, args.classes, amp, args.compile)}
    if args.insightface is not None:
        sides["insightface_arcface_torch"] = insightface_step(args.insightface, device, batch, args.classes, amp)
    for step in sides.values():  # warm-up: allocator, cudnn autotune, compile
        timed(step, 2, device)
    totals = dict.fromkeys(sides, 0.0)
    for _ in range(args.rounds):
        for name, step in sides.items():
            totals[name] += timed(step, steps, device)
    n = batch * steps * args.rounds
    sps = {name: round(n / t, 2) for name, t in totals.items()}
    out: dict[str, object] = {
        "benchmark": "iresnet50 + ArcFace train step (fwd, margin softmax, bwd, SGD), synthetic batch",
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "batch": batch,
        "amp": amp,
        "classes": args.classes,
        "samples_per_s": sps,
        "machine": machine(),
        "torch": torch.__version__,
    }
    if len(sps) == 2:
        out["speedup_vs_arcface_torch"] = round(sps["facegate"] / sps["insightface_arcface_torch"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
