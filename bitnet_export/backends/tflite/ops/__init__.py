"""TFLite lowerings, one module per ONNX op family; importing this package registers them all."""

from bitnet_export.backends.tflite.ops import (
    cache,
    conv,
    elementwise,
    image,
    logic,
    matmul,
    norm,
    pool,
    reduce,
    resize,
    shape,
)

__all__ = [
    "cache",
    "conv",
    "elementwise",
    "image",
    "logic",
    "matmul",
    "norm",
    "pool",
    "reduce",
    "resize",
    "shape",
]
