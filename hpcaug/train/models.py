"""Models: torchvision ResNets, ResNet-200, Wide-ResNet-28-10 and a tiny ResNet for CPU runs.

`build_model(name, num_classes)` is the only entry point; names are `config.MODELS`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import Bottleneck, ResNet

from hpcaug.config import MODELS

__all__ = ["build_model", "TinyResNet", "WideResNet", "MODELS"]


class _BasicBlock(nn.Module):
    """Pre-activation basic block (used by TinyResNet and WideResNet)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """Wide-ResNet-depth-k for 32x32 inputs (Zagoruyko & Komodakis 2016); WRN-28-10 by default."""

    def __init__(self, num_classes: int, depth: int = 28, widen: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 28), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                layers.append(_BasicBlock(cin, w, (1 if i == 0 else 2) if j == 0 else 1, dropout))
                cin = w
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyResNet(nn.Module):
    """A 3-stage pre-activation ResNet (one block per stage, widths 16/32/64), ~78k parameters.

    Fast enough on 32x32 images on a CPU for the tests and the demo.
    """

    def __init__(self, num_classes: int, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        # a stride-2 stem: 32x32 inputs run the first stage at 16x16 (4x cheaper, still learns
        # Fashion-MNIST well); larger inputs are pooled to 1x1 at the end all the same
        self.conv = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        self.blocks = nn.Sequential(
            _BasicBlock(widths[0], widths[0], 1),
            _BasicBlock(widths[0], widths[1], 2),
            _BasicBlock(widths[1], widths[2], 2),
        )
        self.bn = nn.BatchNorm2d(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def resnet200(num_classes: int) -> ResNet:
    """ResNet-200: torchvision Bottleneck blocks with layers [3, 24, 36, 3] (He et al. 2016b)."""
    return ResNet(Bottleneck, [3, 24, 36, 3], num_classes=num_classes, zero_init_residual=True)


def build_model(name: str, num_classes: int) -> nn.Module:
    """Build a model by its config name (`train.model`), randomly initialised.

    ImageNet ResNets zero-initialise the last BN of each residual block (Goyal et al. 2017),
    which helps the large-batch, linearly scaled learning rates used here.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if name == "tiny_resnet":
        return TinyResNet(num_classes)
    if name == "small_resnet":  # twice as wide, ~0.3M parameters: overfits 1,000 Fashion-MNIST images
        return TinyResNet(num_classes, widths=(32, 64, 128))
    if name == "resnet18":
        return resnet18(num_classes=num_classes, zero_init_residual=True)
    if name == "resnet50":
        return resnet50(num_classes=num_classes, zero_init_residual=True)
    if name == "resnet200":
        return resnet200(num_classes)
    if name == "wrn28_10":
        return WideResNet(num_classes, depth=28, widen=10)
    raise ValueError(f"unknown model {name!r}; train.model must be one of {MODELS}")
