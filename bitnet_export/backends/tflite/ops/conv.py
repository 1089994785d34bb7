"""Convolutions and batch normalization -> TFLite builtins, computed in NHWC.

* ``Conv`` (1-D, 2-D): groups = 1 -> CONV_2D; groups = C_in -> DEPTHWISE_CONV_2D (depth
  multiplier M / C_in); other groups -> SPLIT + one CONV_2D per group + CONCATENATION (exact:
  the groups are independent convolutions). Filters ``[M, C/g, kH, kW]`` become ``[M, kH, kW,
  C/g]`` (depthwise: ``[1, kH, kW, M]``), transposed at export when constant, by a TRANSPOSE
  when they are runtime values.
* ``ConvTranspose`` (1-D, 2-D; groups by SPLIT + CONCATENATION; dilation by a zero-dilated
  kernel, exact: built at export, or by a 0/1 FULLY_CONNECTED for a runtime kernel) ->
  TRANSPOSE_CONV with VALID padding (the full ``(in - 1) * s + k`` output); the ONNX output
  window is then cut out by SLICE (pads) and PAD (output_padding past the full output is
  zeros), and the bias ADDed (it applies to the padded border too, as in ONNX).
* ``BatchNormalization`` (inference) -> MUL + ADD per channel in the input's layout. A Conv ->
  BN pair folds into the conv with :mod:`bitnet_export.passes.fold_batchnorm` (torch's exporter
  already folds eval-mode Conv2d -> BatchNorm2d itself; a BN after a ReLU stays a BN).

Numerics: float32 accumulation in TFLite's kernels, in another order than ONNX's reference
(a few ulps on long reductions).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, Perm, node_input
from bitnet_export.backends.tflite.ops._spatial import (
    check_spatial_input,
    explicit_pad,
    spatial_dims,
    spatial_input,
    spatial_output,
    tflite_padding,
    window,
)
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []

_PADDING = {"SAME": 0, "VALID": 1}  # schema.Padding


def _group(node: ir.Node) -> int:
    attr = node.attributes.get("group")
    return attr.as_int() if attr is not None else 1


def _static(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    ints = [d for d in value.shape if isinstance(d, int)]
    return ints if len(ints) == len(value.shape) else None


def _check_conv(node: ir.Node) -> str | None:
    problem = check_spatial_input(node)
    if problem:
        return problem
    x = node_input(node, 0)
    w = _static(node.inputs[1] if len(node.inputs) > 1 else None)
    if w is None or len(w) != len(x.shape or ()):
        return "Conv needs a weight of static shape and the input's rank"
    if spatial_dims(node.outputs[0]) is None:
        return "Conv needs a static output shape (spatial dims); export with a static shape"
    assert x.shape is not None  # check_spatial_input: known, static C
    c, g = x.shape[1], _group(node)
    if not isinstance(c, int):
        return "Conv needs a static channel dim"

    if g < 1 or c % g or w[0] % g or w[1] * g != c:
        return f"Conv group={g} does not divide C_in={c} / M={w[0]} as ONNX requires"
    return None


def _filter(ctx: LoweringContext, node: ir.Node, w_val: ir.Value, perm: Perm) -> int:
    """The filter ``w_val`` (ONNX ``[a, b, *k]``) as 4-D ``transpose([a, b, kH, kW], perm)``.

    1-D filters ``[a, b, k]`` get kH = 1 first. A constant is transposed at export.
    """
    shape = _static(w_val)
    assert shape is not None
    if len(shape) == 4:
        return ctx.tensor(w_val, node, perm)
    four = [shape[0], shape[1], 1, shape[2]]
    if w_val.const_value is not None:
        arr = w_val.const_value.numpy().astype(np.float32).reshape(four)
        return ctx.builder.add_constant(ctx.name(node, "filter"), np.transpose(arr, perm).copy())
    b = ctx.builder
    src = ctx.tensor(w_val, node)
    as4 = b.add_tensor(ctx.name(node, "filter_4d"), four, "float32")
    b.add_op(
        "RESHAPE", [src, b.add_constant(ctx.name(node, "filter_shape"), np.array(four, np.int32))], [as4]
    )
    out = b.add_tensor(ctx.name(node, "filter"), [four[i] for i in perm], "float32")
    b.add_op(
        "TRANSPOSE", [as4, b.add_constant(ctx.name(node, "filter_perm"), np.array(perm, np.int32))], [out]
    )
    return out


def _bias(ctx: LoweringContext, node: ir.Node, m: int) -> int:
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    if b_val is None:  # TFLite's float kernels take a bias; zeros add nothing
        return ctx.builder.add_constant(ctx.name(node, "bias"), np.zeros(m, np.float32))
    return ctx.tensor(b_val, node)


def _split(
    ctx: LoweringContext, node: ir.Node, x: int, dims: list[int], axis: int, parts: int, role: str
) -> list[int]:
    """SPLIT tensor ``x`` (shape ``dims``) into ``parts`` equal pieces along ``axis``."""
    b = ctx.builder
    piece = list(dims)
    piece[axis] //= parts
    sig = list(dims)
    sig[axis] //= parts
    outs = [b.add_tensor(ctx.name(node, f"{role}_{i}"), piece, "float32") for i in range(parts)]
    ax = b.add_constant(ctx.name(node, f"{role}_axis"), np.array(axis, np.int32))
    b.add_op("SPLIT", [ax, x], outs, name=node.name, numSplits=parts)
    return outs


@lowers("Conv", check=_check_conv)
def lower_conv(ctx: LoweringContext, node: ir.Node) -> None:
    """``Conv(X, W[, B], group, strides, dilations, pads | auto_pad)``, 1-D or 2-D, in NHWC."""
    w_val = node_input(node, 1)
    w_shape = _static(w_val)
    assert w_shape is not None
    m, cg = w_shape[0], w_shape[1]
    x, nhwc, sig = spatial_input(ctx, node)
    out, out_nhwc, finish = spatial_output(ctx, node)
    win = window(node, nhwc[1:3] if len(w_shape) == 4 else nhwc[2:3], w_shape[2:])
    padding = tflite_padding(win, nhwc[1:3], out_nhwc[1:3])
    if padding is None:  # asymmetric or non-SAME pads: zeros first, then VALID
        x, nhwc = explicit_pad(ctx, node, x, nhwc, sig, win.pads_begin, win.pads_end)
        padding = "VALID"
    opts = {
        "padding": _PADDING[padding],
        "strideH": win.strides[0],
        "strideW": win.strides[1],
        "dilationHFactor": win.dilations[0],
        "dilationWFactor": win.dilations[1],
        "fusedActivationFunction": 0,
    }
    c, g = nhwc[3], _group(node)
    b = ctx.builder
    if g == 1:
        filt = _filter(ctx, node, w_val, (0, 2, 3, 1))  # [M, kH, kW, C]
        b.add_op("CONV_2D", [x, filt, _bias(ctx, node, m)], [out], name=node.name, **opts)
    elif g == c:  # depthwise: output channel o reads input channel o // multiplier, as in ONNX
        filt = _filter(ctx, node, w_val, (1, 2, 3, 0))  # [1, kH, kW, M]
        b.add_op(
            "DEPTHWISE_CONV_2D",
            [x, filt, _bias(ctx, node, m)],
            [out],
            name=node.name,
            depthMultiplier=m // c,
            **opts,
        )
    else:  # g independent convolutions over C/g input channels each, outputs concatenated
        filt = _filter(ctx, node, w_val, (0, 2, 3, 1))
        kh, kw = (w_shape[2], w_shape[3]) if len(w_shape) == 4 else (1, w_shape[2])
        xs = _split(ctx, node, x, nhwc, 3, g, "group_input")
        fs = _split(ctx, node, filt, [m, kh, kw, cg], 0, g, "group_filter")
        bs = _split(ctx, node, _bias(ctx, node, m), [m], 0, g, "group_bias")
        part = [out_nhwc[0], out_nhwc[1], out_nhwc[2], m // g]
        outs = []
        for i in range(g):
            o = b.add_tensor(ctx.name(node, f"group_output_{i}"), part, "float32")
            b.add_op("CONV_2D", [xs[i], fs[i], bs[i]], [o], name=node.name, **opts)
            outs.append(o)
        b.add_op("CONCATENATION", outs, [out], name=node.name, axis=3, fusedActivationFunction=0)
    finish()


# ---------------------------------------------------------------------------- ConvTranspose


def _check_conv_transpose(node: ir.Node) -> str | None:
    problem = check_spatial_input(node)
    if problem:
        return problem
    x = node_input(node, 0)
    assert x.shape is not None
    c, g = x.shape[1], _group(node)
    if not isinstance(c, int) or g < 1 or c % g:
        return f"ConvTranspose group={g} does not divide C_in={c}"
    w = _static(node.inputs[1] if len(node.inputs) > 1 else None)
    if w is None or len(w) != len(x.shape):
        return "ConvTranspose needs a weight of static shape and the input's rank"
    if spatial_dims(node.outputs[0]) is None:
        return "ConvTranspose needs a static output shape; export with a static shape"
    return None


def _dilate_runtime_filter(
    ctx: LoweringContext, node: ir.Node, w_val: ir.Value, w_shape: list[int], k_eff: list[int], dil: list[int]
) -> int:
    """A runtime ConvTranspose kernel ``[C, M/g, k...]`` dilated to ``[M/g, kH', kW', C]``.

    Zero insertion is a linear map of the flattened taps: FULLY_CONNECTED with a constant 0/1
    matrix (one 1 per output tap: exact copies), then a TRANSPOSE to TRANSPOSE_CONV's layout.
    """
    b = ctx.builder
    c, mg = w_shape[0], w_shape[1]
    k = [1, w_shape[2]] if len(w_shape) == 3 else w_shape[2:]
    taps = np.zeros((k_eff[0] * k_eff[1], k[0] * k[1]), np.float32)
    for i in range(k[0]):
        for j in range(k[1]):
            taps[i * dil[0] * k_eff[1] + j * dil[1], i * k[1] + j] = 1.0
    flat = b.add_tensor(ctx.name(node, "filter_taps"), [c * mg, k[0] * k[1]], "float32")
    shape = b.add_constant(ctx.name(node, "filter_taps_shape"), np.array([c * mg, k[0] * k[1]], np.int32))
    b.add_op("RESHAPE", [ctx.tensor(w_val, node), shape], [flat], name=node.name)
    spread = b.add_tensor(ctx.name(node, "filter_dilated_taps"), [c * mg, taps.shape[0]], "float32")
    m = b.add_constant(ctx.name(node, "dilation_taps"), taps)
    b.add_op("FULLY_CONNECTED", [flat, m, -1], [spread], name=node.name, fusedActivationFunction=0)
    four = [c, mg, k_eff[0], k_eff[1]]
    as4 = b.add_tensor(ctx.name(node, "filter_dilated_4d"), four, "float32")
    b.add_op(
        "RESHAPE",
        [spread, b.add_constant(ctx.name(node, "filter_4d_shape"), np.array(four, np.int32))],
        [as4],
    )
    out = b.add_tensor(ctx.name(node, "filter_dilated"), [mg, k_eff[0], k_eff[1], c], "float32")
    perm = b.add_constant(ctx.name(node, "filter_perm"), np.array([1, 2, 3, 0], np.int32))
    b.add_op("TRANSPOSE", [as4, perm], [out], name=node.name)
    return out


def _transpose_offsets(node: ir.Node, in_sp: list[int], k: list[int], out_sp: list[int]) -> list[int]:
    """Where ONNX's output window starts inside the full ``(in - 1) * s + k`` output, per axis.

    ONNX: with ``output_shape`` (or SAME auto_pad) the total padding is
    ``s * (in - 1) + output_padding + k - out``, its start half ``total // 2`` for SAME_UPPER
    and ``total - total // 2`` otherwise; with explicit pads the start is ``pads_begin``.
    """
    n = len(in_sp)
    strides = (
        [int(v) for v in node.attributes["strides"].as_ints()] if "strides" in node.attributes else [1] * n
    )
    opad_attr = node.attributes.get("output_padding")
    opad = [int(v) for v in opad_attr.as_ints()] if opad_attr is not None else [0] * n
    auto_attr = node.attributes.get("auto_pad")
    auto = auto_attr.as_string() if auto_attr is not None else "NOTSET"
    if "output_shape" in node.attributes or auto in ("SAME_UPPER", "SAME_LOWER"):
        offsets = []
        for i in range(n):
            total = strides[i] * (in_sp[i] - 1) + opad[i] + k[i] - out_sp[i]
            offsets.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return offsets
    if auto == "VALID":
        return [0] * n
    pads_attr = node.attributes.get("pads")
    return [int(v) for v in pads_attr.as_ints()][:n] if pads_attr is not None else [0] * n


@lowers("ConvTranspose", check=_check_conv_transpose)
def lower_conv_transpose(ctx: LoweringContext, node: ir.Node) -> None:
    """``ConvTranspose(X, W[, B], strides, pads | output_shape | auto_pad, output_padding)``."""
    x_val, w_val = node_input(node, 0), node_input(node, 1)
    w_shape = _static(w_val)
    assert w_shape is not None
    g = _group(node)
    m = w_shape[1] * g
    x, nhwc, _ = spatial_input(ctx, node)
    out, out_nhwc, finish = spatial_output(ctx, node)
    one_d = len(w_shape) == 3
    n_sp = len(w_shape) - 2
    strides_attr, dil_attr = node.attributes.get("strides"), node.attributes.get("dilations")
    strides = [int(v) for v in strides_attr.as_ints()] if strides_attr is not None else [1] * n_sp
    dil = [int(v) for v in dil_attr.as_ints()] if dil_attr is not None else [1] * n_sp
    k_eff = [(k - 1) * d + 1 for k, d in zip(w_shape[2:], dil, strict=True)]
    offsets = _transpose_offsets(
        node, nhwc[2:3] if one_d else nhwc[1:3], k_eff, out_nhwc[2:3] if one_d else out_nhwc[1:3]
    )
    if one_d:
        strides, offsets, k_eff, dil = [1, *strides], [0, *offsets], [1, *k_eff], [1, *dil]
    full = [(nhwc[1 + i] - 1) * strides[i] + k_eff[i] for i in range(2)]
    b = ctx.builder
    if any(d != 1 for d in dil) and w_val.const_value is not None:
        # a dilated kernel is the kernel with d-1 zeros between taps: built at export
        w = w_val.const_value.numpy().astype(np.float32)
        w = w.reshape(w_shape[0], w_shape[1], 1, w_shape[2]) if one_d else w
        dilated = np.zeros((*w.shape[:2], k_eff[0], k_eff[1]), np.float32)
        dilated[:, :, :: dil[0], :: dil[1]] = w
        filt = b.add_constant(ctx.name(node, "filter_dilated"), np.transpose(dilated, (1, 2, 3, 0)).copy())
    elif any(d != 1 for d in dil):
        filt = _dilate_runtime_filter(ctx, node, w_val, w_shape, k_eff, dil)
    else:
        filt = _filter(ctx, node, w_val, (1, 2, 3, 0))  # [M/g, kH, kW, C_in]
    full_dims = [nhwc[0], full[0], full[1], m]
    b_val = node.inputs[2] if len(node.inputs) > 2 else None
    want = out_nhwc[1:3]
    pre = [max(0, -offsets[i]) for i in range(2)]
    post = [max(0, offsets[i] + want[i] - full[i]) for i in range(2)]
    needs_slice = [offsets[i] + pre[i] != 0 or full[i] + pre[i] + post[i] != want[i] for i in range(2)]
    steps = (any(pre) or any(post)) + any(needs_slice) + (b_val is not None)
    symbolic = not isinstance((x_val.shape or [0])[0], int)

    def stage(role: str, dims: list[int]) -> int:
        nonlocal steps
        steps -= 1
        sig = [-1 if symbolic else dims[0], *dims[1:]]
        return out if steps < 0 else b.add_tensor(ctx.name(node, role), dims, "float32", shape_signature=sig)

    cur_dims = full_dims
    cur = stage("full_output", cur_dims)
    opts = {"padding": _PADDING["VALID"], "strideH": strides[0], "strideW": strides[1]}

    def output_shape(channels: int) -> int:
        """TRANSPOSE_CONV's output shape: a constant, or the batch read at run time."""
        hwc = [full_dims[1], full_dims[2], channels]
        if not symbolic:
            return b.add_constant(ctx.name(node, "output_shape"), np.array([full_dims[0], *hwc], np.int32))
        shp = b.add_tensor(ctx.name(node, "input_shape"), [4], "int32")
        b.add_op("SHAPE", [x], [shp], name=node.name, outType=2)  # INT32
        n = b.add_tensor(ctx.name(node, "batch"), [1], "int32")
        begin = b.add_constant(ctx.name(node, "batch_begin"), np.array([0], np.int32))
        b.add_op(
            "SLICE", [shp, begin, b.add_constant(ctx.name(node, "batch_size"), np.array([1], np.int32))], [n]
        )
        out_shape = b.add_tensor(ctx.name(node, "output_shape"), [4], "int32")
        rest = b.add_constant(ctx.name(node, "output_hwc"), np.array(hwc, np.int32))
        b.add_op("CONCATENATION", [n, rest], [out_shape], axis=0, fusedActivationFunction=0)
        return out_shape

    if g == 1:
        b.add_op("TRANSPOSE_CONV", [output_shape(m), filt, x], [cur], name=node.name, **opts)
    else:  # g independent transposed convolutions, outputs concatenated on channels
        k_hw = [b.tensors[filt].shape[1], b.tensors[filt].shape[2]]
        xs = _split(ctx, node, x, nhwc, 3, g, "group_input")
        fs = _split(ctx, node, filt, [m // g, *k_hw, nhwc[3]], 3, g, "group_filter")
        part = [*full_dims[:3], m // g]
        shape = output_shape(m // g)
        outs = []
        for i in range(g):
            o = b.add_tensor(ctx.name(node, f"group_output_{i}"), part, "float32")
            b.add_op("TRANSPOSE_CONV", [shape, fs[i], xs[i]], [o], name=node.name, **opts)
            outs.append(o)
        b.add_op("CONCATENATION", outs, [cur], name=node.name, axis=3, fusedActivationFunction=0)
    if any(pre) or any(post):  # output_padding past the full output: zeros, as in ONNX
        cur_dims = [cur_dims[0], cur_dims[1] + pre[0] + post[0], cur_dims[2] + pre[1] + post[1], m]
        padded = stage("padded", cur_dims)
        pads = np.array([[0, 0], [pre[0], post[0]], [pre[1], post[1]], [0, 0]], np.int32)
        b.add_op("PAD", [cur, b.add_constant(ctx.name(node, "paddings"), pads)], [padded], name=node.name)
        cur = padded
    if any(needs_slice):  # the pads cut from the full output
        begin = np.array([0, offsets[0] + pre[0], offsets[1] + pre[1], 0], np.int32)
        size = np.array([-1, want[0], want[1], m], np.int32)
        cut = stage("cropped", [cur_dims[0], want[0], want[1], m])
        b.add_op(
            "SLICE",
            [
                cur,
                b.add_constant(ctx.name(node, "begin"), begin),
                b.add_constant(ctx.name(node, "size"), size),
            ],
            [cut],
            name=node.name,
        )
        cur = cut
    if b_val is not None:
        res = stage("biased", out_nhwc)
        b.add_op("ADD", [cur, ctx.tensor(b_val, node)], [res], name=node.name, fusedActivationFunction=0)
        cur = res
    finish()


# ---------------------------------------------------------------------------- BatchNormalization


def _check_batchnorm(node: ir.Node) -> str | None:
    mode = node.attributes.get("training_mode")
    if mode is not None and mode.as_int() != 0:
        return "BatchNormalization with training_mode=1; export the model in eval() mode"
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return "BatchNormalization's running mean/var outputs (training) have no TFLite lowering"
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None or len(x.shape) < 2 or not isinstance(x.shape[1], int):
        return "BatchNormalization needs an input of known rank >= 2 with a static channel dim"
    return None


def _per_channel(ctx: LoweringContext, node: ir.Node, idx: int, c: int, shape: list[int], role: str) -> int:
    """A ``[C]`` tensor RESHAPEd to ``shape`` (channel dim placed for broadcasting)."""
    if shape == [c]:
        return idx
    b = ctx.builder
    out = b.add_tensor(ctx.name(node, role), shape, "float32")
    b.add_op(
        "RESHAPE", [idx, b.add_constant(ctx.name(node, f"{role}_shape"), np.array(shape, np.int32))], [out]
    )
    return out


@lowers("BatchNormalization", check=_check_batchnorm)
def lower_batchnorm(ctx: LoweringContext, node: ir.Node) -> None:
    """``BatchNormalization(X, scale, B, mean, var, epsilon)`` (inference), in X's layout.

    Constant statistics: ``y = x * s + t`` with ``s = scale / sqrt(var + eps)`` and
    ``t = B - mean * s`` folded at export in float64 (two float32 roundings per element; ONNX's
    reference rounds four times: a few ulps apart). Runtime statistics: the reference's own
    order, ``(x - mean) / sqrt(var + eps) * scale + B``.
    """
    x_val = node_input(node, 0)
    params = [node_input(node, i) for i in range(1, 5)]
    eps_attr = node.attributes.get("epsilon")
    eps = eps_attr.as_float() if eps_attr is not None else 1e-5
    dims, sig = ctx.shape(x_val)
    rank, c = len(dims), dims[1]
    perm = ctx.layout(x_val)
    x = ctx.tensor(x_val, node, perm)
    # where the channel axis sits in the held layout; [C] vectors broadcast from there on
    held = list(perm) if perm is not None else list(range(rank))
    vec_shape = [c] + [1] * (rank - 1 - held.index(1))
    b = ctx.builder
    out_dims = [dims[i] for i in held]
    out_sig = [sig[i] for i in held]

    def tmp(role: str) -> int:
        return b.add_tensor(ctx.name(node, role), out_dims, "float32", shape_signature=out_sig)

    if all(p.const_value is not None for p in params):
        scale, bias, mean, var = (p.const_value.numpy().astype(np.float64) for p in params)  # type: ignore[union-attr]
        s = scale / np.sqrt(var + np.float64(np.float32(eps)))
        t = bias - mean * s
        s_i = b.add_constant(ctx.name(node, "bn_scale"), s.astype(np.float32).reshape(vec_shape))
        t_i = b.add_constant(ctx.name(node, "bn_shift"), t.astype(np.float32).reshape(vec_shape))
        scaled = tmp("scaled")
        b.add_op("MUL", [x, s_i], [scaled], name=node.name, fusedActivationFunction=0)
        out = ctx.new_tensor(node.outputs[0], perm=perm)
        b.add_op("ADD", [scaled, t_i], [out], name=node.name, fusedActivationFunction=0)
        return
    scale_i, bias_i, mean_i, var_i = (
        _per_channel(ctx, node, ctx.tensor(p, node), c, vec_shape, role)
        for p, role in zip(params, ("scale", "bias", "mean", "var"), strict=True)
    )
    var_eps = b.add_tensor(ctx.name(node, "var_eps"), vec_shape, "float32")
    std = b.add_tensor(ctx.name(node, "std"), vec_shape, "float32")
    eps_i = b.add_constant(ctx.name(node, "epsilon"), np.array(eps, np.float32))
    b.add_op("ADD", [var_i, eps_i], [var_eps], name=node.name, fusedActivationFunction=0)
    b.add_op("SQRT", [var_eps], [std], name=node.name)
    centered, normed, scaled = tmp("centered"), tmp("normalized"), tmp("scaled")
    b.add_op("SUB", [x, mean_i], [centered], name=node.name, fusedActivationFunction=0)
    b.add_op("DIV", [centered, std], [normed], name=node.name, fusedActivationFunction=0)
    b.add_op("MUL", [normed, scale_i], [scaled], name=node.name, fusedActivationFunction=0)
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    b.add_op("ADD", [scaled, bias_i], [out], name=node.name, fusedActivationFunction=0)
