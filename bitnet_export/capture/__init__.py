"""Capture: PyTorch model -> ONNX IR hub with one BitLinear node per BitNetLayer."""

from bitnet_export.capture.bitlinear_op import DOMAIN, OP_TYPE, is_bitlinear, read_bitlinear
from bitnet_export.capture.capture import CapturedModel, capture

__all__ = ["DOMAIN", "OP_TYPE", "CapturedModel", "capture", "is_bitlinear", "read_bitlinear"]
