"""Training-side layers."""

from bitnet_export.layers.bitnet import QUANT_OPTIONS, BitNetLayer

__all__ = ["QUANT_OPTIONS", "BitNetLayer"]
