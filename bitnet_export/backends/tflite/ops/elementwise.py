"""Elementwise ops -> TFLite builtins: activations and broadcasting arithmetic.

Numerics: IEEE float32 in both runtimes.
"""

from __future__ import annotations

import onnx_ir as ir

from bitnet_export.backends.tflite.context import Int8Alias, LoweringContext, node_input
from bitnet_export.backends.tflite.flatbuffer import Quant
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []


def _unary(kind: str, ctx: LoweringContext, node: ir.Node, **options: object) -> None:
    x = ctx.float_tensor(node_input(node, 0), node)
    out = ctx.new_float(node.outputs[0])
    ctx.builder.add_op(kind, [x], [out], name=node.name, **options)


@lowers("Relu")
def lower_relu(ctx: LoweringContext, node: ir.Node) -> None:
    """``Relu(x)`` -> RELU; stays int8 on an int8 chain (same scale and zero point in and out)."""
    if id(node) in ctx.fused:  # already the fused activation of the FC before it
        return
    x = node_input(node, 0)
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


def _binary(kind: str, ctx: LoweringContext, node: ir.Node) -> None:
    a = ctx.float_tensor(node_input(node, 0), node)
    b = ctx.float_tensor(node_input(node, 1), node)
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
