"""Shape and data-movement ops -> TFLite builtins (static shapes, resolved at export)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []


@lowers("Identity")
def lower_identity(ctx: LoweringContext, node: ir.Node) -> None:
    """``Identity(x)``: no op, the output is the input's tensor."""
    x = node_input(node, 0)
    key = id(node.outputs[0])
    if id(x) in ctx.int8:
        ctx.int8[key] = ctx.int8[id(x)]
    else:
        ctx.floats[key] = ctx.float_tensor(x, node)


@lowers("Reshape")
def lower_reshape(ctx: LoweringContext, node: ir.Node) -> None:
    """``Reshape(x, constant shape)`` -> RESHAPE with the output's static shape (-1 kept for batch)."""
    x = ctx.float_tensor(node_input(node, 0), node)
    dims, sig = ctx.shape(node.outputs[0])
    shape = ctx.builder.add_constant(ctx.name(node, "shape"), np.array(sig, dtype=np.int32))
    out = ctx.new_float(node.outputs[0])
    ctx.builder.add_op("RESHAPE", [x, shape], [out], name=node.name, newShape=list(sig))
    del dims
