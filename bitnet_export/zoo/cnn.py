"""A small MobileNet-style CNN with a BitNet head, built from torch.nn and BitNetLayer.

Stem conv (stride 2) + BatchNorm + HardSwish, then inverted-residual blocks (1x1 expand ->
depthwise 3x3 -> 1x1 project, BatchNorm after each, HardSwish / ReLU6, a residual add where
the shapes allow), global average pooling and a BitNetLayer classifier. Images are NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

from bitnet_export.layers.bitnet import BitNetLayer

__all__ = ["InvertedResidual", "MobileCNN", "factory"]


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: expand (1x1), depthwise (3x3), project (1x1), residual if shapes match."""

    def __init__(self, c_in: int, c_out: int, expand: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        mid = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            *_conv_bn(c_in, mid, 1),
            act(),
            *_conv_bn(mid, mid, 3, stride=stride, groups=mid),
            act(),
            *_conv_bn(mid, c_out, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (``x + block(x)`` where shapes match)."""
        y = self.block(x)
        return x + y if self.residual else y


class MobileCNN(nn.Module):
    """The small mobile CNN (see the module docstring).

    Args:
        classes: output classes.
        width: channels after the stem.
        precision: the BitNet classifier's weight precision.
    """

    def __init__(self, classes: int = 10, width: int = 8, precision: float | int | str = 1.58) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, width, 3, stride=2), nn.Hardswish())
        self.blocks = nn.Sequential(
            InvertedResidual(width, width, 2, 1, nn.ReLU6),
            InvertedResidual(width, 2 * width, 2, 2, nn.Hardswish),
            InvertedResidual(2 * width, 2 * width, 2, 1, nn.Hardswish),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = BitNetLayer(2 * width, classes, precision=precision)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, classes]`` of images ``[B, 3, H, W]``."""
        x = self.blocks(self.stem(images))
        return self.head(torch.flatten(self.pool(x), 1))


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine terms (a fresh BN is the identity)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def factory() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``(MobileCNN(), (images [2, 3, 32, 32],))`` with seeded weights and BN statistics."""
    torch.manual_seed(0)
    model = MobileCNN()
    _randomize_bn(model, torch.Generator().manual_seed(2))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model.eval(), (images,)
