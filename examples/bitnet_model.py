"""Seed example 2: a two-layer BitNet model on a batch of 32 flattened 28x28 images."""

import torch
from torch import nn

from bitnet_export.layers.bitnet import BitNetLayer


class BitNetModel(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer1 = BitNetLayer(input_dim, hidden_dim)
        self.layer2 = BitNetLayer(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.layer1(x))
        return self.layer2(x)


model = BitNetModel(784, 256, 10)
x = torch.randn(32, 784)
output = model(x)
print(output.shape)  # torch.Size([32, 10])
