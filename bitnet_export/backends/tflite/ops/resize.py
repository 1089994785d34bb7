"""Resize -> TFLite: RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR when they sample as ONNX does,
else one constant interpolation matrix per resized axis (BATCH_MATMUL).

Builtins first. TFLite has three coordinate rules (``align_corners``, ``half_pixel_centers``,
neither), each with its own float32 arithmetic and rounding. Rather than trusting a table, the
lowering computes for every output row and column the source index (nearest) or the clamped
source coordinate (linear) both as ONNX defines it (``coordinate_transformation_mode``,
``nearest_mode``, the *given* scales, which ONNX uses even when ``in * scale`` is not the
output size) and as TFLite's kernel does, and uses the flags under which they agree (4-D,
H and W only, no antialias when downsampling).

Otherwise (cubic, antialias, tf_crop_and_resize, other coordinate rules or rounding modes,
resizing N or C, other ranks): ONNX's Resize is separable, each axis a linear map of that axis,
so the lowering builds that map's ``[out, in]`` matrix at export from ONNX's definition (the
coordinate transform; the n nearest neighbours of the source coordinate in the edge-padded
axis, ties to the smaller index; the nearest / linear / cubic(A) / antialiased weights;
``exclude_outside``) and applies it with a BATCH_MATMUL over ``[outer, in, inner]`` views of
the tensor (RESHAPEs only, in whatever layout the input is held). Nearest rows are one-hot, so
nearest resizes are exact copies; interpolating ones round their weights to float32 (ONNX's
reference keeps float64 weights): ~1e-7 relative. tf_crop_and_resize positions outside the
input get ``extrapolation_value`` (a zero row, then a constant ADD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import NCHW_TO_NHWC, LoweringContext, node_input
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []

#: TFLite's coordinate rules: (align_corners, half_pixel_centers).
_FLAGS: Final = ((False, False), (False, True), (True, False))


def _attr_str(node: ir.Node, name: str, default: str) -> str:
    attr = node.attributes.get(name)
    return attr.as_string() if attr is not None else default


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return attr.as_int() if attr is not None else default


def _attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return attr.as_float() if attr is not None else default


def _const(node: ir.Node, i: int) -> np.ndarray | None:
    v = node.inputs[i] if i < len(node.inputs) else None
    return None if v is None or v.const_value is None else v.const_value.numpy()


def _static(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    ints = [d for d in value.shape if isinstance(d, int)]
    return ints if len(ints) == len(value.shape) else None


# ---------------------------------------------------------------------------- ONNX's sampling


@dataclass(frozen=True)
class _Axis:
    """One axis of a Resize: sizes, ONNX's scale, and the roi pair (tf_crop_and_resize)."""

    n_in: int
    n_out: int
    scale: float
    roi: tuple[float, float]


def _axes(node: ir.Node, xs: list[int], ys: list[int]) -> list[_Axis] | str:
    """Per axis of the input: ONNX's scale (given, or from the sizes / output shape)."""
    rank = len(xs)
    axes_attr = node.attributes.get("axes")
    axes = [int(a) % rank for a in axes_attr.as_ints()] if axes_attr is not None else list(range(rank))
    opset10 = len(node.inputs) == 2  # Resize-10: (X, scales)
    scales_arr = _const(node, 1 if opset10 else 2)
    scales_v = node.inputs[1 if opset10 else 2] if len(node.inputs) > (1 if opset10 else 2) else None
    scales = [1.0] * rank
    if scales_arr is not None and scales_arr.size:
        for a, s in zip(axes, scales_arr.reshape(-1), strict=False):
            scales[a] = float(s)
    elif (
        scales_v is not None
        and scales_v.const_value is None
        and (len(node.inputs) < 4 or node.inputs[3] is None)
    ):
        return "Resize needs constant scales (they set ONNX's sampling coordinates)"
    else:
        scales = [ys[i] / xs[i] for i in range(rank)]
        policy = _attr_str(node, "keep_aspect_ratio_policy", "stretch")
        sizes = _const(node, 3)
        if policy != "stretch" and sizes is None:
            return "Resize with keep_aspect_ratio_policy needs constant sizes"
        if policy != "stretch":  # the requested sizes, not the output shape, set the one scale
            assert sizes is not None
            for a, n in zip(axes, sizes.reshape(-1), strict=False):
                scales[a] = int(n) / xs[a]
            picked = [scales[a] for a in axes]
            s = min(picked) if policy == "not_larger" else max(picked)
            scales = [s if i in axes else 1.0 for i in range(rank)]
    roi_arr = None if opset10 else _const(node, 1)
    rois = [(0.0, 1.0)] * rank
    if roi_arr is not None and roi_arr.size:
        flat = [float(v) for v in roi_arr.reshape(-1)]
        k = len(flat) // 2
        for j, a in enumerate(axes if k == len(axes) else range(rank)):
            rois[a] = (flat[j], flat[k + j])
    return [_Axis(xs[i], ys[i], scales[i], rois[i]) for i in range(rank)]


def _source(node: ir.Node, ax: _Axis, o: int) -> float | None:
    """ONNX's source coordinate of output index ``o`` (``None``: extrapolated)."""
    mode = _attr_str(node, "coordinate_transformation_mode", "half_pixel")
    length = ax.scale * ax.n_in  # ONNX's reference uses the unrounded output length
    if mode == "align_corners":
        return 0.0 if length == 1 else o * (ax.n_in - 1) / (length - 1)
    if mode == "asymmetric":
        return o / ax.scale
    if mode == "pytorch_half_pixel":
        return -0.5 if length == 1 else (o + 0.5) / ax.scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = ax.n_in / 2 * (1 - ax.n_out / length)
        return offset + (o + 0.5) / ax.scale - 0.5
    if mode == "tf_crop_and_resize":
        lo, hi = ax.roi
        if length == 1:
            x = (hi - lo) * (ax.n_in - 1) / 2
        else:
            x = o * (hi - lo) * (ax.n_in - 1) / (length - 1)
        x += lo * (ax.n_in - 1)
        return None if x < 0 or x > ax.n_in - 1 else x
    return (o + 0.5) / ax.scale - 0.5  # half_pixel


def _cubic(t: float, a: float) -> float:
    """The cubic convolution kernel with coefficient ``a`` at distance ``t``."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _weights(node: ir.Node, ratio: float, scale: float) -> list[float]:
    """ONNX's tap weights for fractional position ``ratio`` in (0, 1] (taps left to right)."""
    mode = _attr_str(node, "mode", "nearest")
    antialias = bool(_attr_int(node, "antialias", 0))
    if mode == "nearest":
        if ratio == 1:  # an integer coordinate: the right tap is the pixel itself
            return [0.0, 1.0]
        rule = _attr_str(node, "nearest_mode", "round_prefer_floor")
        right = {
            "round_prefer_floor": ratio > 0.5,
            "round_prefer_ceil": ratio >= 0.5,
            "floor": False,
            "ceil": True,
        }[rule]
        return [0.0, 1.0] if right else [1.0, 0.0]
    if mode == "linear":
        if not antialias:
            return [1 - ratio, ratio]
        s = min(scale, 1.0)  # antialias widens the triangle when downsampling
        start = math.floor(-1 / s) + 1
        w = [max(0.0, 1 - abs((i - ratio) * s)) for i in range(start, 2 - start)]
        return [v / sum(w) for v in w]
    a = _attr_float(node, "cubic_coeff_a", -0.75)
    if not antialias:
        return [_cubic(ratio + 1, a), _cubic(ratio, a), _cubic(1 - ratio, a), _cubic(2 - ratio, a)]
    s = min(scale, 1.0)
    start = math.floor(-2 / s) + 1
    w = [_cubic(s * (i - ratio), a) for i in range(start, 2 - start)]
    return [v / sum(w) for v in w]


def _neighbours(x: float, n: int, n_in: int) -> list[int]:
    """The ``n`` positions nearest ``x`` in the axis edge-padded by ceil(n/2) (ties: smaller)."""
    pad = (n + 1) // 2
    cand = sorted(range(-pad, n_in + pad), key=lambda i: (abs(x - i), i))[:n]
    return sorted(cand)


def _matrix(node: ir.Node, ax: _Axis) -> tuple[np.ndarray, np.ndarray]:
    """ONNX's ``[out, in]`` interpolation matrix of one axis and its extrapolated rows."""
    mat = np.zeros((ax.n_out, ax.n_in), np.float64)
    outside = np.zeros(ax.n_out, bool)
    exclude = bool(_attr_int(node, "exclude_outside", 0))
    for o in range(ax.n_out):
        x = _source(node, ax, o)
        if x is None:
            outside[o] = True
            continue
        ratio = 1.0 if float(x).is_integer() else x - math.floor(x)
        w = _weights(node, ratio, ax.scale)
        taps = _neighbours(x, len(w), ax.n_in)
        if exclude:
            w = [v if 0 <= i < ax.n_in else 0.0 for v, i in zip(w, taps, strict=True)]
            total = sum(w)
            w = [v / total for v in w]
        for v, i in zip(w, taps, strict=True):
            mat[o, min(max(i, 0), ax.n_in - 1)] += v  # edge padding: outside taps read the edge
    return mat, outside


# ---------------------------------------------------------------------------- TFLite's builtins


def _tflite_coords(o: np.ndarray, n_in: int, n_out: int, align: bool, half: bool) -> np.ndarray:
    """TFLite's bilinear source coordinate, in float32 as its kernels compute it."""
    f = np.float32
    # align_corners with a single output row falls back to in/out in TFLite's kernels
    scale = f(n_in - 1) / f(n_out - 1) if align and n_out > 1 else f(n_in) / f(n_out)
    of = o.astype(np.float32)
    return (of + f(0.5)) * scale - f(0.5) if half else of * scale


def _tflite_nearest(o: np.ndarray, n_in: int, n_out: int, align: bool, half: bool) -> np.ndarray:
    """TFLite's nearest source index, in float32 as its kernels compute it."""
    f = np.float32
    scale = f(n_in - 1) / f(n_out - 1) if align and n_out > 1 else f(n_in) / f(n_out)
    v = (o.astype(np.float32) + (f(0.5) if half else f(0))) * scale
    # align_corners rounds half away from zero (TfLiteRound); otherwise floor
    i = np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5)) if align else np.floor(v)
    i = np.minimum(i, n_in - 1)
    return np.maximum(i, 0).astype(np.int64) if half else i.astype(np.int64)


def _builtin(node: ir.Node, axes: list[_Axis]) -> tuple[str, bool, bool] | None:
    """``(TFLite op, align_corners, half_pixel_centers)`` when a builtin samples as ONNX does."""
    mode = _attr_str(node, "mode", "nearest")
    if len(axes) != 4 or any(ax.n_in != ax.n_out for ax in axes[:2]) or mode not in ("nearest", "linear"):
        return None
    if _attr_str(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return None
    if mode == "linear" and _attr_int(node, "antialias", 0) and any(ax.n_out < ax.n_in for ax in axes):
        return None
    for align, half in _FLAGS:
        ok = True
        for ax in axes[2:]:
            mat, _ = _matrix(node, ax)
            o = np.arange(ax.n_out)
            if mode == "nearest":
                ok &= bool(
                    np.array_equal(np.argmax(mat, axis=1), _tflite_nearest(o, ax.n_in, ax.n_out, align, half))
                )
            else:  # the builtin's coordinate, clamped, must be ONNX's (up to float32 rounding)
                src = [_source(node, ax, int(i)) for i in o]
                theirs = np.clip(np.array(src, np.float64), 0, ax.n_in - 1)
                mine = np.clip(
                    _tflite_coords(o, ax.n_in, ax.n_out, align, half).astype(np.float64), 0, ax.n_in - 1
                )
                ok &= bool(np.allclose(mine, theirs, rtol=0, atol=1e-5))
        if ok:
            return ("RESIZE_NEAREST_NEIGHBOR" if mode == "nearest" else "RESIZE_BILINEAR", align, half)
    return None


# ---------------------------------------------------------------------------- lowering


def _shapes(node: ir.Node) -> tuple[list[int], list[int], bool] | None:
    """Input and output dims; a symbolic batch (axis 0 of both) reads as 1 (``True``: it was)."""
    x, y = node.inputs[0] if node.inputs else None, node.outputs[0]
    if x is None or x.shape is None or y.shape is None or len(x.shape) != len(y.shape) or not len(x.shape):
        return None
    free = not isinstance(x.shape[0], int) and not isinstance(y.shape[0], int)
    xs, ys = list(x.shape), list(y.shape)
    if free:
        xs[0] = ys[0] = 1
    xi, yi = [d for d in xs if isinstance(d, int)], [d for d in ys if isinstance(d, int)]
    return (xi, yi, free) if len(xi) == len(xs) and len(yi) == len(ys) else None


def _check_resize(node: ir.Node) -> str | None:
    shapes = _shapes(node)
    if shapes is None:
        return "Resize needs static shapes (but the batch); export with a static shape"
    xs, ys, free = shapes
    mode = _attr_str(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        return f"Resize mode {mode!r} is not an ONNX mode"
    axes = _axes(node, xs, ys)
    if isinstance(axes, str):
        return axes
    if free and axes[0].scale != 1.0:
        return "Resize of a symbolic batch dimension; export with a static batch"
    if len(xs) > 5 and _builtin(node, axes) is None:
        return f"Resize of a {len(xs)}-D tensor: the interpolation matrices need rank <= 5"
    return None


@lowers("Resize", check=_check_resize)
def lower_resize(ctx: LoweringContext, node: ir.Node) -> None:
    """``Resize(X, roi, scales, sizes)``: RESIZE_* in NHWC when exact, else per-axis matrices."""
    x_val = node_input(node, 0)
    shapes = _shapes(node)
    assert shapes is not None
    xs, ys, free = shapes
    axes = _axes(node, xs, ys)
    assert not isinstance(axes, str)
    plan = _builtin(node, axes)
    b = ctx.builder
    if plan is not None:
        kind, align, half = plan
        x = ctx.tensor(x_val, node, NCHW_TO_NHWC)
        size = b.add_constant(ctx.name(node, "size"), np.array(ys[2:], np.int32))
        out = ctx.new_tensor(node.outputs[0], perm=NCHW_TO_NHWC)
        b.add_op(kind, [x, size], [out], name=node.name, alignCorners=align, halfPixelCenters=half)
        return
    perm = ctx.layout(x_val)
    if perm is not None and perm[0] != 0:  # keep a symbolic batch the leading dim
        perm = None
    held = list(perm) if perm is not None else list(range(len(xs)))
    cur = ctx.tensor(x_val, node, perm)
    dims = [xs[a] for a in held]
    if free:
        dims[0] = ctx.batch
    mats = {a: _matrix(node, axes[a]) for a in range(len(xs))}
    todo = [
        j
        for j, a in enumerate(held)
        if not (
            axes[a].n_in == axes[a].n_out
            and np.array_equal(mats[a][0], np.eye(axes[a].n_in))
            and not mats[a][1].any()
        )
    ]
    extrap = np.ones([ys[a] for a in held], bool)  # True where every axis samples inside
    for j, a in enumerate(held):
        inside = ~mats[a][1]
        extrap &= inside.reshape([-1 if k == j else 1 for k in range(len(held))])
    fill = _attr_float(node, "extrapolation_value", 0.0)
    needs_fill = fill != 0.0 and not extrap.all()
    if not todo:
        ctx.bind(node.outputs[0], cur, perm)
        return
    for step, j in enumerate(todo):
        a = held[j]
        mat = mats[a][0].astype(np.float32)
        outer, inner = math.prod(dims[:j]), math.prod(dims[j + 1 :])
        # a symbolic batch is in the outer group (never resized): -1 in shapes and signatures
        o_sig = -1 if free and j > 0 else outer
        view = b.add_tensor(
            ctx.name(node, f"axis{a}_view"),
            [outer, dims[j], inner],
            "float32",
            shape_signature=[o_sig, dims[j], inner],
        )
        shape3 = b.add_constant(ctx.name(node, f"axis{a}_shape"), np.array([o_sig, dims[j], inner], np.int32))
        b.add_op("RESHAPE", [cur, shape3], [view], name=node.name, newShape=[o_sig, dims[j], inner])
        n_out = axes[a].n_out
        mixed = b.add_tensor(
            ctx.name(node, f"axis{a}_resized"),
            [outer, n_out, inner],
            "float32",
            shape_signature=[o_sig, n_out, inner],
        )
        m = b.add_constant(ctx.name(node, f"axis{a}_matrix"), mat)
        b.add_op("BATCH_MATMUL", [m, view], [mixed], name=node.name, adjX=False, adjY=False)
        dims[j] = n_out
        sig = [-1 if free and k == 0 else d for k, d in enumerate(dims)]
        last = step == len(todo) - 1 and not needs_fill
        res = (
            ctx.new_tensor(node.outputs[0], perm=perm)
            if last
            else b.add_tensor(ctx.name(node, f"axis{a}_out"), list(dims), "float32", shape_signature=sig)
        )
        shape = b.add_constant(ctx.name(node, f"axis{a}_back"), np.array(sig, np.int32))
        b.add_op("RESHAPE", [mixed, shape], [res], name=node.name, newShape=sig)
        cur = res
    if needs_fill:  # extrapolated positions are zero rows: add the extrapolation value there
        fill_map = np.where(extrap, 0.0, fill).astype(np.float32)
        out = ctx.new_tensor(node.outputs[0], perm=perm)
        f = b.add_constant(ctx.name(node, "extrapolation"), fill_map)
        b.add_op("ADD", [cur, f], [out], name=node.name, fusedActivationFunction=0)
