"""Shape and data-movement ops -> TFLite builtins (static shapes, resolved at export).

The hub has static shapes (the exporter captures them at a fixed batch and folds shape
arithmetic), so every shape operand (Reshape's shape, Slice's starts, Split's sizes...) must be
a constant, and the checks refuse the others up front. A symbolic batch dim (signature -1, the
simple-MLP case) is kept where TFLite can carry it: RESHAPE with one -1, ops that do not touch
that axis.

Shape queries (Shape, Size, ConstantOfShape, Range) with static inputs become constant tensors.
Their consumers' checks only see constants that are constants in the hub, so a graph that still
computes shapes at run time needs a constant-folding pass before the backend.

Integer types: ONNX indices are int64. GATHER, GATHER_ND, CAST, SELECT_V2, CONCATENATION,
TRANSPOSE, RESHAPE, STRIDED_SLICE, TILE, BROADCAST_TO and FLOOR_MOD take int64 tensors in LiteRT,
so no cast is inserted; shape operands are written as int32 constants (the type TFLite's shape
kernels read).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input, tflite_dtype
from bitnet_export.backends.tflite.flatbuffer import TENSOR_TYPES
from bitnet_export.backends.tflite.ops._util import (
    MAX_RANK,
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
from bitnet_export.errors import ExportError, InternalError

__all__: list[str] = []


def _sig(value: ir.Value) -> list[int]:
    """Shape signature of ``value`` (-1 for symbolic dims); the value's shape must be known."""
    dims = static_dims(value)
    if dims is None:
        raise InternalError(f"tflite: {value.name!r} has no shape (the pre-flight should refuse it)")
    return [-1 if d is None else d for d in dims]


def _bind_constant(ctx: LoweringContext, value: ir.Value, array: np.ndarray) -> None:
    """Bind ``value`` to a constant tensor holding ``array`` (a shape query folded at export)."""
    ctx.bind(value, ctx.builder.add_constant(str(value.name), array))


def _rank_at_most(limit: int, kernel: str) -> Check:
    def check(node: ir.Node) -> str | None:
        r = rank(node_input(node, 0))
        if r > limit:
            return f"input rank {r}; TFLite {kernel} takes at most {limit} dims"
        return None

    return check


# ---------------------------------------------------------------------------- no-ops and reshapes


def _check_constant(node: ir.Node) -> str | None:
    names = set(node.attributes)
    if not names & {"value", "value_float", "value_int", "value_floats", "value_ints"}:
        return f"Constant with {sorted(names)}: only tensor/float/int values (no sparse or strings)"
    return None


@lowers("Constant", check=_check_constant)
def lower_constant(ctx: LoweringContext, node: ir.Node) -> None:
    """``Constant(value=...)`` -> a constant tensor (``value_float``/``value_ints``... forms too)."""
    attr = next(iter(node.attributes.values()))
    if attr.name == "value":
        arr = np.asarray(attr.as_tensor().numpy())
    elif attr.name in ("value_float", "value_int"):
        arr = np.array(attr.value, dtype=np.float32 if attr.name == "value_float" else np.int64)
    elif attr.name in ("value_floats", "value_ints"):
        arr = np.array(list(attr.value), dtype=np.float32 if attr.name == "value_floats" else np.int64)
    else:
        raise InternalError(
            f"tflite: Constant {node.name!r} with {attr.name} (the pre-flight should refuse it)"
        )
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # narrowed at export, as every float64 constant
    _bind_constant(ctx, node.outputs[0], arr)


@lowers("Identity")
def lower_identity(ctx: LoweringContext, node: ir.Node) -> None:
    """``Identity(x)``: no op, the output is the input's tensor (in every layout it is held in)."""
    x = node_input(node, 0)
    if x.const_value is not None:
        ctx.bind(node.outputs[0], ctx.tensor(x, node))
    else:
        ctx.alias(node.outputs[0], x)


def _check_reshape_like(node: ir.Node) -> str | None:
    """Check: the output shape is known and has at most one symbolic dim (RESHAPE infers one)."""
    out = node.outputs[0]
    dims = static_dims(out)
    if dims is None:
        return f"output {out.name!r} has no known shape; TFLite RESHAPE needs the target shape"
    if sum(d is None for d in dims) > 1:
        return f"output shape {list(out.shape or [])} has several symbolic dims; RESHAPE infers one"
    return None


def _reshape(ctx: LoweringContext, node: ir.Node) -> None:
    """RESHAPE input 0 to the output's shape (the symbolic dim, if any, as -1)."""
    x_val, out_val = node_input(node, 0), node.outputs[0]
    sig = _sig(out_val)
    if x_val.shape is not None and sig == _sig(x_val):
        ctx.bind(out_val, ctx.tensor(x_val, node))  # same shape: no op
        return
    x = ctx.tensor(x_val, node)
    shape = int_constant(ctx, node, "shape", sig)
    out = ctx.new_tensor(out_val)
    ctx.builder.add_op("RESHAPE", [x, shape], [out], name=node.name, newShape=list(sig))


def _check_reshape(node: ir.Node) -> str | None:
    shape = const_array(node, 1)
    out_dims = static_dims(node.outputs[0])
    if shape is None and (out_dims is None or None in out_dims):
        return "the target shape is computed at run time; fold it to a constant before the backend"
    return _check_reshape_like(node)


@lowers("Reshape", check=all_checks(shapes_known, _check_reshape))
def lower_reshape(ctx: LoweringContext, node: ir.Node) -> None:
    """``Reshape(data, shape, allowzero)`` -> RESHAPE to the output's static shape.

    ONNX's ``0`` (copy the input dim, or a real 0 with ``allowzero=1``) and ``-1`` (infer) are
    already resolved in the output's shape; the symbolic batch dim (if any) is RESHAPE's -1.
    """
    _reshape(ctx, node)


@lowers("Flatten", check=all_checks(shapes_known, _check_reshape_like))
def lower_flatten(ctx: LoweringContext, node: ir.Node) -> None:
    """``Flatten(input, axis=1)`` -> RESHAPE to ``[prod(dims[:axis]), prod(dims[axis:])]``."""
    _reshape(ctx, node)


@lowers("Squeeze", check=all_checks(shapes_known, _check_reshape_like))
def lower_squeeze(ctx: LoweringContext, node: ir.Node) -> None:
    """``Squeeze(data, axes)`` (axes input from opset 13, attribute before) -> RESHAPE."""
    _reshape(ctx, node)


@lowers("Unsqueeze", check=all_checks(shapes_known, _check_reshape_like))
def lower_unsqueeze(ctx: LoweringContext, node: ir.Node) -> None:
    """``Unsqueeze(data, axes)`` (axes input from opset 13, attribute before) -> RESHAPE."""
    _reshape(ctx, node)


# ---------------------------------------------------------------------------- permutations, joins


def _perm(node: ir.Node) -> list[int]:
    r = rank(node_input(node, 0))
    perm = attr_ints(node, "perm")
    return [normalize_axis(p, r) for p in perm] if perm is not None else list(range(r))[::-1]


@lowers("Transpose", check=all_checks(shapes_known, _rank_at_most(MAX_RANK, "TRANSPOSE")))
def lower_transpose(ctx: LoweringContext, node: ir.Node) -> None:
    """``Transpose(data, perm)`` (default: reverse the dims) -> TRANSPOSE."""
    x_val = node_input(node, 0)
    perm = _perm(node)
    if perm == sorted(perm):
        ctx.bind(node.outputs[0], ctx.tensor(x_val, node))
        return
    x = ctx.tensor(x_val, node)
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op("TRANSPOSE", [x, int_constant(ctx, node, "perm", perm)], [out], name=node.name)


@lowers("Concat", check=all_checks(shapes_known))
def lower_concat(ctx: LoweringContext, node: ir.Node) -> None:
    """``Concat(inputs..., axis)`` -> CONCATENATION (one input: no op)."""
    values = [v for v in node.inputs if v is not None]
    if len(values) == 1:
        ctx.bind(node.outputs[0], ctx.tensor(values[0], node))
        return
    axis = normalize_axis(attr_int(node, "axis", 0), rank(node.outputs[0]))
    ins = [ctx.tensor(v, node) for v in values]
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op("CONCATENATION", ins, [out], name=node.name, axis=axis, fusedActivationFunction=0)


# ---------------------------------------------------------------------------- slicing


def _slice_plan(node: ir.Node) -> tuple[list[int], list[int], list[int], int, int] | str:
    """STRIDED_SLICE's (begin, end, strides, begin_mask, end_mask), or the reason it cannot be."""
    x = node_input(node, 0)
    dims = static_dims(x)
    if dims is None:
        return "input has no known shape"
    if "starts" in node.attributes:  # opset < 10: attributes, steps 1
        starts = attr_ints(node, "starts") or []
        ends = attr_ints(node, "ends") or []
        axes_l = attr_ints(node, "axes")
        steps_l: list[int] | None = None
    else:
        s_arr, e_arr = const_array(node, 1), const_array(node, 2)
        if s_arr is None or e_arr is None:
            return "starts/ends are computed at run time; fold them to constants before the backend"
        starts, ends = [int(i) for i in s_arr.reshape(-1)], [int(i) for i in e_arr.reshape(-1)]
        a, st = const_array(node, 3), const_array(node, 4)
        if (optional_input(node, 3) is not None and a is None) or (
            optional_input(node, 4) is not None and st is None
        ):
            return "axes/steps are computed at run time; fold them to constants before the backend"
        axes_l = [int(i) for i in a.reshape(-1)] if a is not None else None
        steps_l = [int(i) for i in st.reshape(-1)] if st is not None else None
    r = len(dims)
    axes = [normalize_axis(i, r) for i in axes_l] if axes_l is not None else list(range(len(starts)))
    steps = steps_l if steps_l is not None else [1] * len(starts)
    # axes not sliced: the whole dim, by mask (works for a symbolic dim too)
    begin, end, strides = [0] * r, [0] * r, [1] * r
    begin_mask = end_mask = (1 << r) - 1
    for axis, start, stop, step in zip(axes, starts, ends, steps, strict=True):
        if step == 0:
            return "a step of 0 (ONNX forbids it)"
        dim = dims[axis]
        if dim is None:
            return f"axis {axis} is symbolic; slicing it needs a static dim"
        # Python's slice.indices clamps exactly as ONNX Slice does (numpy semantics, any int64)
        b, e, s = slice(start, stop, step).indices(dim)
        begin[axis], end[axis], strides[axis] = b, e, s
        begin_mask &= ~(1 << axis)
        end_mask &= ~(1 << axis)
        if s < 0 and e < 0:  # "down to and including index 0": -1 would mean the last element
            end[axis] = 0
            end_mask |= 1 << axis
    return begin, end, strides, begin_mask, end_mask


def _check_slice(node: ir.Node) -> str | None:
    plan = _slice_plan(node)
    return plan if isinstance(plan, str) else None


@lowers(
    "Slice",
    check=all_checks(shapes_known, _rank_at_most(MAX_RANK, "STRIDED_SLICE"), _check_slice),
)
def lower_slice(ctx: LoweringContext, node: ir.Node) -> None:
    """``Slice(data, starts, ends, axes, steps)`` -> STRIDED_SLICE (constant operands).

    Bounds are clamped at export exactly as ONNX specifies; negative steps are STRIDED_SLICE's
    negative strides (an end before index 0 becomes an end-mask bit).
    """
    plan = _slice_plan(node)
    if isinstance(plan, str):
        raise InternalError(f"tflite: Slice {node.name!r}: {plan}")
    begin, end, strides, begin_mask, end_mask = plan
    x_val = node_input(node, 0)
    if strides == [1] * len(strides) and begin_mask == end_mask == (1 << len(strides)) - 1:
        ctx.bind(node.outputs[0], ctx.tensor(x_val, node))
        return
    x = ctx.tensor(x_val, node)
    ins = [
        x,
        *(
            int_constant(ctx, node, role, v)
            for role, v in (("begin", begin), ("end", end), ("strides", strides))
        ),
    ]
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op(
        "STRIDED_SLICE",
        ins,
        [out],
        name=node.name,
        beginMask=begin_mask,
        endMask=end_mask,
        ellipsisMask=0,
        newAxisMask=0,
        shrinkAxisMask=0,
        offset=False,
    )


def _split_sizes(node: ir.Node) -> list[int] | str:
    x = node_input(node, 0)
    dims = static_dims(x)
    if dims is None:
        return "input has no known shape"
    axis = normalize_axis(attr_int(node, "axis", 0), len(dims))
    dim = dims[axis]
    if dim is None:
        return f"split axis {axis} is symbolic; SPLIT_V needs static sizes"
    if optional_input(node, 1) is not None:
        sizes = const_array(node, 1)
        if sizes is None:
            return "split sizes are computed at run time; fold them to constants before the backend"
        out = [int(s) for s in sizes.reshape(-1)]
    elif "split" in node.attributes:  # opset < 13
        out = attr_ints(node, "split") or []
    elif "num_outputs" in node.attributes:  # opset 18: ceil-sized chunks, the last one smaller
        n = attr_int(node, "num_outputs", 1)
        chunk = math.ceil(dim / n)
        out = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    else:  # equal parts, one per output
        n = len(node.outputs)
        if dim % n:
            return f"dim {dim} does not split into {n} equal parts"
        out = [dim // n] * n
    if sum(out) != dim or len(out) != len(node.outputs):
        return f"split sizes {out} do not cover dim {dim} with {len(node.outputs)} outputs"
    if min(out) < 0:
        return f"negative split sizes {out}"
    return out


def _check_split(node: ir.Node) -> str | None:
    sizes = _split_sizes(node)
    return sizes if isinstance(sizes, str) else None


@lowers("Split", check=all_checks(shapes_known, _check_split))
def lower_split(ctx: LoweringContext, node: ir.Node) -> None:
    """``Split(input, split, axis, num_outputs)`` -> SPLIT_V with constant sizes."""
    sizes = _split_sizes(node)
    if isinstance(sizes, str):
        raise InternalError(f"tflite: Split {node.name!r}: {sizes}")
    x_val = node_input(node, 0)
    if len(sizes) == 1:
        ctx.bind(node.outputs[0], ctx.tensor(x_val, node))
        return
    axis = normalize_axis(attr_int(node, "axis", 0), rank(x_val))
    x = ctx.tensor(x_val, node)
    outs = [ctx.new_tensor(o) for o in node.outputs]
    ins = [x, int_constant(ctx, node, "sizes", sizes), int_constant(ctx, node, "axis", axis)]
    ctx.builder.add_op("SPLIT_V", ins, outs, name=node.name, numSplits=len(sizes))


# ---------------------------------------------------------------------------- gathers


def _wrapped_indices(ctx: LoweringContext, node: ir.Node, idx_val: ir.Value, dim: int) -> int:
    """The indices of ``idx_val`` with ONNX's negative indices (``-1`` = last) made positive.

    Constant indices are fixed at export. Run-time ones go through FLOOR_MOD(i, dim): in range
    it is ``i`` or ``i + dim`` as ONNX says; an out-of-range index (an error in ONNX) wraps
    instead of failing, since TFLite GATHER would reject a negative one.
    """
    const = idx_val.const_value
    if const is not None:
        arr = np.asarray(const.numpy())
        return ctx.builder.add_constant(
            f"{idx_val.name}/wrapped", np.where(arr < 0, arr + dim, arr).astype(arr.dtype)
        )
    idx = ctx.tensor(idx_val, node)
    dtype = tflite_dtype(idx_val)
    dims, sig = ctx.shape(idx_val)
    out = temp(ctx, node, "indices_wrapped", dims, dtype, sig)
    ctx.builder.add_op("FLOOR_MOD", [idx, int_constant(ctx, node, "dim", dim, dtype)], [out])
    return out


_INDEX_TYPES = (ir.DataType.INT64, ir.DataType.INT32)


def _check_gather(node: ir.Node) -> str | None:
    x, idx = node_input(node, 0), node_input(node, 1)
    dims = static_dims(x)
    if dims is None:
        return "input has no known shape"
    axis = normalize_axis(attr_int(node, "axis", 0), len(dims))
    if dims[axis] is None:
        return f"gather axis {axis} is symbolic"
    if idx.dtype is not None and idx.dtype not in _INDEX_TYPES:
        return f"indices are {idx.dtype.name}; TFLite gathers take int32/int64 indices"
    return None


@lowers("Gather", check=all_checks(shapes_known, _check_gather))
def lower_gather(ctx: LoweringContext, node: ir.Node) -> None:
    """``Gather(data, indices, axis)`` -> GATHER(axis) (embeddings: a table gathered by token id).

    int64 indices (ONNX's type for ``input_ids``) are taken by TFLite GATHER as they are.
    """
    x_val, idx_val = node_input(node, 0), node_input(node, 1)
    dims, _ = ctx.shape(x_val)
    axis = normalize_axis(attr_int(node, "axis", 0), len(dims))
    x = ctx.tensor(x_val, node)
    idx = _wrapped_indices(ctx, node, idx_val, dims[axis])
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op("GATHER", [x, idx], [out], name=node.name, axis=axis, batchDims=0)


def _check_gather_elements(node: ir.Node) -> str | None:
    reason = _check_gather(node)
    if reason:
        return reason
    if None in (static_dims(node_input(node, 1)) or [None]):
        return "indices have a symbolic dim; the coordinate grid needs static dims"
    return None


@lowers("GatherElements", check=all_checks(shapes_known, _check_gather_elements))
def lower_gather_elements(ctx: LoweringContext, node: ir.Node) -> None:
    """``GatherElements(data, indices, axis)`` -> GATHER_ND on full coordinates.

    ``out[i0..ik..] = data[i0.., indices[i0..ik..], ..]``: the coordinates are a constant grid
    (``i_j`` for every axis but ``axis``) with the indices on ``axis``, CONCATENATIONed on a
    new last axis (run-time indices), or one constant (constant indices).
    """
    x_val, idx_val = node_input(node, 0), node_input(node, 1)
    dims, _ = ctx.shape(x_val)
    idims, _ = ctx.shape(idx_val)
    r = len(dims)
    axis = normalize_axis(attr_int(node, "axis", 0), r)
    dtype = tflite_dtype(idx_val)
    grid = np.indices(idims, dtype=dtype)  # [r, *idims]
    x = ctx.tensor(x_val, node)
    if idx_val.const_value is not None:
        arr = np.asarray(idx_val.const_value.numpy())
        grid[axis] = np.where(arr < 0, arr + dims[axis], arr)
        coords = ctx.builder.add_constant(f"{idx_val.name}/coordinates", np.moveaxis(grid, 0, -1).copy())
    else:
        wrapped = _wrapped_indices(ctx, node, idx_val, dims[axis])
        col = temp(ctx, node, "indices_column", [*idims, 1], dtype)
        shape = int_constant(ctx, node, "column_shape", [*idims, 1])
        ctx.builder.add_op("RESHAPE", [wrapped, shape], [col], newShape=[*idims, 1])
        parts = [
            col if j == axis else ctx.builder.add_constant(f"{node.name}/grid_{j}", grid[j][..., None].copy())
            for j in range(r)
        ]
        coords = temp(ctx, node, "coordinates", [*idims, r], dtype)
        ctx.builder.add_op("CONCATENATION", parts, [coords], axis=len(idims), fusedActivationFunction=0)
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op("GATHER_ND", [x, coords], [out], name=node.name)


# ---------------------------------------------------------------------------- broadcasts, tiles


def _check_expand(node: ir.Node) -> str | None:
    out = static_dims(node.outputs[0])
    if out is None or None in out:  # a static output shape is all BROADCAST_TO needs
        return "the output has a symbolic dim; BROADCAST_TO needs the static target shape"
    return None


@lowers("Expand", check=all_checks(shapes_known, _check_expand))
def lower_expand(ctx: LoweringContext, node: ir.Node) -> None:
    """``Expand(input, shape)`` -> BROADCAST_TO the output's static shape (numpy broadcasting)."""
    x_val, out_val = node_input(node, 0), node.outputs[0]
    dims, _ = ctx.shape(out_val)
    if x_val.shape is not None and list(ctx.shape(x_val)[0]) == list(dims):
        ctx.bind(out_val, ctx.tensor(x_val, node))
        return
    x = ctx.tensor(x_val, node)
    out = ctx.new_tensor(out_val)
    shape = int_constant(ctx, node, "shape", dims)
    # version 2: LiteRT registers BROADCAST_TO from version 2 (1 was never a kernel)
    ctx.builder.add_op("BROADCAST_TO", [x, shape], [out], name=node.name, _version=2)


def _check_tile(node: ir.Node) -> str | None:
    if const_array(node, 1) is None:
        return "repeats are computed at run time; fold them to constants before the backend"
    return None


@lowers("Tile", check=all_checks(shapes_known, _check_tile))
def lower_tile(ctx: LoweringContext, node: ir.Node) -> None:
    """``Tile(input, repeats)`` -> TILE with constant multiples."""
    reps = const_array(node, 1)
    if reps is None:
        raise InternalError(f"tflite: Tile {node.name!r} without constant repeats")
    x = ctx.tensor(node_input(node, 0), node)
    out = ctx.new_tensor(node.outputs[0])
    mult = int_constant(ctx, node, "multiples", reps.reshape(-1))
    ctx.builder.add_op("TILE", [x, mult], [out], name=node.name)


# ---------------------------------------------------------------------------- shape queries


def _shape_range(node: ir.Node) -> tuple[int, int]:
    r = rank(node_input(node, 0))
    start, end = attr_int(node, "start", 0), attr_int(node, "end", r)
    b, e, _ = slice(start, end).indices(r)  # opset 15: clamped like a slice
    return b, max(b, e)


def _check_shape(node: ir.Node) -> str | None:
    dims = static_dims(node_input(node, 0))
    if dims is None:
        return "input has no known shape"
    b, e = _shape_range(node)
    if None in dims[b:e]:
        return "the queried dims are symbolic; only static shapes fold to constants"
    return None


@lowers("Shape", check=_check_shape)
def lower_shape(ctx: LoweringContext, node: ir.Node) -> None:
    """``Shape(data, start, end)`` -> an int64 constant (static shapes fold at export)."""
    dims = static_dims(node_input(node, 0)) or []
    b, e = _shape_range(node)
    _bind_constant(ctx, node.outputs[0], np.array(dims[b:e], dtype=np.int64))


def _check_size(node: ir.Node) -> str | None:
    dims = static_dims(node_input(node, 0))
    if dims is None or None in dims:
        return "the input shape is not static; only static shapes fold to constants"
    return None


@lowers("Size", check=_check_size)
def lower_size(ctx: LoweringContext, node: ir.Node) -> None:
    """``Size(data)`` -> an int64 scalar constant."""
    dims = static_dims(node_input(node, 0)) or []
    _bind_constant(ctx, node.outputs[0], np.array(math.prod(d or 0 for d in dims), dtype=np.int64))


def _fill_value(node: ir.Node) -> np.ndarray:
    attr = node.attributes.get("value")
    if attr is None:
        return np.zeros((), dtype=np.float32)  # ONNX default: float32 zero
    return np.asarray(attr.as_tensor().numpy()).reshape(())


def _check_constant_of_shape(node: ir.Node) -> str | None:
    if const_array(node, 0) is None:
        return "the shape is computed at run time; fold it to a constant before the backend"
    if _fill_value(node).dtype == np.float64 or str(_fill_value(node).dtype) not in TENSOR_TYPES:
        return f"fill value of type {_fill_value(node).dtype}, which TFLite cannot hold"
    return None


@lowers("ConstantOfShape", check=all_checks(_check_constant_of_shape))
def lower_constant_of_shape(ctx: LoweringContext, node: ir.Node) -> None:
    """``ConstantOfShape(shape, value)`` -> a constant tensor (the shape is a constant)."""
    shape = const_array(node, 0)
    if shape is None:
        raise InternalError(f"tflite: ConstantOfShape {node.name!r} without a constant shape")
    value = _fill_value(node)
    _bind_constant(
        ctx, node.outputs[0], np.full([int(d) for d in shape.reshape(-1)], value, dtype=value.dtype)
    )


def _check_range(node: ir.Node) -> str | None:
    if any(const_array(node, i) is None for i in range(3)):
        return "start/limit/delta are computed at run time; fold them to constants before the backend"
    if str(const_array(node, 0).dtype) not in TENSOR_TYPES:  # type: ignore[union-attr]
        return "a type TFLite cannot hold"
    return None


@lowers("Range", check=all_checks(_check_range))
def lower_range(ctx: LoweringContext, node: ir.Node) -> None:
    """``Range(start, limit, delta)`` -> a constant: ``start + i * delta`` for ``i`` in
    ``[0, max(ceil((limit - start) / delta), 0))``, computed in the inputs' type as ONNX does.
    """
    start, limit, delta = (const_array(node, i) for i in range(3))
    if start is None or limit is None or delta is None:
        raise InternalError(f"tflite: Range {node.name!r} with run-time operands")
    n = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    dtype = start.dtype
    values = (start + np.arange(n, dtype=dtype) * delta).astype(dtype)
    _bind_constant(ctx, node.outputs[0], values)


# ---------------------------------------------------------------------------- casts, selects


def _check_cast(node: ir.Node) -> str | None:
    try:
        tflite_dtype(node.outputs[0])
        tflite_dtype(node_input(node, 0))
    except ExportError as exc:
        return str(exc).removeprefix("tflite backend: ")
    return None


@lowers("Cast", check=all_checks(shapes_known, _check_cast))
def lower_cast(ctx: LoweringContext, node: ir.Node) -> None:
    """``Cast(input, to)`` -> CAST (same TFLite type: no op).

    float -> int truncates toward zero in both (C++ ``static_cast``); any -> bool is ``x != 0``;
    bool -> number is 0/1. DOUBLE is narrowed to float32 at export, so DOUBLE <-> FLOAT is a no-op.
    """
    x_val, out_val = node_input(node, 0), node.outputs[0]
    src, dst = tflite_dtype(x_val), tflite_dtype(out_val)
    if src == dst:
        ctx.bind(out_val, ctx.tensor(x_val, node))
        return
    x = ctx.tensor(x_val, node)
    out = ctx.new_tensor(out_val)
    ctx.builder.add_op(
        "CAST",
        [x],
        [out],
        name=node.name,
        inDataType=TENSOR_TYPES[src],
        outDataType=TENSOR_TYPES[dst],
    )


def _check_where(node: ir.Node) -> str | None:
    shapes = [tuple(v.shape or ()) for v in node.inputs if v is not None]
    if len(set(shapes)) > 1 and rank(node.outputs[0]) > MAX_RANK:
        return f"broadcasting at rank {rank(node.outputs[0])}; SELECT_V2 broadcasts up to {MAX_RANK} dims"
    return None


@lowers("Where", check=all_checks(shapes_known, _check_where))
def lower_where(ctx: LoweringContext, node: ir.Node) -> None:
    """``Where(condition, X, Y)`` -> SELECT_V2 (numpy broadcasting of all three)."""
    ins = [ctx.tensor(node_input(node, i), node) for i in range(3)]
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op("SELECT_V2", ins, [out], name=node.name)
