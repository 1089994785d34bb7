"""Normalizations and softmax -> TFLite builtins (LayerNorm/RMSNorm decomposed: no TFLite builtin).

Softmax and LogSoftmax normalize the last axis in TFLite; another axis is swapped last by a
TRANSPOSE and back (opset >= 13), or the input is RESHAPEd to 2-D at ``axis`` (opset < 13,
whose Softmax normalizes the flattened trailing dims).

Numerics: LayerNormalization becomes MEAN / SUB / MUL / MEAN / ADD / RSQRT / MUL, which rounds
differently from ONNX Runtime's fused kernel (and numpy's ``1 / sqrt``) by a few ulps. The hub
of an HF Llama/BitNet RMSNorm arrives as Pow / ReduceMean / Add / Sqrt / Reciprocal / Mul and is
lowered op by op; the opset-23 RMSNormalization op is decomposed here the same way.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.ops._util import (
    MAX_RANK,
    all_checks,
    attr_float,
    attr_int,
    int_constant,
    normalize_axis,
    opset,
    optional_input,
    rank,
    shapes_known,
    static_dims,
    temp,
)
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []

_FLOATS = (ir.DataType.FLOAT, ir.DataType.DOUBLE)


def _check_float(node: ir.Node) -> str | None:
    v = node_input(node, 0)
    if v.dtype is not None and v.dtype not in _FLOATS:
        return f"input of type {v.dtype.name}; the float lowering takes float32"
    return None


def _softmax_axis(node: ir.Node) -> int:
    r = rank(node_input(node, 0))
    return normalize_axis(attr_int(node, "axis", 1 if opset(node) < 13 else -1), r)


def _check_softmax(node: ir.Node) -> str | None:
    r = rank(node_input(node, 0))
    if r > MAX_RANK:
        return f"rank {r}; the axis TRANSPOSE takes at most {MAX_RANK} dims"
    if opset(node) < 13 and _softmax_axis(node) != r - 1:
        dims = static_dims(node_input(node, 0)) or []
        axis = _softmax_axis(node)
        if sum(d is None for d in dims[:axis]) > 1 or None in dims[axis:]:
            return (
                "symbolic dims the opset < 13 form cannot RESHAPE to 2-D (at most one, before "
                "the axis); export with opset >= 13"
            )
    return None


def _lower_softmax(ctx: LoweringContext, node: ir.Node, kind: str, **options: object) -> None:
    """``kind`` (SOFTMAX / LOG_SOFTMAX, last axis) applied on the node's axis."""
    x_val, out_val = node_input(node, 0), node.outputs[0]
    dims, sig = ctx.shape(x_val)
    r = len(dims)
    axis = _softmax_axis(node)
    b = ctx.builder
    x = ctx.tensor(x_val, node)
    if axis == r - 1 or r == 0:
        b.add_op(kind, [x], [ctx.new_float(out_val)], name=node.name, **options)
        return
    if opset(node) < 13:  # coerced to 2-D: [prod(dims[:axis]), prod(dims[axis:])]
        inner = int(np.prod(dims[axis:]))
        flat_sig = [-1 if -1 in sig[:axis] else int(np.prod(dims[:axis])), inner]
        flat_dims = [int(np.prod(dims[:axis])), inner]
        flat = temp(ctx, node, "flat", flat_dims, "float32", flat_sig)
        b.add_op("RESHAPE", [x, int_constant(ctx, node, "flat_shape", flat_sig)], [flat], newShape=flat_sig)
        normed = temp(ctx, node, "flat_normalized", flat_dims, "float32", flat_sig)
        b.add_op(kind, [flat], [normed], name=node.name, **options)
        b.add_op(
            "RESHAPE", [normed, int_constant(ctx, node, "shape", sig)], [ctx.new_float(out_val)], newShape=sig
        )
        return
    perm = list(range(r))
    perm[axis], perm[-1] = perm[-1], perm[axis]  # a swap: its own inverse
    p_dims, p_sig = [dims[i] for i in perm], [sig[i] for i in perm]
    perm_t = int_constant(ctx, node, "perm", perm)
    moved, normed = (
        temp(ctx, node, "axis_last", p_dims, "float32", p_sig),
        temp(ctx, node, "normalized", p_dims, "float32", p_sig),
    )
    b.add_op("TRANSPOSE", [x, perm_t], [moved])
    b.add_op(kind, [moved], [normed], name=node.name, **options)
    b.add_op("TRANSPOSE", [normed, perm_t], [ctx.new_float(out_val)])


_CHECK_SOFTMAX = all_checks(shapes_known, _check_float, _check_softmax)


@lowers("Softmax", check=_CHECK_SOFTMAX)
def lower_softmax(ctx: LoweringContext, node: ir.Node) -> None:
    """``Softmax(x, axis)`` -> SOFTMAX(beta=1): ``exp(x - max) / sum(exp(x - max))``, as ONNX."""
    _lower_softmax(ctx, node, "SOFTMAX", beta=1.0)


@lowers("LogSoftmax", check=_CHECK_SOFTMAX)
def lower_log_softmax(ctx: LoweringContext, node: ir.Node) -> None:
    """``LogSoftmax(x, axis)`` -> LOG_SOFTMAX: ``x - max - log(sum(exp(x - max)))``, as ONNX."""
    _lower_softmax(ctx, node, "LOG_SOFTMAX")


# ---------------------------------------------------------------------------- layer / RMS norms


def _check_norm_scale(node: ir.Node) -> str | None:
    """Check: rank within what the broadcasting MUL/ADD take (:data:`MAX_RANK`)."""
    r = rank(node_input(node, 0))
    if r > MAX_RANK:
        return f"rank {r}; TFLite broadcasting MUL/ADD take at most {MAX_RANK} dims"
    return None


def _affine(
    ctx: LoweringContext, node: ir.Node, cur: int, out_val: ir.Value, scale_i: int, bias_i: int
) -> None:
    """``cur * scale + bias`` into ``out_val``'s tensor (inputs ``scale_i``, ``bias_i`` optional)."""
    b = ctx.builder
    dims, sig = ctx.shape(out_val)
    scale_v, bias_v = optional_input(node, scale_i), optional_input(node, bias_i)
    if scale_v is not None:
        scaled = (
            temp(ctx, node, "scaled", dims, "float32", sig) if bias_v is not None else ctx.new_float(out_val)
        )
        b.add_op("MUL", [cur, ctx.tensor(scale_v, node)], [scaled], fusedActivationFunction=0)
        cur = scaled
    if bias_v is not None:
        b.add_op("ADD", [cur, ctx.tensor(bias_v, node)], [ctx.new_float(out_val)], fusedActivationFunction=0)
    elif scale_v is None:
        ctx.bind(out_val, cur)


def _norm_axes(node: ir.Node) -> list[int]:
    r = rank(node_input(node, 0))
    return list(range(normalize_axis(attr_int(node, "axis", -1), r), r))


@lowers("LayerNormalization", check=all_checks(shapes_known, _check_float, _check_norm_scale))
def lower_layer_norm(ctx: LoweringContext, node: ir.Node) -> None:
    """``LayerNormalization(X, Scale, B, axis=-1, epsilon=1e-5) -> Y, Mean, InvStdDev``, decomposed.

    Over the dims ``[axis, rank)``: ``mean = MEAN(x)``, ``d = x - mean``, ``var = MEAN(d*d)``,
    ``inv = RSQRT(var + eps)``, ``y = d * inv * scale + bias``. The optional Mean and InvStdDev
    outputs are the kept-dims intermediates.
    """
    x_val, out_val = node_input(node, 0), node.outputs[0]
    dims, sig = ctx.shape(x_val)
    axes = _norm_axes(node)
    eps = attr_float(node, "epsilon", 1e-5)
    b = ctx.builder
    x = ctx.tensor(x_val, node)
    red_dims = [1 if i in axes else d for i, d in enumerate(dims)]
    red_sig = [1 if i in axes else d for i, d in enumerate(sig)]
    mean_out = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1].name else None
    inv_out = node.outputs[2] if len(node.outputs) > 2 and node.outputs[2].name else None

    def full(role: str) -> int:
        return temp(ctx, node, role, dims, "float32", sig)

    def reduced(role: str) -> int:
        return temp(ctx, node, role, red_dims, "float32", red_sig)

    axes_t = int_constant(ctx, node, "axes", axes)
    mean = ctx.new_float(mean_out) if mean_out is not None else reduced("mean")
    b.add_op("MEAN", [x, axes_t], [mean], keepDims=True)
    centered, sq, var = full("centered"), full("squared"), reduced("var")
    b.add_op("SUB", [x, mean], [centered], fusedActivationFunction=0)
    b.add_op("MUL", [centered, centered], [sq], fusedActivationFunction=0)
    b.add_op("MEAN", [sq, axes_t], [var], keepDims=True)
    eps_t = b.add_constant(f"{node.name or 'LayerNorm'}/epsilon", np.array([eps], dtype=np.float32))
    var_eps = reduced("var_eps")
    inv = ctx.new_float(inv_out) if inv_out is not None else reduced("inv_std")
    b.add_op("ADD", [var, eps_t], [var_eps], fusedActivationFunction=0)
    b.add_op("RSQRT", [var_eps], [inv])  # RSQRT vs ONNX's 1/sqrt: <= 2 ulps apart
    normed = full("normalized")
    b.add_op("MUL", [centered, inv], [normed], fusedActivationFunction=0)
    _affine(ctx, node, normed, out_val, 1, 2)


@lowers("RMSNormalization", check=all_checks(shapes_known, _check_float, _check_norm_scale))
def lower_rms_norm(ctx: LoweringContext, node: ir.Node) -> None:
    """``RMSNormalization(X, scale, axis=-1, epsilon=1e-5)`` (opset 23), decomposed.

    Over the dims ``[axis, rank)``: ``y = x * RSQRT(MEAN(x*x) + eps) * scale``. ONNX writes
    ``x * (1 / sqrt(...))``; RSQRT is the same value within 2 ulps.
    """
    x_val, out_val = node_input(node, 0), node.outputs[0]
    dims, sig = ctx.shape(x_val)
    axes = _norm_axes(node)
    eps = attr_float(node, "epsilon", 1e-5)
    b = ctx.builder
    x = ctx.tensor(x_val, node)
    red_dims = [1 if i in axes else d for i, d in enumerate(dims)]
    red_sig = [1 if i in axes else d for i, d in enumerate(sig)]
    sq = temp(ctx, node, "squared", dims, "float32", sig)
    ms, ms_eps, inv = (
        temp(ctx, node, r, red_dims, "float32", red_sig) for r in ("mean_square", "ms_eps", "inv_rms")
    )
    b.add_op("MUL", [x, x], [sq], fusedActivationFunction=0)
    b.add_op("MEAN", [sq, int_constant(ctx, node, "axes", axes)], [ms], keepDims=True)
    eps_t = b.add_constant(f"{node.name or 'RMSNorm'}/epsilon", np.array([eps], dtype=np.float32))
    b.add_op("ADD", [ms, eps_t], [ms_eps], fusedActivationFunction=0)
    b.add_op("RSQRT", [ms_eps], [inv])
    normed = temp(ctx, node, "normalized", dims, "float32", sig)
    b.add_op("MUL", [x, inv], [normed], fusedActivationFunction=0)
    _affine(ctx, node, normed, out_val, 1, 2)
