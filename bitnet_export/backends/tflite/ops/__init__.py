"""TFLite lowerings, one module per ONNX op family; importing this package registers them all."""

from bitnet_export.backends.tflite.ops import elementwise, logic, matmul, norm, reduce, shape

__all__ = ["elementwise", "logic", "matmul", "norm", "reduce", "shape"]
