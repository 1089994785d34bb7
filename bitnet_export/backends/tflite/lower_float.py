"""Float ONNX ops -> TFLite builtins (one function per op; LayerNorm decomposed).

Numerics: elementwise ops are IEEE float32 in both runtimes; LayerNormalization has no TFLite
builtin and becomes MEAN / SQUARED_DIFFERENCE / ADD / RSQRT / MUL, which rounds differently
from ONNX Runtime's fused kernel by a few ulps.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import Int8Alias, LoweringContext
from bitnet_export.backends.tflite.flatbuffer import Quant
from bitnet_export.backends.tflite.registry import lowers
from bitnet_export.errors import ExportError

__all__: list[str] = []


def _in(node: ir.Node, i: int) -> ir.Value:
    v = node.inputs[i]
    if v is None:
        raise ExportError(f"tflite backend: {node.op_type} node {node.name!r} lacks input {i}")
    return v


def _unary(kind: str, ctx: LoweringContext, node: ir.Node, **options: object) -> None:
    x = ctx.float_tensor(_in(node, 0), node)
    out = ctx.new_float(node.outputs[0])
    ctx.builder.add_op(kind, [x], [out], name=node.name, **options)


@lowers("Relu")
def lower_relu(ctx: LoweringContext, node: ir.Node) -> None:
    """``Relu(x)`` -> RELU; stays int8 on an int8 chain (same scale and zero point in and out)."""
    if id(node) in ctx.fused:  # already the fused activation of the FC before it
        return
    x = _in(node, 0)
    alias = ctx.int8.get(id(x))
    if alias is not None:
        dims, sig = ctx.shape(node.outputs[0])
        out = ctx.builder.add_tensor(
            ctx.name(node, "relu_int8"), dims, "int8", Quant([alias.scale], [alias.zero_point]), sig
        )
        ctx.builder.add_op("RELU", [alias.index], [out], _version=2)
        ctx.int8[id(node.outputs[0])] = Int8Alias(out, alias.scale, alias.zero_point)
        return
    _unary("RELU", ctx, node)


@lowers("Gelu")
def lower_gelu(ctx: LoweringContext, node: ir.Node) -> None:
    """``Gelu(x, approximate)`` -> GELU (erf form, or tanh form for approximate='tanh')."""
    attr = node.attributes.get("approximate")
    approximate = attr is not None and attr.as_string() == "tanh"
    _unary("GELU", ctx, node, approximate=approximate)


@lowers("Tanh")
def lower_tanh(ctx: LoweringContext, node: ir.Node) -> None:
    """``Tanh(x)`` -> TANH."""
    _unary("TANH", ctx, node)


@lowers("Sigmoid")
def lower_sigmoid(ctx: LoweringContext, node: ir.Node) -> None:
    """``Sigmoid(x)`` -> LOGISTIC."""
    _unary("LOGISTIC", ctx, node)


@lowers("Softmax")
def lower_softmax(ctx: LoweringContext, node: ir.Node) -> None:
    """``Softmax(x, axis=-1)`` -> SOFTMAX(beta=1) (TFLite normalizes the last axis only)."""
    attr = node.attributes.get("axis")
    axis = attr.as_int() if attr is not None else -1
    dims, _ = ctx.shape(_in(node, 0))
    if axis not in (-1, len(dims) - 1):
        raise ExportError(f"tflite backend: Softmax {node.name!r} over axis {axis}; only the last axis")
    _unary("SOFTMAX", ctx, node, beta=1.0)


def _binary(kind: str, ctx: LoweringContext, node: ir.Node) -> None:
    a = ctx.float_tensor(_in(node, 0), node)
    b = ctx.float_tensor(_in(node, 1), node)
    out = ctx.new_float(node.outputs[0])
    ctx.builder.add_op(kind, [a, b], [out], name=node.name, fusedActivationFunction=0)


@lowers("Add")
def lower_add(ctx: LoweringContext, node: ir.Node) -> None:
    """``Add(a, b)`` -> ADD (broadcasting)."""
    _binary("ADD", ctx, node)


@lowers("Sub")
def lower_sub(ctx: LoweringContext, node: ir.Node) -> None:
    """``Sub(a, b)`` -> SUB (broadcasting)."""
    _binary("SUB", ctx, node)


@lowers("Mul")
def lower_mul(ctx: LoweringContext, node: ir.Node) -> None:
    """``Mul(a, b)`` -> MUL (broadcasting)."""
    _binary("MUL", ctx, node)


@lowers("Div")
def lower_div(ctx: LoweringContext, node: ir.Node) -> None:
    """``Div(a, b)`` -> DIV (broadcasting)."""
    _binary("DIV", ctx, node)


@lowers("Identity")
def lower_identity(ctx: LoweringContext, node: ir.Node) -> None:
    """``Identity(x)``: no op, the output is the input's tensor."""
    x = _in(node, 0)
    key = id(node.outputs[0])
    if id(x) in ctx.int8:
        ctx.int8[key] = ctx.int8[id(x)]
    else:
        ctx.floats[key] = ctx.float_tensor(x, node)


@lowers("Reshape")
def lower_reshape(ctx: LoweringContext, node: ir.Node) -> None:
    """``Reshape(x, constant shape)`` -> RESHAPE with the output's static shape (-1 kept for batch)."""
    x = ctx.float_tensor(_in(node, 0), node)
    dims, sig = ctx.shape(node.outputs[0])
    shape = ctx.builder.add_constant(ctx.name(node, "shape"), np.array(sig, dtype=np.int32))
    out = ctx.new_float(node.outputs[0])
    ctx.builder.add_op("RESHAPE", [x, shape], [out], name=node.name, newShape=list(sig))
    del dims


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
    b_val = _in(node, 1)
    if b_val.const_value is None:
        raise ExportError(f"tflite backend: Gemm {node.name!r} needs a constant weight")
    w = b_val.const_value.numpy()
    w = w if attrs.get("transB", 0) else w.T  # FC weights are [N, K]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    bias = None if c is None or c.const_value is None else c.const_value.numpy()
    _fc_float(ctx, node, _in(node, 0), w, bias)


@lowers("MatMul")
def lower_matmul(ctx: LoweringContext, node: ir.Node) -> None:
    """``MatMul(x, W)`` with a constant 2-D W -> float FULLY_CONNECTED."""
    w_val = _in(node, 1)
    if w_val.const_value is None or len(w_val.const_value.shape) != 2:
        raise ExportError(f"tflite backend: MatMul {node.name!r} needs a constant 2-D weight")
    _fc_float(ctx, node, _in(node, 0), w_val.const_value.numpy().T, None)


@lowers("LayerNormalization")
def lower_layer_norm(ctx: LoweringContext, node: ir.Node) -> None:
    """``LayerNormalization(x, scale, bias, axis=-1, epsilon)``, decomposed (no TFLite builtin).

    ``mean = MEAN(x)``, ``var = MEAN(SQUARED_DIFFERENCE(x, mean))``,
    ``y = (x - mean) * RSQRT(var + eps) * scale + bias``, all over the last axis.
    """
    x_val = _in(node, 0)
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
