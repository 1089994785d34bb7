"""BitLinear hub nodes -> TFLite ``FULLY_CONNECTED``.

* static activations -> **full-integer** FC: int8 input (the recorded calibration's scale and
  zero point), int8/INT4/INT2 weights (ternary stays -1..1) with per-channel scales on axis 0
  (zero point 0), int32 bias at scale ``s_in * s_w[c]``, int8 output. Between BitNet layers the
  graph stays int8 (see :func:`_output_quant`); QUANTIZE/DEQUANTIZE appear only at float
  boundaries.
* dynamic per-token activations -> **hybrid** FC (float in, int8/INT4/INT2 weights, float out,
  ``asymmetric_quantize_inputs=False``): LiteRT's builtin and reference FC kernels then quantize
  each input row symmetrically with ``absmax / 127`` and round ``x * 127 / absmax``, which is
  exactly BitNet's per-token 8-bit quantization. XNNPACK also takes this node but always
  quantizes rows asymmetrically (FIELD_NOTES): the LiteRT adapters run hybrid files on the
  builtin kernel on purpose.
* dynamic, ``activation_quant="graph"`` -> BitNet's per-token quantization as graph ops
  (ABS, REDUCE_MAX, MAXIMUM eps, DIV, MUL, ROUND), a hybrid FC of the integer codes with unit
  weight scales (the exact integer accumulator: on the builtin kernel the codes re-quantize to
  themselves, a float FC sums integers below 2^24 exactly), then ``acc * ((m / qmax) * s_w)``:
  the reference's op order. For GPU delegates, which dequantize hybrid weights and compute in
  float without quantizing activations.
* dynamic, ``activation_quant="xnnpack"`` -> the ``graph`` form with two constant columns
  ``-128, 127`` appended to every code row (and two zero weight columns). XNNPACK quantizes
  each FC input row asymmetrically from its min and max: with the row's range exactly
  ``[-128, 127]`` its scale is 255/255 = 1 and its zero point 0, so the codes quantize to
  themselves and its int8/INT4 kernels sum BitNet's integer products exactly (0 difference,
  measured on the same rows where the plain form is off by ~27). The builtin kernel quantizes
  the padded row with absmax 128: not exact there (the LiteRT loops refuse that pairing). GPU
  delegates compute the FC in float: exact as for ``graph``. Needs static shapes (the pad is a
  constant).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import Int8Alias, LoweringContext
from bitnet_export.backends.tflite.flatbuffer import Quant
from bitnet_export.backends.tflite.registry import lowers
from bitnet_export.capture.bitlinear_op import DOMAIN, OP_TYPE, is_bitlinear, read_bitlinear
from bitnet_export.errors import ExportError
from bitnet_export.quant.params import LayerQuantParams

__all__ = ["lower_bitlinear"]

#: FULLY_CONNECTED versions by weight type (LiteRT 2.3 registers 1..14).
_FC_VERSION: Final = {"float": 1, "int8": 7, "hybrid": 9, "int4": 13, "int2": 14}


def _codes_and_scales(p: LayerQuantParams) -> tuple[np.ndarray, np.ndarray]:
    """The weight codes and one positive float64 scale per output row.

    A row whose scale is 0 (a binary or ternary layer with an all-zero row: ``mean|w| = 0``)
    contributes nothing; TFLite's per-channel quantization requires ``scale > 0`` (XNNPACK and
    the compiled CPU model refuse to load a zero scale), so such a row is written as codes 0 at
    scale 1: the same zero product, exactly.
    """
    scales = np.broadcast_to(np.asarray(p.weight.scale, np.float64).reshape(-1), (p.out_features,)).copy()
    zero = ~(scales > 0)
    codes = p.weight.values
    if zero.any():
        codes = codes.copy()
        codes[zero] = 0
        scales[zero] = 1.0
    return codes, scales


def _weights(ctx: LoweringContext, node: ir.Node, p: LayerQuantParams, pad: int = 0) -> int:
    """The quantized weight constant; ``pad`` zero columns appended (see :func:`_eps_floored`)."""
    codes, s = _codes_and_scales(p)
    if p.weight.granularity != "per_channel" and np.all(s == s[0]):
        s = s[:1]
    if pad:
        codes = np.concatenate([codes, np.zeros((p.out_features, pad), codes.dtype)], axis=1)
    scales = [float(v) for v in s]
    q = Quant(scales, [0] * len(scales), axis=0)
    return ctx.builder.add_constant(ctx.name(node, "weight_q"), codes, dtype=ctx.weights, quant=q)


def _single_consumer(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def _output_quant(node: ir.Node, p: LayerQuantParams) -> tuple[float, int, bool]:
    """The int8 output's (scale, zero point) and whether it stays in an int8 chain.

    When the output feeds exactly one static BitLinear (directly or through one Relu), the FC
    requantizes straight to that layer's input scale and zero point, so the chain stays int8
    with a single rounding (ReLU commutes with quantization). Otherwise: the recorded range of
    this layer's own output (calibration), then DEQUANTIZE at the float boundary.
    """
    nxt = _single_consumer(node.outputs[0])
    if nxt is not None and nxt.op_type == "Relu" and nxt.domain == "":
        nxt = _single_consumer(nxt.outputs[0])
    if nxt is not None and is_bitlinear(nxt):
        q = read_bitlinear(nxt).input
        if q.mode == "static" and q.scale is not None and q.zero_point is not None:
            return q.scale, q.zero_point, True
    assert p.output is not None and p.output.scale is not None and p.output.zero_point is not None
    return p.output.scale, p.output.zero_point, False


_INT32_MAX: Final = 2**31 - 1


def _check_int32_accumulator(p: LayerQuantParams, bq: np.ndarray, bias_scale: np.ndarray) -> None:
    """Refuse a bias the int8 FC's int32 accumulator cannot hold.

    TFLite adds the int32 bias ``round(b / (s_in * s_w[c]))`` to ``sum((q_x - zp) * q_w)``
    (``|q_x - zp| <= 255``) in int32. With a tiny input scale (inputs calibrated near 1e-6: the
    range is floored at ``eps``, ``s_in = 1e-5 / 255 = 3.9e-8``) a bias of 0.2 needs 2.5e9 > 2^31:
    clipping it (as this lowering did) made every output the saturated bias (239 LSB off,
    cosine -0.03), and no runtime can represent the exact value. Refused, with the ``eps`` that
    would fit.
    """
    assert p.input.scale is not None
    wmax = float(np.abs(p.weight.values).max()) if p.weight.values.size else 0.0
    headroom = _INT32_MAX - p.in_features * 255 * wmax
    worst = float(np.abs(bq).max()) if bq.size else 0.0
    if worst <= headroom:
        return
    # s_in >= |b_c| / (s_w[c] * headroom) for every channel; the range floor eps gives s_in = eps / levels
    s_w = bias_scale.astype(np.float64) / np.float64(p.input.scale)
    need = float(np.max(np.abs(p.bias.astype(np.float64)) / (s_w * max(headroom, 1.0))))  # type: ignore[union-attr]
    levels = p.input.qmax if p.input.symmetric else p.input.qmax - p.input.qmin
    eps_fit = need * levels * 1.01
    raise ExportError(
        f"tflite: layer {p.module_path!r} (BitNetLayer), op FULLY_CONNECTED (full-integer int8): "
        f"the input scale {p.input.scale:.3g} (calibrated range [{p.input.observed_min:.3g}, "
        f"{p.input.observed_max:.3g}], floored at eps={p.input.eps:g}) makes the int32 bias "
        f"round(bias / (s_in * s_w)) reach {worst:.3g}, beyond the int32 accumulator "
        f"(2^31 - 1 - {p.in_features} * 255 * {wmax:g} = {headroom:.3g}); TFLite cannot represent this "
        f"layer exactly. Fix: raise the layer's eps to at least {eps_fit:.3g} "
        "(`layer.eps = ...`, then re-calibrate), or rescale the inputs so that they are calibrated "
        "on a larger range, or use activation_mode='dynamic' for this layer"
    )


def _full_integer(ctx: LoweringContext, node: ir.Node, p: LayerQuantParams) -> None:
    a = p.input
    assert a.scale is not None and a.zero_point is not None and node.inputs[0] is not None
    # activation_bits=8 and the weight storage are checked by the pre-flight (convert.py)
    x = ctx.int8_tensor(node.inputs[0], a.scale, a.zero_point, node)
    w = _weights(ctx, node, p)
    s_w = _codes_and_scales(p)[1]
    bias_scale = (np.float32(a.scale) * s_w.astype(np.float32)).astype(np.float32)
    bias = -1
    if p.bias is not None:
        # int32 bias at scale s_in * s_w[c], zero point 0 (TFLite's int8 FC contract)
        bq64 = np.rint(p.bias.astype(np.float64) / bias_scale)
        _check_int32_accumulator(p, bq64, bias_scale)
        bq = bq64.astype(np.int32)
        # the bias' quantization mirrors the filter's: one scale for a per-tensor filter (LiteRT
        # reads a multi-scale bias as scale 0 and fails its bias-scale check otherwise)
        n = p.out_features if p.weight.granularity == "per_channel" else 1
        q = Quant([float(s) for s in bias_scale[:n]], [0] * n, axis=0)
        bias = ctx.builder.add_constant(ctx.name(node, "bias_q"), bq, dtype="int32", quant=q)
    out_scale, out_zp, chained = _output_quant(node, p)
    if not chained:  # requantized to its own range, then dequantized: the reference does it too
        ctx.requantized[p.module_path] = (out_scale, out_zp)
    out_value = node.outputs[0]
    # a Relu right after (sole consumer) is fused into the FC: clamping the int8 output at
    # its zero point is exactly ReLU, and XNNPACK takes a fused activation but not a
    # standalone int8 RELU
    relu = _single_consumer(out_value)
    fuse = relu is not None and relu.op_type == "Relu" and relu.domain == ""
    dims, sig = ctx.shape(out_value)
    out = ctx.builder.add_tensor(
        ctx.name(node, "output_int8"), dims, "int8", Quant([out_scale], [out_zp]), sig
    )
    ctx.builder.add_op(
        "FULLY_CONNECTED",
        [x, w, bias],
        [out],
        fusedActivationFunction=1 if fuse else 0,  # 1 = RELU
        keepNumDims=len(dims) > 2,
        _version=_FC_VERSION["int8" if ctx.weights == "int8" else ctx.weights],
    )
    if fuse:
        assert relu is not None
        ctx.fused.add(id(relu))
        ctx.int8[id(relu.outputs[0])] = Int8Alias(out, out_scale, out_zp)
    else:
        ctx.int8[id(out_value)] = Int8Alias(out, out_scale, out_zp)


#: columns appended to every hybrid FC input row to carry BitNet's ``eps`` floor (see
#: :func:`_eps_floored`); 4 keeps the row length's alignment (and INT4/INT2 packing) as it was
EPS_PAD: Final = 4


def _eps_floored(ctx: LoweringContext, node: ir.Node, p: LayerQuantParams, x: int) -> int:
    """``x`` with :data:`EPS_PAD` columns appended whose values ``v`` satisfy
    ``eps <= v <= max(max|x_row|, eps)``.

    The builtin/reference hybrid kernel quantizes a row with ``absmax / 127`` and has no floor;
    BitNet uses ``max(absmax, eps)``. A row with ``0 < absmax < eps`` (tiny activations) is then
    quantized on a finer grid than the reference (measured 2.9e-2 relative at max|x| = 1e-6, no
    bias). With the pad, the row's absmax *is* ``max(absmax, eps)``; the pad's weight columns are
    zero, so it adds nothing to the integer accumulator: the kernel computes BitNet's maths
    exactly. Rows with ``absmax >= eps`` keep their range, so their result is unchanged.
    Static shapes: a constant ``eps`` block; a free dim: ``MAXIMUM(max(x_row), eps)``
    (``max(x_row) <= max|x_row|``; REDUCE_MAX, unlike SLICE, is delegated by XNNPACK).
    """
    b = ctx.builder
    assert node.inputs[0] is not None
    dims, sig = ctx.shape(node.inputs[0])
    eps = np.float32(p.input.eps)
    pad_dims = [*dims[:-1], EPS_PAD]
    if all(d >= 0 for d in sig):
        parts = [b.add_constant(ctx.name(node, "eps_pad"), np.full(pad_dims, eps, np.float32))]
    else:
        row_max = b.add_tensor(
            ctx.name(node, "row_max"), [*dims[:-1], 1], "float32", shape_signature=[*sig[:-1], 1]
        )
        axis = b.add_constant(ctx.name(node, "eps_axis"), np.asarray([len(dims) - 1], np.int32))
        b.add_op("REDUCE_MAX", [x, axis], [row_max], keepDims=True)
        col = b.add_tensor(
            ctx.name(node, "eps_column"), [*dims[:-1], 1], "float32", shape_signature=[*sig[:-1], 1]
        )
        b.add_op(
            "MAXIMUM", [row_max, b.add_constant(ctx.name(node, "eps"), np.asarray([eps], np.float32))], [col]
        )
        parts = [col] * EPS_PAD
    out = b.add_tensor(
        ctx.name(node, "input_eps_padded"),
        [*dims[:-1], dims[-1] + EPS_PAD],
        "float32",
        shape_signature=[*sig[:-1], dims[-1] + EPS_PAD],
    )
    b.add_op("CONCATENATION", [x, *parts], [out], axis=len(dims) - 1, fusedActivationFunction=0)
    return out


def _hybrid(ctx: LoweringContext, node: ir.Node, p: LayerQuantParams) -> None:
    assert node.inputs[0] is not None
    x = _eps_floored(ctx, node, p, ctx.float_tensor(node.inputs[0], node))
    w = _weights(ctx, node, p, pad=EPS_PAD)
    bias = -1
    if p.bias is not None:
        bias = ctx.builder.add_constant(ctx.name(node, "bias"), p.bias.astype(np.float32))
    out = ctx.new_float(node.outputs[0], ctx.name(node, "output"))
    dims, _ = ctx.shape(node.outputs[0])
    ctx.builder.add_op(
        "FULLY_CONNECTED",
        [x, w, bias],
        [out],
        fusedActivationFunction=0,
        keepNumDims=len(dims) > 2,
        # the builtin kernel's per-row symmetric absmax/127 quantization is BitNet's per-token one
        asymmetricQuantizeInputs=False,
        _version=_FC_VERSION["hybrid" if ctx.weights == "int8" else ctx.weights],
    )


#: appended to every code row by ``activation_quant="xnnpack"``: XNNPACK's row range becomes
#: exactly [-128, 127], its quantization scale 1 and zero point 0
XNNPACK_PAD: Final = (-128.0, 127.0)


def _graph_quantized(ctx: LoweringContext, node: ir.Node, p: LayerQuantParams, pad: bool = False) -> None:
    assert node.inputs[0] is not None
    b = ctx.builder
    x = ctx.float_tensor(node.inputs[0], node)
    dims, sig = ctx.shape(node.inputs[0])
    out_dims, out_sig = ctx.shape(node.outputs[0])
    row = [*dims[:-1], 1]
    row_sig = [*sig[:-1], 1]
    qmax = float(2 ** (p.input.bits - 1) - 1)

    def t(role: str, shape: list[int], signature: list[int]) -> int:
        return b.add_tensor(ctx.name(node, role), shape, "float32", shape_signature=signature)

    def const(role: str, value: np.ndarray) -> int:
        return b.add_constant(ctx.name(node, role), value.astype(np.float32))

    absx, m0, m, gamma, scaled, codes = (
        t("abs", dims, sig),
        t("absmax", row, row_sig),
        t("absmax_eps", row, row_sig),
        t("gamma", row, row_sig),
        t("scaled", dims, sig),
        t("codes", dims, sig),
    )
    b.add_op("ABS", [x], [absx])
    axis = b.add_constant(ctx.name(node, "last_axis"), np.asarray([len(dims) - 1], np.int32))
    b.add_op("REDUCE_MAX", [absx, axis], [m0], keepDims=True)
    b.add_op("MAXIMUM", [m0, const("eps", np.asarray([p.input.eps]))], [m])
    q = const("qmax", np.asarray([qmax]))
    b.add_op("DIV", [q, m], [gamma], fusedActivationFunction=0)  # a true division, as the reference
    b.add_op("MUL", [x, gamma], [scaled], fusedActivationFunction=0)
    b.add_op("ROUND", [scaled], [codes])  # half to even, as torch.round
    w_codes = p.weight.values
    if pad:
        if any(d < 0 for d in sig):
            raise ExportError(
                f"tflite: layer {p.module_path!r} (BitNetLayer): activation_quant='xnnpack' pads "
                f"each code row with a constant and needs static shapes, got {sig}; export with "
                "static shapes or use activation_quant='kernel'"
            )
        pad_value = np.broadcast_to(np.asarray(XNNPACK_PAD, np.float32), (*dims[:-1], len(XNNPACK_PAD)))
        padded = t("codes_padded", [*dims[:-1], dims[-1] + len(XNNPACK_PAD)], [*sig[:-1], dims[-1] + 2])
        b.add_op(
            "CONCATENATION",
            [codes, const("xnnpack_pad", np.ascontiguousarray(pad_value))],
            [padded],
            axis=len(dims) - 1,
            fusedActivationFunction=0,
        )
        codes = padded
        zeros = np.zeros((w_codes.shape[0], len(XNNPACK_PAD)), w_codes.dtype)
        w_codes = np.concatenate([w_codes, zeros], axis=1)
    unit = Quant([1.0] * p.out_features, [0] * p.out_features, axis=0)
    w = b.add_constant(ctx.name(node, "weight_codes"), w_codes, dtype=ctx.weights, quant=unit)
    acc, row_scale, rescale = (
        t("acc", out_dims, out_sig),
        t("row_scale", row, row_sig),
        t("rescale", out_dims, out_sig),
    )
    b.add_op(
        "FULLY_CONNECTED",
        [codes, w, -1],
        [acc],
        fusedActivationFunction=0,
        keepNumDims=len(out_dims) > 2,
        asymmetricQuantizeInputs=False,
        _version=_FC_VERSION["hybrid" if ctx.weights == "int8" else ctx.weights],
    )
    b.add_op("DIV", [m, q], [row_scale], fusedActivationFunction=0)
    s_w = np.broadcast_to(p.weight.scale.astype(np.float32), (p.out_features,))
    b.add_op("MUL", [row_scale, const("weight_scale", s_w)], [rescale], fusedActivationFunction=0)
    out = ctx.new_float(node.outputs[0], ctx.name(node, "output"))
    if p.bias is None:
        b.add_op("MUL", [acc, rescale], [out], fusedActivationFunction=0)
        return
    y = t("unbiased", out_dims, out_sig)
    b.add_op("MUL", [acc, rescale], [y], fusedActivationFunction=0)
    b.add_op("ADD", [y, const("bias", p.bias)], [out], fusedActivationFunction=0)


@lowers(OP_TYPE, DOMAIN)
def lower_bitlinear(ctx: LoweringContext, node: ir.Node) -> None:
    """``bitnet_export.BitLinear(x, weight_q, weight_scale[, bias])`` -> FULLY_CONNECTED."""
    p = read_bitlinear(node)
    if p.input.mode == "static":
        _full_integer(ctx, node, p)
    elif ctx.activation_quant in ("graph", "xnnpack"):
        _graph_quantized(ctx, node, p, pad=ctx.activation_quant == "xnnpack")
    else:
        _hybrid(ctx, node, p)
