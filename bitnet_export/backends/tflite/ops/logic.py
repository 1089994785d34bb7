"""Comparisons and boolean logic -> TFLite builtins (bool outputs, numpy broadcasting).

LiteRT 2.3's comparison and logical kernels broadcast up to 8 dims (measured: a 9-D broadcast
aborts the process), so the checks refuse anything above :data:`MAX_RANK` up front.
Comparisons of float32, int16/32/64 and bool (Equal only) run as they are (no int64 cast is
needed); int8/uint8 operands are widened to int32 first (see ``_WIDEN``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.flatbuffer import TENSOR_TYPES
from bitnet_export.backends.tflite.ops._util import (
    MAX_RANK,
    all_checks,
    attr_int,
    rank,
    shapes_known,
    temp,
)
from bitnet_export.backends.tflite.registry import Check, lowers

__all__: list[str] = []


def _broadcast_rank(node: ir.Node) -> str | None:
    """Check: the operands' rank is within what the kernels take (:data:`MAX_RANK`)."""
    if rank(node.outputs[0]) > MAX_RANK:
        return f"rank {rank(node.outputs[0])}; TFLite comparison/logic kernels take at most {MAX_RANK} dims"
    return None


def _types(allowed: tuple[ir.DataType, ...], kernel: str) -> Check:
    def check(node: ir.Node) -> str | None:
        for v in node.inputs:
            if v is not None and v.dtype is not None and v.dtype not in allowed:
                names = ", ".join(a.name for a in allowed)
                return f"operand of type {v.dtype.name}; TFLite {kernel} takes {names}"
        return None

    return check


_NUMBERS = (
    ir.DataType.FLOAT,
    ir.DataType.DOUBLE,  # narrowed to float32 at export
    ir.DataType.INT8,
    ir.DataType.INT16,
    ir.DataType.INT32,
    ir.DataType.INT64,
    ir.DataType.UINT8,
)
_BOOL = (ir.DataType.BOOL,)
_COMMON = (shapes_known, _broadcast_rank)


#: 8-bit integers are compared as int32: TFLite's comparison kernels read int8/uint8 tensors as
#: quantized values and abort without quantization parameters; widening is exact.
_WIDEN = {ir.DataType.INT8: "int8", ir.DataType.UINT8: "uint8"}


def _operand(ctx: LoweringContext, node: ir.Node, i: int) -> int:
    v = node_input(node, i)
    t = ctx.tensor(v, node)
    if v.dtype not in _WIDEN:
        return t
    dims, sig = ctx.shape(v)
    wide = temp(ctx, node, f"input_{i}_int32", dims, "int32", sig)
    src = TENSOR_TYPES[_WIDEN[v.dtype]]
    ctx.builder.add_op("CAST", [t], [wide], inDataType=src, outDataType=TENSOR_TYPES["int32"])
    return wide


def _binary(kind: str, ctx: LoweringContext, node: ir.Node) -> None:
    a, b = _operand(ctx, node, 0), _operand(ctx, node, 1)
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op(kind, [a, b], [out], name=node.name)


@lowers("Equal", check=all_checks(*_COMMON, _types(_NUMBERS + _BOOL, "EQUAL")))
def lower_equal(ctx: LoweringContext, node: ir.Node) -> None:
    """``Equal(A, B)`` -> EQUAL."""
    _binary("EQUAL", ctx, node)


@lowers("Less", check=all_checks(*_COMMON, _types(_NUMBERS, "LESS")))
def lower_less(ctx: LoweringContext, node: ir.Node) -> None:
    """``Less(A, B)`` -> LESS."""
    _binary("LESS", ctx, node)


@lowers("LessOrEqual", check=all_checks(*_COMMON, _types(_NUMBERS, "LESS_EQUAL")))
def lower_less_or_equal(ctx: LoweringContext, node: ir.Node) -> None:
    """``LessOrEqual(A, B)`` -> LESS_EQUAL."""
    _binary("LESS_EQUAL", ctx, node)


@lowers("Greater", check=all_checks(*_COMMON, _types(_NUMBERS, "GREATER")))
def lower_greater(ctx: LoweringContext, node: ir.Node) -> None:
    """``Greater(A, B)`` -> GREATER."""
    _binary("GREATER", ctx, node)


@lowers("GreaterOrEqual", check=all_checks(*_COMMON, _types(_NUMBERS, "GREATER_EQUAL")))
def lower_greater_or_equal(ctx: LoweringContext, node: ir.Node) -> None:
    """``GreaterOrEqual(A, B)`` -> GREATER_EQUAL."""
    _binary("GREATER_EQUAL", ctx, node)


@lowers("And", check=all_checks(*_COMMON, _types(_BOOL, "LOGICAL_AND")))
def lower_and(ctx: LoweringContext, node: ir.Node) -> None:
    """``And(A, B)`` -> LOGICAL_AND."""
    _binary("LOGICAL_AND", ctx, node)


@lowers("Or", check=all_checks(*_COMMON, _types(_BOOL, "LOGICAL_OR")))
def lower_or(ctx: LoweringContext, node: ir.Node) -> None:
    """``Or(A, B)`` -> LOGICAL_OR."""
    _binary("LOGICAL_OR", ctx, node)


@lowers("Xor", check=all_checks(*_COMMON, _types(_BOOL, "NOT_EQUAL")))
def lower_xor(ctx: LoweringContext, node: ir.Node) -> None:
    """``Xor(A, B)`` -> NOT_EQUAL on bools (TFLite has no LOGICAL_XOR; a != b is xor)."""
    _binary("NOT_EQUAL", ctx, node)


@lowers("Not", check=all_checks(shapes_known, _types(_BOOL, "LOGICAL_NOT")))
def lower_not(ctx: LoweringContext, node: ir.Node) -> None:
    """``Not(X)`` -> LOGICAL_NOT."""
    x = ctx.tensor(node_input(node, 0), node)
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op("LOGICAL_NOT", [x], [out], name=node.name)


_FLOATS = (ir.DataType.FLOAT, ir.DataType.DOUBLE)


@lowers("IsNaN", check=all_checks(shapes_known, _types(_FLOATS, "NOT_EQUAL")))
def lower_isnan(ctx: LoweringContext, node: ir.Node) -> None:
    """``IsNaN(X)`` -> NOT_EQUAL(x, x): IEEE NaN is the only value unequal to itself."""
    x = ctx.tensor(node_input(node, 0), node)
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op("NOT_EQUAL", [x, x], [out], name=node.name)


@lowers("IsInf", check=all_checks(shapes_known, _types(_FLOATS, "EQUAL")))
def lower_isinf(ctx: LoweringContext, node: ir.Node) -> None:
    """``IsInf(X, detect_negative=1, detect_positive=1)`` -> EQUAL with +-inf constants.

    Both signs: EQUAL(ABS(x), +inf); one sign: EQUAL(x, +-inf); neither: a constant false.
    NaN compares unequal to everything, so it is never reported as infinite.
    """
    neg, pos = attr_int(node, "detect_negative", 1), attr_int(node, "detect_positive", 1)
    x_val = node_input(node, 0)
    b = ctx.builder
    if not neg and not pos:
        dims, _ = ctx.shape(node.outputs[0])
        ctx.bind(node.outputs[0], b.add_constant(f"{node.name}/false", np.zeros(dims, dtype=bool)))
        return
    x = ctx.tensor(x_val, node)
    if neg and pos:
        dims, sig = ctx.shape(x_val)
        mag = temp(ctx, node, "abs", dims, "float32", sig)
        b.add_op("ABS", [x], [mag])
        x = mag
    inf = b.add_constant(
        f"{node.name or 'IsInf'}/inf", np.array(np.inf if pos else -np.inf, dtype=np.float32)
    )
    out = ctx.new_tensor(node.outputs[0])
    b.add_op("EQUAL", [x, inf], [out], name=node.name)
