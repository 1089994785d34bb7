"""Matrix products -> TFLite builtins.

A constant 2-D weight becomes FULLY_CONNECTED (weights stored ``[N, K]``, the layout TFLite's
FC kernels and the weight quantizers expect); everything else (two activations, N-D broadcasting
batches, 1-D operands) becomes BATCH_MATMUL, which broadcasts batch dims like numpy up to 5 dims.

Numerics: float32 products and sums in both runtimes, summed in the kernel's order (a few
ulps from numpy's pairwise sums). Gemm's ``alpha``/``beta`` are folded into a constant B/C at
export (``(alpha*B)`` rounds once, before the product, instead of after it: at most 1 ulp per
product), else applied by MUL.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.ops._util import (
    all_checks,
    attr_float,
    attr_int,
    int_constant,
    optional_input,
    rank,
    shapes_known,
    temp,
)
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []

_FLOATS = (ir.DataType.FLOAT, ir.DataType.DOUBLE)


def _check_float(node: ir.Node) -> str | None:
    for v in node.inputs:
        if v is not None and v.dtype is not None and v.dtype not in _FLOATS:
            return f"operand of type {v.dtype.name}; the float lowering takes float32"
    return None


def _fc_float(
    ctx: LoweringContext, node: ir.Node, x: int, w: np.ndarray, b: np.ndarray | None, out: int, keep: bool
) -> None:
    """FULLY_CONNECTED(x, w [N, K], b [N]) -> ``out`` (float32 weights and bias)."""
    wi = ctx.builder.add_constant(ctx.name(node, "weight"), w.astype(np.float32))
    bi = -1 if b is None else ctx.builder.add_constant(ctx.name(node, "bias"), b.astype(np.float32))
    ctx.builder.add_op("FULLY_CONNECTED", [x, wi, bi], [out], name=node.name, keepNumDims=keep)


def _reshape(
    ctx: LoweringContext, node: ir.Node, src: int, dims: list[int], sig: list[int], out: int
) -> None:
    shape = int_constant(ctx, node, "shape", sig)
    ctx.builder.add_op("RESHAPE", [src, shape], [out], newShape=list(sig))
    del dims


def _check_matmul(node: ir.Node) -> str | None:
    ra, rb = rank(node_input(node, 0)), rank(node_input(node, 1))
    if max(ra, rb) > 5:
        return f"operands of rank {ra} and {rb}; TFLite BATCH_MATMUL takes at most 5 dims"
    return None


@lowers("MatMul", check=all_checks(shapes_known, _check_float, _check_matmul))
def lower_matmul(ctx: LoweringContext, node: ir.Node) -> None:
    """``MatMul(A, B)`` (numpy matmul) -> FULLY_CONNECTED (constant 2-D B) or BATCH_MATMUL.

    1-D operands as numpy: ``A [K]`` is a row ``[1, K]``, ``B [K]`` a column ``[K, 1]``, and
    the added dim is dropped from the result (one RESHAPE).
    """
    a_val, b_val, out_val = node_input(node, 0), node_input(node, 1), node.outputs[0]
    ra, rb = rank(a_val), rank(b_val)
    b = ctx.builder
    out_dims, out_sig = ctx.shape(out_val)
    if b_val.const_value is not None and rb == 2:
        w = np.asarray(b_val.const_value.numpy()).T  # FC weights are [N, K]
        if ra >= 2:
            _fc_float(ctx, node, ctx.tensor(a_val, node), w, None, ctx.new_float(out_val), ra > 2)
            return
        tmp = temp(ctx, node, "row_product", [1, w.shape[0]], "float32")  # A [K]: FC gives [1, N]
        _fc_float(ctx, node, ctx.tensor(a_val, node), w, None, tmp, False)
        _reshape(ctx, node, tmp, out_dims, out_sig, ctx.new_float(out_val))
        return
    x, y = ctx.tensor(a_val, node), ctx.tensor(b_val, node)
    if ra == 1:
        (k,) = ctx.shape(a_val)[0]
        row = temp(ctx, node, "a_row", [1, k], "float32")
        _reshape(ctx, node, x, [1, k], [1, k], row)
        x = row
    if rb == 1:
        (k,) = ctx.shape(b_val)[0]
        col = temp(ctx, node, "b_column", [k, 1], "float32")
        _reshape(ctx, node, y, [k, 1], [k, 1], col)
        y = col
    if ra > 1 and rb > 1:
        ctx.builder.add_op(
            "BATCH_MATMUL", [x, y], [ctx.new_float(out_val)], name=node.name, adjX=False, adjY=False
        )
        return
    # the product with the added dims kept: output dims with 1 re-inserted where A/B had none
    full_dims, full_sig = list(out_dims), list(out_sig)
    if ra == 1:
        full_dims.insert(len(full_dims) - (0 if rb == 1 else 1), 1)
        full_sig.insert(len(full_sig) - (0 if rb == 1 else 1), 1)
    if rb == 1:
        full_dims.append(1)
        full_sig.append(1)
    prod = temp(ctx, node, "product", full_dims, "float32", full_sig)
    b.add_op("BATCH_MATMUL", [x, y], [prod], name=node.name, adjX=False, adjY=False)
    _reshape(ctx, node, prod, out_dims, out_sig, ctx.new_float(out_val))


def _check_gemm(node: ir.Node) -> str | None:
    if rank(node_input(node, 0)) != 2 or rank(node_input(node, 1)) != 2:
        return "A and B must be 2-D (ONNX Gemm)"
    return None


def _scaled(ctx: LoweringContext, node: ir.Node, x: int, factor: float, dims: list[int], role: str) -> int:
    """``x * factor`` (MUL by a scalar constant); ``x`` itself when ``factor`` is 1."""
    if factor == 1.0:
        return x
    out = temp(ctx, node, role, dims, "float32")
    f = ctx.builder.add_constant(f"{node.name or 'Gemm'}/{role}_factor", np.array(factor, dtype=np.float32))
    ctx.builder.add_op("MUL", [x, f], [out], fusedActivationFunction=0)
    return out


@lowers("Gemm", check=all_checks(shapes_known, _check_float, _check_gemm))
def lower_gemm(ctx: LoweringContext, node: ir.Node) -> None:
    """``Gemm(A, B, C, alpha, beta, transA, transB)``: ``alpha * A' B' + beta * C``.

    Constant B: FULLY_CONNECTED with ``alpha * B'`` as ``[N, K]`` weights; a constant C that
    broadcasts along rows (scalar, ``[N]``, ``[1, N]``) becomes its bias ``beta * C``.
    Run-time B: BATCH_MATMUL with ``adj_x``/``adj_y`` for the transposes, then MUL by alpha.
    Any other C is added (ADD broadcasts ``[M, 1]``, ``[M, N]``). ``transA`` on FC: A is
    transposed (at export when constant, else by one TRANSPOSE).
    """
    a_val, b_val, out_val = node_input(node, 0), node_input(node, 1), node.outputs[0]
    c_val = optional_input(node, 2)
    alpha, beta = attr_float(node, "alpha", 1.0), attr_float(node, "beta", 1.0)
    trans_a, trans_b = bool(attr_int(node, "transA", 0)), bool(attr_int(node, "transB", 0))
    out_dims, _ = ctx.shape(out_val)
    n = out_dims[1]
    bias: np.ndarray | None = None
    add_c = c_val is not None and beta != 0.0  # beta = 0: C does not contribute
    if c_val is not None and add_c and c_val.const_value is not None:
        c = np.asarray(c_val.const_value.numpy(), dtype=np.float32)
        if (
            c.size in (1, n)
            and c.ndim <= 2
            and (c.ndim < 2 or c.shape[0] == 1)
            and b_val.const_value is not None
        ):
            bias = np.broadcast_to(c.reshape(-1) * np.float32(beta), (n,)).astype(np.float32)
            add_c = False
    last = not add_c
    prod = ctx.new_float(out_val) if last else temp(ctx, node, "product", out_dims, "float32")
    if b_val.const_value is not None:
        w = np.asarray(b_val.const_value.numpy(), dtype=np.float32)
        w = w if trans_b else w.T  # FC weights are [N, K]
        if alpha != 1.0:
            w = w * np.float32(alpha)
        x = ctx.tensor(a_val, node, (1, 0) if trans_a else None)
        _fc_float(ctx, node, x, w, bias, prod, False)
    else:
        x, y = ctx.tensor(a_val, node), ctx.tensor(b_val, node)
        if alpha == 1.0:
            ctx.builder.add_op("BATCH_MATMUL", [x, y], [prod], name=node.name, adjX=trans_a, adjY=trans_b)
        else:
            raw = temp(ctx, node, "raw_product", out_dims, "float32")
            ctx.builder.add_op("BATCH_MATMUL", [x, y], [raw], name=node.name, adjX=trans_a, adjY=trans_b)
            f = ctx.builder.add_constant(f"{node.name or 'Gemm'}/alpha", np.array(alpha, dtype=np.float32))
            ctx.builder.add_op("MUL", [raw, f], [prod], fusedActivationFunction=0)
    if not add_c or c_val is None:
        return
    if c_val.const_value is not None:
        c = np.asarray(c_val.const_value.numpy(), dtype=np.float32) * np.float32(beta)
        ci = ctx.builder.add_constant(f"{c_val.name}/scaled", c.astype(np.float32))
    else:
        c_dims, _ = ctx.shape(c_val)
        ci = _scaled(ctx, node, ctx.tensor(c_val, node), beta, c_dims, "beta_c")
    ctx.builder.add_op("ADD", [prod, ci], [ctx.new_float(out_val)], fusedActivationFunction=0)
