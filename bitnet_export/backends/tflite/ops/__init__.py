"""TFLite lowerings, one module per ONNX op family; importing this package registers them all."""

from bitnet_export.backends.tflite.ops import elementwise, matmul, norm, shape

__all__ = ["elementwise", "matmul", "norm", "shape"]
