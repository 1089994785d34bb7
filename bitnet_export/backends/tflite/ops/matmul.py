"""Matrix products -> TFLite builtins: constant weights become FULLY_CONNECTED."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.registry import lowers
from bitnet_export.errors import ExportError

__all__: list[str] = []


def _fc_float(ctx: LoweringContext, node: ir.Node, x: ir.Value, w: np.ndarray, b: np.ndarray | None) -> None:
    xi = ctx.float_tensor(x, node)
    wi = ctx.builder.add_constant(ctx.name(node, "weight"), w.astype(np.float32))
    bi = -1 if b is None else ctx.builder.add_constant(ctx.name(node, "bias"), b.astype(np.float32))
    out = ctx.new_float(node.outputs[0])
    dims, _ = ctx.shape(node.outputs[0])
    ctx.builder.add_op("FULLY_CONNECTED", [xi, wi, bi], [out], name=node.name, keepNumDims=len(dims) > 2)


@lowers("Gemm")
def lower_gemm(ctx: LoweringContext, node: ir.Node) -> None:
    """``Gemm(A, B, C)`` with constant B, C, alpha = beta = 1, transA = 0 -> float FULLY_CONNECTED."""
    attrs = {k: v.value for k, v in node.attributes.items()}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise ExportError(f"tflite backend: Gemm {node.name!r} with transA/alpha/beta is not supported")
    b_val = node_input(node, 1)
    if b_val.const_value is None:
        raise ExportError(f"tflite backend: Gemm {node.name!r} needs a constant weight")
    w = b_val.const_value.numpy()
    w = w if attrs.get("transB", 0) else w.T  # FC weights are [N, K]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    bias = None if c is None or c.const_value is None else c.const_value.numpy()
    _fc_float(ctx, node, node_input(node, 0), w, bias)


@lowers("MatMul")
def lower_matmul(ctx: LoweringContext, node: ir.Node) -> None:
    """``MatMul(x, W)`` with a constant 2-D W -> float FULLY_CONNECTED."""
    w_val = node_input(node, 1)
    if w_val.const_value is None or len(w_val.const_value.shape) != 2:
        raise ExportError(f"tflite backend: MatMul {node.name!r} needs a constant 2-D weight")
    _fc_float(ctx, node, node_input(node, 0), w_val.const_value.numpy().T, None)
