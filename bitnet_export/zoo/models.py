"""Small models used by the examples, the tests and the benchmarks of every backend."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from bitnet_export.layers.bitnet import BitNetLayer

__all__ = ["BitNetModel", "MixedBlock", "mlp"]


class BitNetModel(nn.Module):
    """The seed's example model: two BitNetLayers with a ReLU (``BitNetModel(784, 256, 10)``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer1 = BitNetLayer(input_dim, hidden_dim)
        self.layer2 = BitNetLayer(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` ``[batch, input_dim]``."""
        return self.layer2(torch.relu(self.layer1(x)))


class MixedBlock(nn.Module):
    """BitNetLayers mixed with LayerNorm, GELU and a residual add (a transformer-style MLP block).

    Args:
        dim: model width.
        hidden: MLP hidden width.
        classes: output classes.
        precisions: weight precisions of (``up``, ``down``, ``head``).
    """

    def __init__(
        self,
        dim: int = 32,
        hidden: int = 64,
        classes: int = 10,
        precisions: tuple[float | int, float | int, float | int] = (1.58, 1.58, 8),
    ) -> None:
        super().__init__()
        self.embed = BitNetLayer(dim, dim, precision=precisions[0])
        self.norm = nn.LayerNorm(dim)
        self.up = BitNetLayer(dim, hidden, precision=precisions[0], bias=False)
        self.down = BitNetLayer(hidden, dim, precision=precisions[1], bias=False)
        self.head = BitNetLayer(dim, classes, precision=precisions[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` ``[batch, dim]``."""
        h = self.embed(x)
        h = h + self.down(F.gelu(self.up(self.norm(h))))
        return self.head(h)


def mlp(widths: list[int], precision: float | int = 1.58, bias: bool = False) -> nn.Sequential:
    """A BitNet MLP: BitNetLayers between ``widths`` with ReLU in between."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(BitNetLayer(a, b, precision=precision, bias=bias))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
