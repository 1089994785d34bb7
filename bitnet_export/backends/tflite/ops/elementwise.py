"""Elementwise ops -> TFLite builtins: activations and broadcasting arithmetic.

Layout: elementwise ops do not care about layout, so they compute in the layout their runtime
inputs are held in (:meth:`LoweringContext.common_layout`): inside an NHWC region (between
convolutions) no TRANSPOSE appears. Constant operands are reshaped to full rank and transposed
at export; when the runtime inputs disagree, everything is taken in the ONNX layout.

Numerics: IEEE float32 in both runtimes. Where a TFLite builtin is a different formula from the
ONNX definition (HARD_SWISH, decomposed HardSigmoid/Softplus/Elu), results may differ by a few
ulps; each lowering says how.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import Int8Alias, LoweringContext, Perm, node_input, tflite_dtype
from bitnet_export.backends.tflite.flatbuffer import Quant
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []


def _rank(value: ir.Value) -> int:
    return len(value.shape) if value.shape is not None else -1


def _inputs(node: ir.Node) -> list[ir.Value]:
    return [v for v in node.inputs if v is not None]


def _tmp(ctx: LoweringContext, node: ir.Node, role: str, perm: Perm | None, dtype: str = "float32") -> int:
    """An intermediate with the output's shape, held in ``perm``."""
    dims, sig = ctx.shape(node.outputs[0])
    if perm is not None:
        dims, sig = [dims[i] for i in perm], [sig[i] for i in perm]
    return ctx.builder.add_tensor(ctx.name(node, role), dims, dtype, shape_signature=sig)


def _scalar(ctx: LoweringContext, node: ir.Node, role: str, value: float) -> int:
    return ctx.builder.add_constant(ctx.name(node, role), np.array(value, dtype=np.float32))


def _unary(kind: str, ctx: LoweringContext, node: ir.Node, **options: object) -> None:
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    ctx.builder.add_op(kind, [x], [out], name=node.name, **options)


def _binary(kind: str, ctx: LoweringContext, node: ir.Node) -> None:
    _nary(kind, ctx, node, _inputs(node))


def _nary(
    kind: str, ctx: LoweringContext, node: ir.Node, values: list[ir.Value], *, then_div: float | None = None
) -> None:
    """``kind`` folded left over ``values`` (broadcasting), in the inputs' common layout.

    ``then_div``: divide the result by this (``Mean``) before binding the output. int8, uint8
    and int16 arithmetic (TFLite's kernels for those are *quantized* ops) runs in int32 between
    CASTs; the CAST back wraps modulo 2^bits as ONNX's (numpy's) integer arithmetic does.
    """
    rank = _rank(node.outputs[0])
    perm = ctx.common_layout(list(values), rank)
    opts = {"fusedActivationFunction": 0} if kind in _FUSABLE else {}
    narrow = kind in _FUSABLE and node.outputs[0].dtype in _NARROW_INTS
    b = ctx.builder

    def operand(v: ir.Value) -> int:
        idx = ctx.operand(v, node, perm, rank)
        if not narrow:
            return idx
        t = b.tensors[idx]
        wide = b.add_tensor(f"{t.name}/int32", t.shape, "int32", shape_signature=t.shape_signature)
        b.add_op("CAST", [idx], [wide], name=node.name)
        return wide

    def result(last: bool, role: str) -> int:
        if last and not narrow:
            return ctx.new_tensor(node.outputs[0], perm=perm)
        dims, sig = ctx.shape(node.outputs[0])
        if perm is not None:
            dims, sig = [dims[i] for i in perm], [sig[i] for i in perm]
        dtype = "int32" if narrow else "float32"
        return b.add_tensor(ctx.name(node, role), dims, dtype, shape_signature=sig)

    cur = operand(values[0])
    for i, v in enumerate(values[1:], start=2):
        out = result(i == len(values) and then_div is None, f"partial_{i}")
        b.add_op(kind, [cur, operand(v)], [out], name=node.name, **opts)
        cur = out
    if then_div is not None and len(values) > 1:
        out = result(True, "sum")
        n = _scalar(ctx, node, "count", then_div)
        b.add_op("DIV", [cur, n], [out], name=node.name, fusedActivationFunction=0)
        cur = out
    if narrow:
        out = ctx.new_tensor(node.outputs[0], perm=perm)
        b.add_op("CAST", [cur], [out], name=node.name)
    elif len(values) == 1:  # Max(x), Sum(x), Mean(x): the identity
        ctx.bind(node.outputs[0], cur, perm)


#: Integer types whose TFLite arithmetic kernels expect quantized tensors: computed in int32.
_NARROW_INTS = {ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT16}


#: Ops whose options table has a fused activation (set to NONE).
_FUSABLE = {"ADD", "SUB", "MUL", "DIV"}


def _attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return attr.as_float() if attr is not None else default


# ---------------------------------------------------------------------------- activations


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


@lowers("LeakyRelu")
def lower_leaky_relu(ctx: LoweringContext, node: ir.Node) -> None:
    """``LeakyRelu(x, alpha=0.01)`` -> LEAKY_RELU(alpha)."""
    _unary("LEAKY_RELU", ctx, node, alpha=_attr_float(node, "alpha", 0.01))


def _clip_bounds(node: ir.Node) -> tuple[ir.Value | float | None, ir.Value | float | None]:
    """Clip's (min, max): attributes before opset 11, optional inputs after; constants as floats."""
    if "min" in node.attributes or "max" in node.attributes:
        lo_a, hi_a = node.attributes.get("min"), node.attributes.get("max")
        return (lo_a.as_float() if lo_a is not None else None, hi_a.as_float() if hi_a is not None else None)
    bounds: list[ir.Value | float | None] = []
    for i in (1, 2):
        v = node.inputs[i] if i < len(node.inputs) else None
        if v is not None and v.const_value is not None:
            bounds.append(float(v.const_value.numpy().reshape(-1)[0]))
        else:
            bounds.append(v)
    return bounds[0], bounds[1]


def _check_clip(node: ir.Node) -> str | None:
    for i in (1, 2):
        v = node.inputs[i] if i < len(node.inputs) else None
        if v is not None and v.shape is not None and len(v.shape) != 0:
            return "Clip bounds must be scalars (ONNX requires it); reshape them to []"
    return None


@lowers("Clip", check=_check_clip)
def lower_clip(ctx: LoweringContext, node: ir.Node) -> None:
    """``Clip(x, min, max)`` -> RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 / RELU, else MAXIMUM + MINIMUM.

    ``min > max`` gives ``max`` everywhere in ONNX (``min(max(x, lo), hi)``), as MAXIMUM then
    MINIMUM does. Runtime bounds are scalar tensor operands.
    """
    lo, hi = _clip_bounds(node)
    named = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, 1.0): "RELU_0_TO_1", (0.0, None): "RELU"}
    x_val = node_input(node, 0)
    dtype = tflite_dtype(x_val)
    if dtype == "float32" and (lo is None or isinstance(lo, float)) and (hi is None or isinstance(hi, float)):
        kind = named.get((lo, hi))  # type: ignore[arg-type]
        if kind is not None:
            _unary(kind, ctx, node)
            return
    perm = ctx.layout(x_val)
    cur = ctx.tensor(x_val, node, perm)
    steps = [(k, b) for k, b in (("MAXIMUM", lo), ("MINIMUM", hi)) if b is not None]
    if not steps:
        ctx.bind(node.outputs[0], cur, perm)
        return
    for i, (kind, bound) in enumerate(steps):
        if isinstance(bound, float):  # in x's type (integer bounds of integer Clips are exact)
            b = ctx.builder.add_constant(ctx.name(node, kind.lower()), np.array(bound).astype(dtype))
        else:
            b = ctx.tensor(bound, node)
        last = i == len(steps) - 1
        out = (
            ctx.new_tensor(node.outputs[0], perm=perm)
            if last
            else _tmp(ctx, node, "clipped_low", perm, dtype)
        )
        ctx.builder.add_op(kind, [cur, b], [out], name=node.name)
        cur = out


@lowers("HardSwish")
def lower_hard_swish(ctx: LoweringContext, node: ir.Node) -> None:
    """``HardSwish(x)`` -> HARD_SWISH.

    ONNX: ``x * max(0, min(1, x/6 + 1/2))``; TFLite: ``x * relu6(x + 3) / 6``: equal in exact
    arithmetic, a few ulps apart in float32.
    """
    _unary("HARD_SWISH", ctx, node)


@lowers("HardSigmoid")
def lower_hard_sigmoid(ctx: LoweringContext, node: ir.Node) -> None:
    """``HardSigmoid(x, alpha=0.2, beta=0.5)`` -> MUL(alpha), ADD(beta), RELU_0_TO_1.

    ``max(0, min(1, alpha*x + beta))`` with one float32 rounding per step, as ONNX's reference.
    """
    alpha, beta = _attr_float(node, "alpha", 0.2), _attr_float(node, "beta", 0.5)
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    scaled, shifted = _tmp(ctx, node, "scaled", perm), _tmp(ctx, node, "shifted", perm)
    b = ctx.builder
    b.add_op(
        "MUL", [x, _scalar(ctx, node, "alpha", alpha)], [scaled], name=node.name, fusedActivationFunction=0
    )
    b.add_op(
        "ADD",
        [scaled, _scalar(ctx, node, "beta", beta)],
        [shifted],
        name=node.name,
        fusedActivationFunction=0,
    )
    b.add_op("RELU_0_TO_1", [shifted], [ctx.new_tensor(node.outputs[0], perm=perm)], name=node.name)


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


@lowers("Elu")
def lower_elu(ctx: LoweringContext, node: ir.Node) -> None:
    """``Elu(x, alpha=1)`` as ``relu(x) + alpha * (exp(min(x, 0)) - 1)``.

    Not TFLite's ELU: it has no alpha, and LiteRT's reference resolver has no ELU kernel.
    ``exp(x) - 1`` in float32 is ONNX's reference formula (no expm1: near 0 both lose the same
    relative precision).
    """
    alpha = _attr_float(node, "alpha", 1.0)
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    b = ctx.builder
    t = [_tmp(ctx, node, role, perm) for role in ("negative", "exp", "expm1", "scaled", "positive")]
    b.add_op("MINIMUM", [x, _scalar(ctx, node, "zero", 0.0)], [t[0]], name=node.name)
    b.add_op("EXP", [t[0]], [t[1]], name=node.name)
    b.add_op("SUB", [t[1], _scalar(ctx, node, "one", 1.0)], [t[2]], name=node.name, fusedActivationFunction=0)
    scaled = t[2]
    if alpha != 1.0:
        b.add_op(
            "MUL",
            [t[2], _scalar(ctx, node, "alpha", alpha)],
            [t[3]],
            name=node.name,
            fusedActivationFunction=0,
        )
        scaled = t[3]
    b.add_op("RELU", [x], [t[4]], name=node.name)
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    b.add_op("ADD", [t[4], scaled], [out], name=node.name, fusedActivationFunction=0)


@lowers("Softplus")
def lower_softplus(ctx: LoweringContext, node: ir.Node) -> None:
    """``Softplus(x) = log(1 + exp(x))`` as ``relu(x) + log(1 + exp(-|x|))`` (no overflow).

    ONNX's reference computes ``log(exp(x) + 1)`` directly (inf above x ~ 88); the stable form
    equals it wherever that is finite, to a few ulps.
    """
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    b = ctx.builder
    t = [_tmp(ctx, node, role, perm) for role in ("abs", "neg_abs", "exp", "one_plus", "log", "positive")]
    b.add_op("ABS", [x], [t[0]], name=node.name)
    b.add_op("NEG", [t[0]], [t[1]], name=node.name)
    b.add_op("EXP", [t[1]], [t[2]], name=node.name)
    b.add_op("ADD", [t[2], _scalar(ctx, node, "one", 1.0)], [t[3]], name=node.name, fusedActivationFunction=0)
    b.add_op("LOG", [t[3]], [t[4]], name=node.name)
    b.add_op("RELU", [x], [t[5]], name=node.name)
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    b.add_op("ADD", [t[5], t[4]], [out], name=node.name, fusedActivationFunction=0)


@lowers("Softsign")
def lower_softsign(ctx: LoweringContext, node: ir.Node) -> None:
    """``Softsign(x) = x / (1 + |x|)`` -> ABS, ADD, DIV."""
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    a, d = _tmp(ctx, node, "abs", perm), _tmp(ctx, node, "denominator", perm)
    b = ctx.builder
    b.add_op("ABS", [x], [a], name=node.name)
    b.add_op("ADD", [a, _scalar(ctx, node, "one", 1.0)], [d], name=node.name, fusedActivationFunction=0)
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    b.add_op("DIV", [x, d], [out], name=node.name, fusedActivationFunction=0)


@lowers("PRelu")
def lower_prelu(ctx: LoweringContext, node: ir.Node) -> None:
    """``PRelu(x, slope)`` -> PRELU (slope broadcast to x, in x's layout; constant or runtime)."""
    _binary("PRELU", ctx, node)


# ---------------------------------------------------------------------------- unary math


def _register_unary(op_type: str, kind: str, doc: str) -> None:
    def lower(ctx: LoweringContext, node: ir.Node) -> None:
        _unary(kind, ctx, node)

    lower.__name__ = f"lower_{op_type.lower()}"
    lower.__doc__ = doc
    lowers(op_type)(lower)


for _op, _kind, _doc in (
    ("Neg", "NEG", "``Neg(x)`` -> NEG."),
    ("Abs", "ABS", "``Abs(x)`` -> ABS."),
    ("Exp", "EXP", "``Exp(x)`` -> EXP."),
    ("Log", "LOG", "``Log(x)`` -> LOG."),
    ("Sqrt", "SQRT", "``Sqrt(x)`` -> SQRT."),
    ("Sin", "SIN", "``Sin(x)`` -> SIN."),
    ("Cos", "COS", "``Cos(x)`` -> COS."),
    ("Floor", "FLOOR", "``Floor(x)`` -> FLOOR."),
    ("Sign", "SIGN", "``Sign(x)`` -> SIGN."),
):
    _register_unary(_op, _kind, _doc)


@lowers("Ceil")
def lower_ceil(ctx: LoweringContext, node: ir.Node) -> None:
    """``Ceil(x)`` as ``-floor(-x)`` (exact; LiteRT's reference resolver has no CEIL kernel)."""
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    neg, fl = _tmp(ctx, node, "negated", perm), _tmp(ctx, node, "floor", perm)
    b = ctx.builder
    b.add_op("NEG", [x], [neg], name=node.name)
    b.add_op("FLOOR", [neg], [fl], name=node.name)
    b.add_op("NEG", [fl], [ctx.new_tensor(node.outputs[0], perm=perm)], name=node.name)


@lowers("Round")
def lower_round(ctx: LoweringContext, node: ir.Node) -> None:
    """``Round(x)``, half to even, as ``sign(x) * ((|x| + 2^23) - 2^23)`` where ``|x| < 2^23``.

    ONNX rounds half to even. For ``|x| < 2^23`` the float32 sum ``|x| + 2^23`` lies in
    [2^23, 2^24), where the spacing is 1, so IEEE addition (round to nearest, ties to even)
    rounds ``|x|`` to an integer exactly as ONNX does; subtracting 2^23 is exact. Larger
    magnitudes (and inf, NaN: the comparison is false) are integers already and pass through.
    Not TFLite's ROUND: LiteRT's reference resolver has no ROUND kernel (the builtin one also
    rounds half to even).
    """
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    b = ctx.builder
    t = [_tmp(ctx, node, role, perm) for role in ("abs", "shifted", "rounded", "sign", "signed")]
    two23 = _scalar(ctx, node, "two_pow_23", 2.0**23)
    b.add_op("ABS", [x], [t[0]], name=node.name)
    b.add_op("ADD", [t[0], two23], [t[1]], name=node.name, fusedActivationFunction=0)
    b.add_op("SUB", [t[1], two23], [t[2]], name=node.name, fusedActivationFunction=0)
    b.add_op("SIGN", [x], [t[3]], name=node.name)
    b.add_op("MUL", [t[2], t[3]], [t[4]], name=node.name, fusedActivationFunction=0)
    dims, sig = [b.tensors[t[0]].shape, b.tensors[t[0]].shape_signature]
    small = b.add_tensor(ctx.name(node, "small"), dims, "bool", shape_signature=sig)
    b.add_op("LESS", [t[0], two23], [small], name=node.name)
    b.add_op("SELECT_V2", [small, t[4], x], [ctx.new_tensor(node.outputs[0], perm=perm)], name=node.name)


@lowers("Reciprocal")
def lower_reciprocal(ctx: LoweringContext, node: ir.Node) -> None:
    """``Reciprocal(x)`` -> DIV(1, x) (one correctly rounded division, as ONNX's ``1/x``)."""
    x_val = node_input(node, 0)
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    ctx.builder.add_op(
        "DIV", [_scalar(ctx, node, "one", 1.0), x], [out], name=node.name, fusedActivationFunction=0
    )


def _check_pow(node: ir.Node) -> str | None:
    types = {v.dtype for v in node.inputs if v is not None}
    if ir.DataType.FLOAT not in types and ir.DataType.INT64 in types:
        return "Pow of int64 values: TFLite's POW has float32 and int32 kernels only; cast to int32"
    return None


@lowers("Pow", check=_check_pow)
def lower_pow(ctx: LoweringContext, node: ir.Node) -> None:
    """``Pow(x, y)`` -> MUL(x, x) for y = 2, SQRT for y = 0.5, else POW (broadcasting).

    ``x*x`` and SQRT are correctly rounded, as numpy's ``x**2`` and ``x**0.5`` are; a generic
    ``pow`` kernel may be an ulp away for those exponents. Mixed types (POW takes one): computed
    in float32 when either side is float (an integer base's result is CAST back, truncating as
    numpy's ``astype`` does), else in int32.
    """
    x_val, y_val = node_input(node, 0), node_input(node, 1)
    same = x_val.dtype == y_val.dtype
    if (
        same
        and y_val.const_value is not None
        and y_val.const_value.numpy().size == 1
        and _rank(y_val) <= _rank(x_val)
    ):
        y = float(y_val.const_value.numpy().reshape(-1)[0])
        if y in (2.0, 0.5, 1.0) and x_val.dtype == ir.DataType.FLOAT:
            perm = ctx.layout(x_val)
            x = ctx.tensor(x_val, node, perm)
            if y == 1.0:
                ctx.bind(node.outputs[0], x, perm)
                return
            out = ctx.new_tensor(node.outputs[0], perm=perm)
            if y == 2.0:
                ctx.builder.add_op("MUL", [x, x], [out], name=node.name, fusedActivationFunction=0)
            else:
                ctx.builder.add_op("SQRT", [x], [out], name=node.name)
            return
    if same and x_val.dtype in (ir.DataType.FLOAT, ir.DataType.INT32):
        _binary("POW", ctx, node)
        return
    compute = "float32" if ir.DataType.FLOAT in (x_val.dtype, y_val.dtype) else "int32"
    rank = _rank(node.outputs[0])
    perm = ctx.common_layout([x_val, y_val], rank)
    b = ctx.builder

    def operand(v: ir.Value) -> int:
        idx = ctx.operand(v, node, perm, rank)
        t = b.tensors[idx]
        if t.dtype == compute:
            return idx
        if v.const_value is not None:  # exact for the small integer exponents of real models
            arr = np.frombuffer(b.buffers[t.buffer], dtype=t.dtype).reshape(t.shape).astype(compute)
            return b.add_constant(f"{t.name}/{compute}", arr)
        cast = b.add_tensor(f"{t.name}/{compute}", t.shape, compute, shape_signature=t.shape_signature)
        b.add_op("CAST", [idx], [cast], name=node.name)
        return cast

    xi, yi = operand(x_val), operand(y_val)
    out_dtype = tflite_dtype(node.outputs[0])
    if out_dtype == compute:
        b.add_op("POW", [xi, yi], [ctx.new_tensor(node.outputs[0], perm=perm)], name=node.name)
        return
    dims, sig = ctx.shape(node.outputs[0])
    if perm is not None:
        dims, sig = [dims[i] for i in perm], [sig[i] for i in perm]
    raw = b.add_tensor(ctx.name(node, "power"), dims, compute, shape_signature=sig)
    b.add_op("POW", [xi, yi], [raw], name=node.name)
    b.add_op("CAST", [raw], [ctx.new_tensor(node.outputs[0], perm=perm)], name=node.name)


# ---------------------------------------------------------------------------- arithmetic


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
    """``Div(a, b)`` -> DIV (broadcasting; float division, correctly rounded)."""
    _binary("DIV", ctx, node)


@lowers("Max")
def lower_max(ctx: LoweringContext, node: ir.Node) -> None:
    """``Max(x1, ..., xn)`` -> MAXIMUM chain (broadcasting)."""
    _binary("MAXIMUM", ctx, node)


@lowers("Min")
def lower_min(ctx: LoweringContext, node: ir.Node) -> None:
    """``Min(x1, ..., xn)`` -> MINIMUM chain (broadcasting)."""
    _binary("MINIMUM", ctx, node)


@lowers("Sum")
def lower_sum(ctx: LoweringContext, node: ir.Node) -> None:
    """``Sum(x1, ..., xn)`` -> ADD chain, left to right (ONNX's reference order)."""
    _binary("ADD", ctx, node)


@lowers("Mean")
def lower_mean(ctx: LoweringContext, node: ir.Node) -> None:
    """``Mean(x1, ..., xn)`` -> ADD chain, then DIV by n (the reference divides the sum too)."""
    values = _inputs(node)
    _nary("ADD", ctx, node, values, then_div=float(len(values)))
