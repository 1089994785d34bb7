"""Pooling -> TFLite, computed channels-last (1-D pools as 2-D over ``[N, 1, L, C]``).

* ``MaxPool`` -> MAX_POOL_2D. Padding never wins a max (ONNX and TFLite's SAME both ignore
  it); pads other than SAME's, and ``ceil_mode`` windows, become a PADV2 with -inf, then VALID.
* ``AveragePool`` -> AVERAGE_POOL_2D. TFLite's SAME divides by the number of *real* elements
  in the window, which is ONNX's ``count_include_pad=0``: SAME pads use it directly. Any other
  padding (asymmetric, ``count_include_pad=1``, ``ceil_mode``) is a zero PAD, a VALID pool
  (``sum / (kH*kW)``), then a MUL by the constant map ``kH*kW / count`` where ``count`` is
  the number of window elements ONNX divides by at each output position (real elements only,
  or real + pads; ceil_mode windows past the pads count neither). That MUL is one more float32
  rounding than ONNX's ``sum / count``: results may be 1 ulp apart.
* 3-D and dilated pools, and MaxPool's Indices (no builtin): separable per-axis STRIDED_SLICE
  taps combined with MAXIMUM / ADD (SELECT_V2 for indices), then a DIV by ONNX's count (see
  :func:`_sliced_pool`).
* ``GlobalAveragePool`` / ``GlobalMaxPool`` -> MEAN / REDUCE_MAX over the spatial axes of the
  channels-last tensor (keep_dims): the output ``[N, 1, 1, C]`` is the channels-last view of
  ONNX's ``[N, C, 1, 1]``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, channels_last, node_input
from bitnet_export.backends.tflite.ops._spatial import (
    Window,
    check_spatial_input,
    explicit_pad,
    resolve_pads,
    spatial_dims,
    spatial_input,
    spatial_output,
    tflite_padding,
    window,
)
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []

_PADDING = {"SAME": 0, "VALID": 1}  # schema.Padding


def _kernel(node: ir.Node) -> list[int]:
    return [int(v) for v in node.attributes["kernel_shape"].as_ints()]


def _check_pool(node: ir.Node) -> str | None:
    problem = check_spatial_input(node, ranks=(3, 4, 5))
    if problem:
        return problem
    if "kernel_shape" not in node.attributes:
        return f"{node.op_type} without kernel_shape is not valid ONNX"
    x = node_input(node, 0)
    if any(_used(o) for o in node.outputs[1:]) and (x.shape is None or not isinstance(x.shape[0], int)):
        return "MaxPool's Indices need a static batch (they count elements across the batch)"
    if spatial_dims(node.outputs[0]) is None:
        return f"{node.op_type} needs a static output shape; export with a static shape"
    return None


def _end_pads(w: Window, in_hw: list[int], out_hw: list[int]) -> tuple[int, int]:
    """The end pads a VALID pool needs for ``out_hw`` (ceil_mode may need more than ``pads``)."""
    return (
        max(0, (out_hw[0] - 1) * w.strides[0] + w.kernel[0] - in_hw[0] - w.pads_begin[0]),
        max(0, (out_hw[1] - 1) * w.strides[1] + w.kernel[1] - in_hw[1] - w.pads_begin[1]),
    )


def _needs_slices(node: ir.Node) -> bool:
    """Whether the pool is beyond TFLite's builtins (3-D, dilated, or MaxPool's Indices used)."""
    d = node.attributes.get("dilations")
    dilated = d is not None and any(v != 1 for v in d.as_ints())
    return len(node_input(node, 0).shape or ()) == 5 or dilated or any(_used(o) for o in node.outputs[1:])


def _pool(ctx: LoweringContext, node: ir.Node, kind: str) -> None:
    if _needs_slices(node):
        _sliced_pool(ctx, node, kind == "MAX_POOL_2D")
        return
    x, nhwc, sig = spatial_input(ctx, node)
    k = _kernel(node)
    win = window(node, nhwc[1:3] if len(k) == 2 else nhwc[2:3], k)
    out, out_nhwc, finish = spatial_output(ctx, node)
    in_hw, out_hw = nhwc[1:3], out_nhwc[1:3]
    padding = tflite_padding(win, in_hw, out_hw)
    include = node.attributes.get("count_include_pad")
    if kind == "AVERAGE_POOL_2D" and padding == "SAME" and include is not None and include.as_int():
        padding = None  # TFLite's SAME excludes the pads from the count
    explicit = padding is None
    b = ctx.builder
    pooled, scale = out, None
    if explicit:
        fill = -np.inf if kind == "MAX_POOL_2D" else 0.0
        x, nhwc = explicit_pad(ctx, node, x, nhwc, sig, win.pads_begin, _end_pads(win, in_hw, out_hw), fill)
        padding = "VALID"
        if kind == "AVERAGE_POOL_2D":
            scale = _area_over_count(win, in_hw, out_hw, bool(include is not None and include.as_int()))
        if scale is not None:
            pooled = b.add_tensor(ctx.name(node, "sum_over_area"), out_nhwc, "float32")
    assert padding is not None
    b.add_op(
        kind,
        [x],
        [pooled],
        name=node.name,
        padding=_PADDING[padding],
        strideH=win.strides[0],
        strideW=win.strides[1],
        filterHeight=win.kernel[0],
        filterWidth=win.kernel[1],
        fusedActivationFunction=0,
    )
    if scale is not None:  # sum / area -> sum / count
        s = b.add_constant(ctx.name(node, "area_over_count"), scale)
        b.add_op("MUL", [pooled, s], [out], name=node.name, fusedActivationFunction=0)
    finish()


def _area_over_count(w: Window, in_hw: list[int], out_hw: list[int], include_pad: bool) -> np.ndarray | None:
    """``area / count`` per output position (``[1, H, W, 1]``), ``None`` when it is all ones.

    ``count``: the window elements ONNX's reference averages: inside the input, or inside the
    input and its pads (``count_include_pad=1``); never the ceil_mode overhang past the pads.
    """
    factors = []
    for i in range(2):
        lo, hi = (-w.pads_begin[i], in_hw[i] + w.pads_end[i]) if include_pad else (0, in_hw[i])
        start = np.arange(out_hw[i]) * w.strides[i] - w.pads_begin[i]
        pos = start[:, None] + np.arange(w.kernel[i])[None, :]
        factors.append(((pos >= lo) & (pos < hi)).sum(axis=1))
    count = factors[0][:, None] * factors[1][None, :]
    area = w.kernel[0] * w.kernel[1]
    if np.all(count == area):
        return None
    return (area / count.astype(np.float64)).astype(np.float32).reshape(1, out_hw[0], out_hw[1], 1)


def _argmax_source(node: ir.Node, dims: list[int], perm: tuple[int, ...]) -> np.ndarray:
    """ONNX's MaxPool Indices of every input element, held channels-last (int64).

    Flat indices into the NCHW input: row-major, or with ``storage_order=1`` the spatial axes
    column-major (``(n*C + c)*H*W + w*H + h`` in 2-D).
    """
    order = node.attributes.get("storage_order")
    n, c, spatial = dims[0], dims[1], dims[2:]
    idx = np.arange(int(np.prod(dims)), dtype=np.int64).reshape(dims)
    if order is not None and order.as_int() == 1:
        col = np.arange(int(np.prod(spatial)), dtype=np.int64).reshape(spatial[::-1])
        col = np.transpose(col, tuple(range(len(spatial)))[::-1])
        idx = (
            np.arange(n * c, dtype=np.int64).reshape(n, c, *([1] * len(spatial))) * int(np.prod(spatial))
        ) + col
    return np.ascontiguousarray(np.transpose(idx, perm))


def _sliced_pool(ctx: LoweringContext, node: ir.Node, is_max: bool) -> None:
    """A pool TFLite's builtins cannot run (3-D, dilated, Indices) as per-axis reductions.

    A window is a box, so its max is the max over each axis in turn, and its sum the sum over
    each axis in turn. Per spatial axis (channels-last): pad (-inf for max, zeros for average;
    ceil_mode's overhang included), take the k strided slices ``j*d :: s`` (tap j of every
    window) and combine them with MAXIMUM / ADD. An average then divides by ONNX's count per
    output position (the product of the per-axis counts of real, or real + pad, elements), one
    float32 division as in ONNX's reference (the sums are added in another order: a few ulps).

    MaxPool's Indices ride along: a constant tensor of every element's ONNX index is sliced the
    same way and SELECTed where a tap is strictly greater. Axes are reduced last axis first, so
    ties keep the first maximum in row-major window order, as ONNX's reference does.
    """
    x_val = node_input(node, 0)
    dims, sig = ctx.shape(x_val)
    rank = len(dims)
    perm = channels_last(rank)
    b = ctx.builder
    with_indices = is_max and len(node.outputs) > 1 and _used(node.outputs[1])
    tracks = [ctx.tensor(x_val, node, perm)]
    if with_indices:
        tracks.append(b.add_constant(ctx.name(node, "element_indices"), _argmax_source(node, dims, perm)))
    types = ["float32", "int64"]
    cur_dims, cur_sig = [dims[i] for i in perm], [sig[i] for i in perm]
    k = _kernel(node)
    in_sp = cur_dims[1:-1]
    out_sp = [int(d) for d in spatial_dims(node.outputs[0]) or []]
    strides, dil, begin, end = resolve_pads(node, in_sp, k)
    counts: dict[int, np.ndarray] = {}
    include = node.attributes.get("count_include_pad")
    include_pad = include is not None and include.as_int() == 1
    for i in reversed(range(len(k))):
        axis = 1 + i
        need = max(0, (out_sp[i] - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - in_sp[i] - begin[i])
        if begin[i] or need:
            pads = np.zeros((rank, 2), np.int32)
            pads[axis] = (begin[i], need)
            cur_dims = list(cur_dims)
            cur_dims[axis] += begin[i] + need
            cur_sig = [-1 if s == -1 else d for s, d in zip(cur_sig, cur_dims, strict=True)]
            p = b.add_constant(ctx.name(node, f"paddings_{i}"), pads)
            for t, src in enumerate(list(tracks)):
                padded = b.add_tensor(
                    ctx.name(node, f"padded_{i}_{t}"), cur_dims, types[t], shape_signature=cur_sig
                )
                if is_max and t == 0:
                    v = b.add_constant(ctx.name(node, "minus_inf"), np.array([-np.inf], np.float32))
                    b.add_op("PADV2", [src, p, v], [padded], name=node.name)
                else:
                    b.add_op("PAD", [src, p], [padded], name=node.name)
                tracks[t] = padded
        out_dims = list(cur_dims)
        out_dims[axis] = out_sp[i]
        out_sig = [-1 if s == -1 else d for s, d in zip(cur_sig, out_dims, strict=True)]
        mask = ((1 << rank) - 1) & ~(1 << axis)  # every other axis: whole
        acc: list[int] = []
        for j in range(k[i]):
            lo = j * dil[i]
            start, stop, step = [0] * rank, list(cur_dims), [1] * rank
            start[axis], stop[axis], step[axis] = lo, lo + (out_sp[i] - 1) * strides[i] + 1, strides[i]
            bounds = [
                b.add_constant(ctx.name(node, f"axis{i}_begin{j}"), np.array(start, np.int32)),
                b.add_constant(ctx.name(node, f"axis{i}_end{j}"), np.array(stop, np.int32)),
                b.add_constant(ctx.name(node, f"axis{i}_strides"), np.array(step, np.int32)),
            ]
            taps = []
            for t, src in enumerate(tracks):
                tap = b.add_tensor(
                    ctx.name(node, f"axis{i}_tap{j}_{t}"), out_dims, types[t], shape_signature=out_sig
                )
                b.add_op("STRIDED_SLICE", [src, *bounds], [tap], name=node.name, beginMask=mask, endMask=mask)
                taps.append(tap)
            if not acc:
                acc = taps
                continue
            both = [
                b.add_tensor(
                    ctx.name(node, f"axis{i}_acc{j}_{t}"), out_dims, types[t], shape_signature=out_sig
                )
                for t in range(len(taps))
            ]
            if with_indices:  # strictly greater: an equal later tap keeps the earlier index
                wins = b.add_tensor(
                    ctx.name(node, f"axis{i}_wins{j}"), out_dims, "bool", shape_signature=out_sig
                )
                b.add_op("GREATER", [taps[0], acc[0]], [wins], name=node.name)
                for t in range(2):
                    b.add_op("SELECT_V2", [wins, taps[t], acc[t]], [both[t]], name=node.name)
            elif is_max:
                b.add_op("MAXIMUM", [acc[0], taps[0]], [both[0]], name=node.name)
            else:
                b.add_op("ADD", [acc[0], taps[0]], [both[0]], name=node.name, fusedActivationFunction=0)
            acc = both
        tracks, cur_dims, cur_sig = acc, out_dims, out_sig
        lo_ok, hi_ok = (-begin[i], in_sp[i] + end[i]) if include_pad else (0, in_sp[i])
        pos = (np.arange(out_sp[i]) * strides[i] - begin[i])[:, None] + np.arange(k[i])[None, :] * dil[i]
        counts[i] = ((pos >= lo_ok) & (pos < hi_ok)).sum(axis=1)
    if is_max:
        ctx.bind(node.outputs[0], tracks[0], perm)
        if with_indices:
            ctx.bind(node.outputs[1], tracks[1], perm)
        return
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    count = counts[0].astype(np.float64)
    for i in range(1, len(k)):
        count = np.multiply.outer(count, counts[i])
    div = b.add_constant(ctx.name(node, "count"), count.astype(np.float32).reshape([1, *out_sp, 1]))
    b.add_op("DIV", [tracks[0], div], [out], name=node.name, fusedActivationFunction=0)


def _used(value: ir.Value) -> bool:
    return bool(value.uses()) or value.is_graph_output()


@lowers("MaxPool", check=_check_pool)
def lower_max_pool(ctx: LoweringContext, node: ir.Node) -> None:
    """``MaxPool(X, kernel_shape, strides, pads | auto_pad, ceil_mode)`` -> MAX_POOL_2D."""
    _pool(ctx, node, "MAX_POOL_2D")


@lowers("AveragePool", check=_check_pool)
def lower_average_pool(ctx: LoweringContext, node: ir.Node) -> None:
    """``AveragePool(X, kernel_shape, strides, pads | auto_pad, ceil_mode, count_include_pad)``."""
    _pool(ctx, node, "AVERAGE_POOL_2D")


def _check_global(node: ir.Node) -> str | None:
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None or len(x.shape) < 3:
        return f"{node.op_type} needs an input of known rank >= 3 (N, C, spatial...)"
    return None


def _global(ctx: LoweringContext, node: ir.Node, kind: str) -> None:
    x_val = node_input(node, 0)
    rank = len(x_val.shape or ())
    perm = channels_last(rank)
    x = ctx.tensor(x_val, node, perm)
    axes = ctx.builder.add_constant(ctx.name(node, "axes"), np.arange(1, rank - 1, dtype=np.int32))
    out = ctx.new_tensor(node.outputs[0], perm=perm)
    ctx.builder.add_op(kind, [x, axes], [out], name=node.name, keepDims=True)


@lowers("GlobalAveragePool", check=_check_global)
def lower_global_average_pool(ctx: LoweringContext, node: ir.Node) -> None:
    """``GlobalAveragePool(X)`` -> MEAN over the spatial axes (channels-last, keep_dims)."""
    _global(ctx, node, "MEAN")


@lowers("GlobalMaxPool", check=_check_global)
def lower_global_max_pool(ctx: LoweringContext, node: ir.Node) -> None:
    """``GlobalMaxPool(X)`` -> REDUCE_MAX over the spatial axes (channels-last, keep_dims)."""
    _global(ctx, node, "REDUCE_MAX")
