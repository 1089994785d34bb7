"""ONNX backend: lower BitLinear hub nodes to QDQ / integer ONNX and write the file."""

from bitnet_export.backends.onnx.lower_bitlinear import WEIGHT_MODES, lower_bitlinear_nodes
from bitnet_export.backends.onnx.writer import save_onnx

__all__ = ["WEIGHT_MODES", "lower_bitlinear_nodes", "save_onnx"]
