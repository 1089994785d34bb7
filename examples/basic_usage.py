"""Seed example 1: one BitNetLayer with 8-bit weights on a single input."""

import torch

from bitnet_export.layers.bitnet import BitNetLayer

# Create a BitNet layer
layer = BitNetLayer(input_dim=512, output_dim=256, precision=8)

# Forward pass
x = torch.randn(1, 512)
output = layer.forward(x)
print(output.shape)  # torch.Size([1, 256])
