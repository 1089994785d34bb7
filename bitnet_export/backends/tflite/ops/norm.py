"""Normalizations and softmax -> TFLite builtins (LayerNorm decomposed: no TFLite builtin).

Numerics: LayerNormalization becomes MEAN / SUB / MUL / MEAN / ADD / RSQRT / MUL, which rounds
differently from ONNX Runtime's fused kernel by a few ulps.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.registry import lowers
from bitnet_export.errors import ExportError

__all__: list[str] = []


@lowers("Softmax")
def lower_softmax(ctx: LoweringContext, node: ir.Node) -> None:
    """``Softmax(x, axis=-1)`` -> SOFTMAX(beta=1) (TFLite normalizes the last axis only)."""
    attr = node.attributes.get("axis")
    axis = attr.as_int() if attr is not None else -1
    dims, _ = ctx.shape(node_input(node, 0))
    if axis not in (-1, len(dims) - 1):
        raise ExportError(f"tflite backend: Softmax {node.name!r} over axis {axis}; only the last axis")
    x = ctx.float_tensor(node_input(node, 0), node)
    out = ctx.new_float(node.outputs[0])
    ctx.builder.add_op("SOFTMAX", [x], [out], name=node.name, beta=1.0)


@lowers("LayerNormalization")
def lower_layer_norm(ctx: LoweringContext, node: ir.Node) -> None:
    """``LayerNormalization(x, scale, bias, axis=-1, epsilon)``, decomposed (no TFLite builtin).

    ``mean = MEAN(x)``, ``var = MEAN(SQUARED_DIFFERENCE(x, mean))``,
    ``y = (x - mean) * RSQRT(var + eps) * scale + bias``, all over the last axis.
    """
    x_val = node_input(node, 0)
    dims, sig = ctx.shape(x_val)
    axis_attr = node.attributes.get("axis")
    axis = axis_attr.as_int() if axis_attr is not None else -1
    if axis not in (-1, len(dims) - 1):
        raise ExportError(
            f"tflite backend: LayerNormalization {node.name!r} over axis {axis}; only the last axis"
        )
    eps_attr = node.attributes.get("epsilon")
    eps = eps_attr.as_float() if eps_attr is not None else 1e-5
    b = ctx.builder
    x = ctx.float_tensor(x_val, node)
    red_dims, red_sig = [*dims[:-1], 1], [*sig[:-1], 1]

    def tmp(role: str, full: bool = True) -> int:
        return b.add_tensor(
            ctx.name(node, role),
            dims if full else red_dims,
            "float32",
            shape_signature=sig if full else red_sig,
        )

    axes = b.add_constant(ctx.name(node, "axes"), np.array([len(dims) - 1], dtype=np.int32))
    mean, centered, sq, var = tmp("mean", False), tmp("centered"), tmp("squared"), tmp("var", False)
    b.add_op("MEAN", [x, axes], [mean], keepDims=True)
    b.add_op("SUB", [x, mean], [centered], fusedActivationFunction=0)
    b.add_op("MUL", [centered, centered], [sq], fusedActivationFunction=0)
    b.add_op("MEAN", [sq, axes], [var], keepDims=True)
    eps_t = b.add_constant(ctx.name(node, "epsilon"), np.array([eps], dtype=np.float32))
    var_eps, inv = tmp("var_eps", False), tmp("inv_std", False)
    b.add_op("ADD", [var, eps_t], [var_eps], fusedActivationFunction=0)
    b.add_op("RSQRT", [var_eps], [inv])
    normed = tmp("normalized")
    b.add_op("MUL", [centered, inv], [normed], fusedActivationFunction=0)
    cur = normed
    scale_v = node.inputs[1] if len(node.inputs) > 1 else None
    bias_v = node.inputs[2] if len(node.inputs) > 2 else None
    if scale_v is not None:
        scaled = tmp("scaled") if bias_v is not None else ctx.new_float(node.outputs[0])
        b.add_op("MUL", [cur, ctx.float_tensor(scale_v, node)], [scaled], fusedActivationFunction=0)
        cur = scaled
    if bias_v is not None:
        out = ctx.new_float(node.outputs[0])
        b.add_op("ADD", [cur, ctx.float_tensor(bias_v, node)], [out], fusedActivationFunction=0)
    elif scale_v is None:
        ctx.floats[id(node.outputs[0])] = cur
