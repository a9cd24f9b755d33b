"""MiniFASNet (V2 and V1SE), the passive anti-spoofing networks of minivision-ai/Silent-Face-Anti-Spoofing.

Only for converting the published weights (Apache-2.0) to ONNX/OpenVINO: serving never imports torch. The network
is built from the shapes in the state dict, so one definition covers both published variants (V2: plain residual
stages; V1SE: a squeeze-and-excitation unit in the last block of each residual stage), and the parameter names
match the published files (``conv1.conv.weight``, ``conv_3.model.0.conv_dw.bn.running_mean``, ...).

Input convention of the published weights: BGR, ``(N, 3, 80, 80)`` float32 with pixel values 0..255 (not scaled),
a crop of the face box scaled by 2.7 (V2) or 4.0 (V1SE) about its centre. Output: 3 logits; class 1 is a real face.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["MiniFASNet", "strip_parallel_prefix"]

#: The residual stages, each after a stride-2 block of the same name prefix (``conv_23`` before ``conv_3``, ...).
_STAGES = (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5"))


class _ConvBN(nn.Sequential):
    """Convolution without bias, batch norm, and a PReLU unless ``act`` is false (a linear projection)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict({
            "conv": nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if kernel == 3 else 0, groups=groups,
                              bias=False),
            "bn": nn.BatchNorm2d(cout),
        })  # fmt: skip
        if act:
            layers["prelu"] = nn.PReLU(cout)
        super().__init__(layers)


class _SqueezeExcite(nn.Module):
    """Channel attention: pooled features through a bottleneck (with batch norms), a sigmoid gate per channel."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.relu(self.bn1(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(self.bn2(self.fc2(gate)))


class _Block(nn.Module):
    """Inverted bottleneck: 1x1 expand (PReLU), 3x3 depthwise (PReLU), 1x1 linear projection.

    Inside a residual stage the input is added back, after the squeeze-excitation unit (if any) on the branch.
    """

    def __init__(self, cin: int, expand: int, cout: int, stride: int, residual: bool, se_hidden: int = 0) -> None:
        super().__init__()
        self.conv = _ConvBN(cin, expand, 1)
        self.conv_dw = _ConvBN(expand, expand, 3, stride=stride, groups=expand)
        self.project = _ConvBN(expand, cout, 1, act=False)
        self.residual = residual
        self.se_module = _SqueezeExcite(cout, se_hidden) if se_hidden else None

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return y
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y


class _Stage(nn.Module):
    """Residual blocks in a ``model`` sequence (the published parameter names)."""

    def __init__(self, blocks: list[_Block]) -> None:
        super().__init__()
        self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x)
        return out


def strip_parallel_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict without the ``module.`` prefix that ``nn.DataParallel`` training left on every name."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def _block_from(state: Mapping[str, Tensor], prefix: str, stride: int, residual: bool) -> _Block:
    expand, cin = state[f"{prefix}.conv.conv.weight"].shape[:2]
    cout = state[f"{prefix}.project.conv.weight"].shape[0]
    se = state.get(f"{prefix}.se_module.fc1.weight")
    return _Block(int(cin), int(expand), int(cout), stride, residual, int(se.shape[0]) if se is not None else 0)


class MiniFASNet(nn.Module):
    """MiniFASNet with the widths of a given state dict (see :meth:`from_state_dict`).

    Args:
        state: A published state dict (``module.`` prefixes already stripped); only its shapes are read here.
        input_size: Side of the square input (80 for the published weights); sets the last depthwise kernel.
    """

    def __init__(self, state: Mapping[str, Tensor], input_size: int = 80) -> None:
        super().__init__()
        stem = state["conv1.conv.weight"].shape[0]
        self.conv1 = _ConvBN(3, int(stem), 3, stride=2)
        self.conv2_dw = _ConvBN(int(stem), int(stem), 3, groups=int(stem))
        for down, stage in _STAGES:
            setattr(self, down, _block_from(state, down, stride=2, residual=False))
            n = 1 + max(int(k.split(".")[2]) for k in state if k.startswith(f"{stage}.model."))
            setattr(self, stage, _Stage([_block_from(state, f"{stage}.model.{i}", 1, True) for i in range(n)]))
        sep_out, sep_in = state["conv_6_sep.conv.weight"].shape[:2]
        self.conv_6_sep = _ConvBN(int(sep_in), int(sep_out), 1)
        # Four stride-2 steps: an 80x80 input leaves 5x5, which one depthwise kernel of that size pools.
        last = (input_size + 15) // 16
        self.conv_6_dw = _ConvBN(int(sep_out), int(sep_out), last, groups=int(sep_out), act=False)
        emb, flat = state["linear.weight"].shape
        self.linear = nn.Linear(int(flat), int(emb), bias=False)
        self.bn = nn.BatchNorm1d(int(emb))
        self.prob = nn.Linear(int(emb), int(state["prob.weight"].shape[0]), bias=False)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], input_size: int = 80) -> MiniFASNet:
        """The network for a published state dict, with its weights loaded strictly (every name must match)."""
        clean = strip_parallel_prefix(state)
        net = cls(clean, input_size)
        net.load_state_dict(clean, strict=True)
        return net.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, 3)`` of BGR crops ``(N, 3, 80, 80)`` with 0..255 pixel values; class 1 is a real face."""
        x = self.conv2_dw(self.conv1(x))
        for down, stage in _STAGES:
            x = getattr(self, stage)(getattr(self, down)(x))
        x = self.conv_6_dw(self.conv_6_sep(x)).flatten(1)
        # Dropout of the training recipe is the identity in inference, so it is not part of this network.
        logits: Tensor = self.prob(self.bn(self.linear(x)))
        return logits
