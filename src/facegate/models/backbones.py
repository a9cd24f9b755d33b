"""Torch backbones and their registry: ``create_model("iresnet50", embedding_size=512)``, timm-style.

The iResNet family follows "ArcFace" (Deng et al.) and insightface's ``arcface_torch`` exactly, down to parameter
names and shapes, so an insightface ``backbone.pth`` loads with ``load_state_dict(strict=True)`` unchanged:

- stem: conv3x3(3, 64) - BN - PReLU, stride 1 at 112x112;
- four stages (64, 128, 256, 512 channels), each starting with a stride-2 ``IBasicBlock``
  (BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus a conv1x1-BN shortcut where the shape changes);
- head: BN - flatten - dropout - FC(512*7*7 -> D) - BN1d (its scale frozen at 1).

``width`` scales every channel count (0.125 gives an 8-16-32-64 network for CPU tests); the parameter names stay
the same, only shapes shrink.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["IBasicBlock", "IResNet", "create_model", "list_backbones", "register_backbone"]

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a backbone factory under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BACKBONES and _BACKBONES[name] is not fn:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_BACKBONES)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: Backbone name (see :func:`list_backbones`).
        **kwargs: ``embedding_size``, ``width``, ``dropout``, ... passed to the factory.

    Raises:
        KeyError: For an unknown name, listing the known ones.
    """
    try:
        factory = _BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}") from None
    return factory(**kwargs)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Improved residual block: BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN (+ shortcut)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + identity


class IResNet(nn.Module):
    """iResNet for 112x112 faces.

    Args:
        layers: Blocks per stage, e.g. ``(3, 4, 14, 3)`` for iResNet-50.
        embedding_size: Output dimension.
        width: Channel multiplier (1.0 = the published network).
        dropout: Dropout before the FC layer (insightface uses 0 for MS1M, 0.4 for small sets).
    """

    fc_scale = 7 * 7

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        embedding_size: int = 512,
        width: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError("width must be > 0")
        chans = [max(4, round(c * width)) for c in (64, 128, 256, 512)]
        self.embedding_size = embedding_size
        self.inplanes = chans[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(chans[0], layers[0])
        self.layer2 = self._make_layer(chans[1], layers[1])
        self.layer3 = self._make_layer(chans[2], layers[2])
        self.layer4 = self._make_layer(chans[3], layers[3])
        self.bn2 = nn.BatchNorm2d(chans[3], eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(chans[3] * self.fc_scale, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as in arcface_torch: the embedding BN only shifts
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-05),
        )
        layers: list[nn.Module] = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` normalised RGB in, ``(N, D)`` unnormalised embeddings out."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        x = self.fc(self.dropout(x))
        # The FC runs in autocast's dtype; the final BN in float32 keeps the embedding's scale exact.
        return self.features(x.float())


_DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def _factory(layers: tuple[int, int, int, int]) -> Callable[..., nn.Module]:
    def build(embedding_size: int = 512, width: float = 1.0, dropout: float = 0.0) -> nn.Module:
        return IResNet(layers, embedding_size=embedding_size, width=width, dropout=dropout)

    return build


for _name, _layers in _DEPTHS.items():
    register_backbone(_name)(_factory(_layers))
