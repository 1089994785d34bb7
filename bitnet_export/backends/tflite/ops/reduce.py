"""Reductions and arg-reductions -> TFLite builtins (MEAN, SUM, REDUCE_*, ARG_MAX/ARG_MIN).

Axes come from the ``axes`` input (ReduceSum from opset 13, the others from opset 18) or the
``axes`` attribute; they must be constants. No axes reduces everything, or nothing with
``noop_with_empty_axes=1``. A reduction over a zero-size axis has a fixed result (the
reduction's identity: 0 for sums, 1 for products, -inf/+inf for max/min, NaN for a mean,
False/True for bool any/all) and is folded to a constant: it does not depend on the data.

Numerics: float32 accumulation in input order in both runtimes' reference kernels; the
optimized MEAN/SUM kernels may sum in another order (a few ulps). Composite reductions
(ReduceL2 = SQRT(SUM(x*x)), ReduceLogSumExp = max + LOG(SUM(EXP(x - max)))) round once per op.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input, tflite_dtype
from bitnet_export.backends.tflite.flatbuffer import TENSOR_TYPES
from bitnet_export.backends.tflite.ops._util import (
    all_checks,
    attr_int,
    attr_ints,
    const_array,
    int_constant,
    normalize_axis,
    optional_input,
    rank,
    shapes_known,
    static_dims,
    temp,
)
from bitnet_export.backends.tflite.registry import Check, lowers
from bitnet_export.errors import InternalError

__all__: list[str] = []


def _axes(node: ir.Node) -> list[int] | str | None:
    """Normalized reduction axes (sorted); ``None``: no reduction (noop); a str: why not."""
    r = rank(node_input(node, 0))
    if optional_input(node, 1) is not None:
        arr = const_array(node, 1)
        if arr is None:
            return "the axes are computed at run time; fold them to constants before the backend"
        axes = [int(a) for a in arr.reshape(-1)]
    else:
        axes = attr_ints(node, "axes") or []
    if not axes:
        if attr_int(node, "noop_with_empty_axes", 0):
            return None
        axes = list(range(r))
    return sorted({normalize_axis(a, r) for a in axes})


def _check_axes(node: ir.Node) -> str | None:
    axes = _axes(node)
    if isinstance(axes, str):
        return axes
    return None


def _types(allowed: tuple[ir.DataType, ...], kernel: str) -> Check:
    def check(node: ir.Node) -> str | None:
        v = node_input(node, 0)
        if v.dtype is not None and v.dtype not in allowed:
            return f"input of type {v.dtype.name}; TFLite {kernel} takes {', '.join(a.name for a in allowed)}"
        return None

    return check


_FLOAT = (ir.DataType.FLOAT, ir.DataType.DOUBLE)
#: SUM/REDUCE_PROD: 8-bit integers are quantized types to these kernels (their wrap-around
#: sums do not come out), so only 32/64-bit integers are taken.
_NUM = (*_FLOAT, ir.DataType.INT32, ir.DataType.INT64)
_ORDERED = (*_NUM, ir.DataType.INT8, ir.DataType.UINT8)
#: ARG_MAX/ARG_MIN reject int64 inputs at prepare time (LiteRT 2.3).
_ARG = (*_FLOAT, ir.DataType.INT32, ir.DataType.INT8, ir.DataType.UINT8)


def _reduced_shape(ctx: LoweringContext, node: ir.Node, axes: list[int]) -> tuple[list[int], list[int]]:
    """Dims and signature of input 0 reduced over ``axes`` with kept (size-1) dims."""
    dims, sig = ctx.shape(node_input(node, 0))
    return [1 if i in axes else d for i, d in enumerate(dims)], [
        1 if i in axes else d for i, d in enumerate(sig)
    ]


def _reduce(
    ctx: LoweringContext,
    node: ir.Node,
    kind: str,
    x: int,
    axes: list[int],
    out: int | None,
    keep: bool,
    dtype: str,
) -> int:
    """``kind`` over ``axes`` of tensor ``x`` into ``out`` (a new kept-dims temporary if None)."""
    if out is None:
        dims, sig = _reduced_shape(ctx, node, axes)
        out = temp(ctx, node, kind.lower(), dims, dtype, sig)
    ctx.builder.add_op(kind, [x, int_constant(ctx, node, "axes", axes)], [out], name=node.name, keepDims=keep)
    return out


def _fold_empty(ctx: LoweringContext, node: ir.Node, axes: list[int], identity: float) -> bool:
    """A reduction over a zero-size axis: bind the output to the identity constant."""
    dims = static_dims(node_input(node, 0)) or []
    if not any(dims[a] == 0 for a in axes):
        return False
    out_dims, _ = ctx.shape(node.outputs[0])
    dtype = tflite_dtype(node.outputs[0])
    if dtype == "bool":  # any() of nothing is False, all() of nothing is True
        arr = np.full(out_dims, identity > 0, dtype=bool)
    else:
        arr = np.full(out_dims, identity, dtype=np.float32).astype(dtype)
    ctx.bind(node.outputs[0], ctx.builder.add_constant(f"{node.outputs[0].name}/empty_reduction", arr))
    return True


def _lower_reduction(
    ctx: LoweringContext,
    node: ir.Node,
    kind: str,
    identity: float,
    pre: str | None = None,
    post: str | None = None,
) -> None:
    """``post(kind(pre(x)))`` over the node's axes (``pre`` squares with MUL(x, x) or ABS...)."""
    axes = _axes(node)
    if isinstance(axes, str):
        raise InternalError(f"tflite: {node.op_type} {node.name!r}: {axes}")
    x_val, out_val = node_input(node, 0), node.outputs[0]
    if axes is None:  # noop_with_empty_axes: the input, with only pre/post applied
        axes = []
    if axes and _fold_empty(ctx, node, axes, identity):
        return
    b = ctx.builder
    x = ctx.tensor(x_val, node)
    dtype = tflite_dtype(x_val)
    dims, sig = ctx.shape(x_val)
    if pre == "SQUARE":  # x*x (MUL, exact IEEE product; TFLite SQUARE is the same)
        sq = temp(ctx, node, "squared", dims, dtype, sig)
        b.add_op("MUL", [x, x], [sq], fusedActivationFunction=0)
        x = sq
    elif pre is not None:
        t = temp(ctx, node, pre.lower(), dims, dtype, sig)
        b.add_op(pre, [x], [t])
        x = t
    keep = bool(attr_int(node, "keepdims", 1))
    if not axes:
        if post is None:
            ctx.bind(out_val, x)
            return
        red = x
    else:
        red = _reduce(ctx, node, kind, x, axes, None if post else ctx.new_tensor(out_val), keep, dtype)
        if post is None:
            return
        if not keep:  # the temporary kept dims: its shape differs from the output's only by 1s
            od, osig = ctx.shape(out_val)
            flat = temp(ctx, node, "reduced", od, dtype, osig)
            b.add_op("RESHAPE", [red, int_constant(ctx, node, "out_shape", osig)], [flat], newShape=osig)
            red = flat
    b.add_op(post, [red], [ctx.new_tensor(out_val)], name=node.name)


_CHECK_NUM = all_checks(shapes_known, _check_axes, _types(_NUM, "reductions"))
_CHECK_FLOAT = all_checks(shapes_known, _check_axes, _types(_FLOAT, "float reductions"))
_CHECK_MAX = all_checks(
    shapes_known, _check_axes, _types((*_ORDERED, ir.DataType.BOOL), "REDUCE_MAX/MIN/ANY/ALL")
)


@lowers("ReduceMean", check=_CHECK_FLOAT)
def lower_reduce_mean(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceMean(data, axes, keepdims, noop_with_empty_axes)`` -> MEAN (sum, then divide)."""
    _lower_reduction(ctx, node, "MEAN", np.nan)


@lowers("ReduceSum", check=_CHECK_NUM)
def lower_reduce_sum(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceSum(data, axes, keepdims, noop_with_empty_axes)`` -> SUM."""
    _lower_reduction(ctx, node, "SUM", 0.0)


def _max_min(ctx: LoweringContext, node: ir.Node, numeric: str, boolean: str, identity: float) -> None:
    # bool max/min is any/all (TFLite REDUCE_MAX/MIN take no bool)
    is_bool = node_input(node, 0).dtype == ir.DataType.BOOL
    _lower_reduction(ctx, node, boolean if is_bool else numeric, identity)


@lowers("ReduceMax", check=_CHECK_MAX)
def lower_reduce_max(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceMax(data, axes, keepdims, noop_with_empty_axes)`` -> REDUCE_MAX (bool: REDUCE_ANY)."""
    _max_min(ctx, node, "REDUCE_MAX", "REDUCE_ANY", -np.inf)


@lowers("ReduceMin", check=_CHECK_MAX)
def lower_reduce_min(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceMin(data, axes, keepdims, noop_with_empty_axes)`` -> REDUCE_MIN (bool: REDUCE_ALL)."""
    _max_min(ctx, node, "REDUCE_MIN", "REDUCE_ALL", np.inf)


@lowers("ReduceProd", check=_CHECK_NUM)
def lower_reduce_prod(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceProd(data, axes, keepdims, noop_with_empty_axes)`` -> REDUCE_PROD."""
    _lower_reduction(ctx, node, "REDUCE_PROD", 1.0)


@lowers("ReduceSumSquare", check=_CHECK_FLOAT)
def lower_reduce_sum_square(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceSumSquare(data, axes, ...)`` -> SUM(MUL(x, x))."""
    _lower_reduction(ctx, node, "SUM", 0.0, pre="SQUARE")


@lowers("ReduceL2", check=_CHECK_FLOAT)
def lower_reduce_l2(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceL2(data, axes, ...)`` -> SQRT(SUM(MUL(x, x))) (no scaling against overflow, as ONNX)."""
    _lower_reduction(ctx, node, "SUM", 0.0, pre="SQUARE", post="SQRT")


@lowers("ReduceL1", check=_CHECK_FLOAT)
def lower_reduce_l1(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceL1(data, axes, ...)`` -> SUM(ABS(x))."""
    _lower_reduction(ctx, node, "SUM", 0.0, pre="ABS")


@lowers("ReduceLogSum", check=_CHECK_FLOAT)
def lower_reduce_log_sum(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceLogSum(data, axes, ...)`` -> LOG(SUM(x))."""
    _lower_reduction(ctx, node, "SUM", -np.inf, post="LOG")


@lowers("ReduceLogSumExp", check=_CHECK_FLOAT)
def lower_reduce_log_sum_exp(ctx: LoweringContext, node: ir.Node) -> None:
    """``ReduceLogSumExp(data, axes, ...)`` -> ``m + LOG(SUM(EXP(x - m)))``, ``m = REDUCE_MAX(x)``.

    Subtracting the max keeps EXP from overflowing (ONNX's formula ``log(sum(exp(x)))`` is
    the same value; it differs only by rounding, and where the naive form overflows to inf).
    """
    axes = _axes(node)
    if isinstance(axes, str):
        raise InternalError(f"tflite: ReduceLogSumExp {node.name!r}: {axes}")
    if not axes:
        ctx.bind(node.outputs[0], ctx.tensor(node_input(node, 0), node))  # log(exp(x)) = x
        return
    if _fold_empty(ctx, node, axes, -np.inf):
        return
    b = ctx.builder
    x_val, out_val = node_input(node, 0), node.outputs[0]
    x = ctx.tensor(x_val, node)
    dims, sig = ctx.shape(x_val)
    m = _reduce(ctx, node, "REDUCE_MAX", x, axes, None, True, "float32")
    shifted, ex = (
        temp(ctx, node, "shifted", dims, "float32", sig),
        temp(ctx, node, "exp", dims, "float32", sig),
    )
    b.add_op("SUB", [x, m], [shifted], fusedActivationFunction=0)
    b.add_op("EXP", [shifted], [ex])
    s = _reduce(ctx, node, "SUM", ex, axes, None, True, "float32")
    rd, rsig = _reduced_shape(ctx, node, axes)
    log_s, total = temp(ctx, node, "log", rd, "float32", rsig), temp(ctx, node, "lse", rd, "float32", rsig)
    b.add_op("LOG", [s], [log_s])
    keep = bool(attr_int(node, "keepdims", 1))
    b.add_op("ADD", [log_s, m], [total if not keep else ctx.new_tensor(out_val)], fusedActivationFunction=0)
    if not keep:
        osig = ctx.shape(out_val)[1]
        shape = int_constant(ctx, node, "out_shape", osig)
        b.add_op("RESHAPE", [total, shape], [ctx.new_tensor(out_val)], name=node.name, newShape=osig)


# ---------------------------------------------------------------------------- ArgMax / ArgMin


def _check_arg(node: ir.Node) -> str | None:
    dims = static_dims(node_input(node, 0))
    if dims is None:
        return "input has no known shape"
    axis = normalize_axis(attr_int(node, "axis", 0), len(dims))
    if dims[axis] is None and attr_int(node, "select_last_index", 0):
        return f"select_last_index over symbolic axis {axis}"
    return None


def _lower_arg(ctx: LoweringContext, node: ir.Node, kind: str) -> None:
    """ARG_MAX/ARG_MIN over ``axis``; keepdims by RESHAPE; select_last_index by REVERSE_V2.

    TFLite picks the first extreme on ties (strict comparison), ONNX's ``select_last_index=0``.
    For ``select_last_index=1`` the axis is reversed first and the index mapped back,
    ``dim - 1 - i`` (int64 SUB).
    """
    x_val, out_val = node_input(node, 0), node.outputs[0]
    dims, sig = ctx.shape(x_val)
    axis = normalize_axis(attr_int(node, "axis", 0), len(dims))
    keep = bool(attr_int(node, "keepdims", 1))
    last = bool(attr_int(node, "select_last_index", 0))
    out_type = tflite_dtype(out_val)
    b = ctx.builder
    x = ctx.tensor(x_val, node)
    axis_t = int_constant(ctx, node, "axis", [axis])
    if last:
        rev = temp(ctx, node, "reversed", dims, tflite_dtype(x_val), sig)
        b.add_op("REVERSE_V2", [x, axis_t], [rev])
        x = rev
    red_dims = [d for i, d in enumerate(dims) if i != axis]
    red_sig = [d for i, d in enumerate(sig) if i != axis]
    direct = not keep and not last
    idx = ctx.new_tensor(out_val) if direct else temp(ctx, node, "index", red_dims, out_type, red_sig)
    b.add_op(kind, [x, axis_t], [idx], name=node.name, outputType=TENSOR_TYPES[out_type])
    if direct:
        return
    if last:
        flipped = (
            ctx.new_tensor(out_val)
            if not keep
            else temp(ctx, node, "index_last", red_dims, out_type, red_sig)
        )
        top = int_constant(ctx, node, "last_index", dims[axis] - 1, out_type)
        b.add_op("SUB", [top, idx], [flipped], fusedActivationFunction=0)
        idx = flipped
    if keep:
        osig = ctx.shape(out_val)[1]
        shape = int_constant(ctx, node, "out_shape", osig)
        b.add_op("RESHAPE", [idx, shape], [ctx.new_tensor(out_val)], newShape=osig)


_CHECK_ARG = all_checks(shapes_known, _check_arg, _types(_ARG, "ARG_MAX/ARG_MIN"))


@lowers("ArgMax", check=_CHECK_ARG)
def lower_argmax(ctx: LoweringContext, node: ir.Node) -> None:
    """``ArgMax(data, axis, keepdims, select_last_index)`` -> ARG_MAX (int64 output)."""
    _lower_arg(ctx, node, "ARG_MAX")


@lowers("ArgMin", check=_CHECK_ARG)
def lower_argmin(ctx: LoweringContext, node: ir.Node) -> None:
    """``ArgMin(data, axis, keepdims, select_last_index)`` -> ARG_MIN (int64 output)."""
    _lower_arg(ctx, node, "ARG_MIN")
