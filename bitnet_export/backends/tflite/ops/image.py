"""Pad -> TFLite builtins (Resize: :mod:`bitnet_export.backends.tflite.ops.resize`).

* ``Pad`` keeps the layout its input is held in (the pads are permuted at export): constant
  -> PAD (zero) / PADV2 (other value); reflect -> MIRROR_PAD(REFLECT) (numpy's ``reflect``,
  the edge not repeated, as ONNX); edge and wrap -> one GATHER per padded axis with constant
  indices (``clip(i, 0, n-1)`` / ``i mod n``: exact copies). Negative pads crop (SLICE).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.registry import lowers

__all__: list[str] = []


# ---------------------------------------------------------------------------- Pad


def _const(node: ir.Node, i: int) -> np.ndarray | None:
    v = node.inputs[i] if i < len(node.inputs) else None
    return None if v is None or v.const_value is None else v.const_value.numpy()


def _mode(node: ir.Node) -> str:
    attr = node.attributes.get("mode")
    return attr.as_string() if attr is not None else "constant"


def _pads(node: ir.Node) -> tuple[list[int], list[int]] | None:
    """ONNX pads as (begins, ends) per axis of the input, axes resolved; None if not constant."""
    x = node_input(node, 0)
    rank = len(x.shape or ())
    if "pads" in node.attributes:  # opset < 11
        raw = [int(v) for v in node.attributes["pads"].as_ints()]
    else:
        arr = _const(node, 1)
        if arr is None:
            return None
        raw = [int(v) for v in arr.reshape(-1)]
    axes_arr = _const(node, 3)
    axes = [int(a) % rank for a in axes_arr.reshape(-1)] if axes_arr is not None else list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for j, a in enumerate(axes):
        begin[a], end[a] = raw[j], raw[len(axes) + j]
    return begin, end


def _check_pad(node: ir.Node) -> str | None:
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None:
        return "Pad needs an input of known rank"
    if _mode(node) not in ("constant", "reflect", "edge", "wrap"):
        return f"Pad mode {_mode(node)!r} is not an ONNX mode TFLite can express"
    if len(node.inputs) > 3 and node.inputs[3] is not None and node.inputs[3].const_value is None:
        return "Pad needs constant axes"
    if _pads(node) is None:
        return "Pad needs constant pads (TFLite's paddings are export-time constants here)"
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].const_value is None:
        return "Pad needs a constant constant_value"
    pads = _pads(node)
    assert pads is not None
    padded = [a for a in range(len(x.shape)) if pads[0][a] or pads[1][a]]
    if _mode(node) in ("edge", "wrap") and any(not isinstance(x.shape[a], int) for a in padded):
        return f"Pad mode {_mode(node)!r} of a symbolic dim (the copied indices are constants)"
    return None


@lowers("Pad", check=_check_pad)
def lower_pad(ctx: LoweringContext, node: ir.Node) -> None:
    """``Pad(data, pads[, constant_value[, axes]], mode)`` in the layout ``data`` is held in."""
    x_val = node_input(node, 0)
    pads = _pads(node)
    assert pads is not None
    perm = ctx.layout(x_val)
    held = list(perm) if perm is not None else list(range(len(pads[0])))
    begin, end = [pads[0][a] for a in held], [pads[1][a] for a in held]
    dims, sig = ctx.shape(x_val)
    dims, sig = [dims[a] for a in held], [sig[a] for a in held]
    cur = ctx.tensor(x_val, node, perm)
    dtype = ctx.builder.tensors[cur].dtype
    mode = _mode(node)
    b = ctx.builder
    out_value = node.outputs[0]
    steps: list[tuple[str, list[int], list[int]]] = []  # (kind, dims after, sig after)

    def grow(
        dims_in: list[int], sig_in: list[int], lo: list[int], hi: list[int]
    ) -> tuple[list[int], list[int]]:
        d = [n + a + c for n, a, c in zip(dims_in, lo, hi, strict=True)]
        s = [(-1 if q == -1 else n) for q, n in zip(sig_in, d, strict=True)]
        return d, s

    if mode in ("constant", "reflect"):
        lo, hi = [max(v, 0) for v in begin], [max(v, 0) for v in end]
        if any(lo) or any(hi):
            steps.append(("pad", *grow(dims, sig, lo, hi)))
        if any(v < 0 for v in begin + end):
            steps.append(("slice", *grow(dims, sig, begin, end)))
    else:  # edge / wrap: one GATHER per axis whose size changes
        d, s = list(dims), list(sig)
        for ax in range(len(dims)):
            if begin[ax] or end[ax]:
                d[ax] = dims[ax] + begin[ax] + end[ax]
                steps.append((f"gather{ax}", list(d), list(s)))
    if not steps:
        ctx.bind(out_value, cur, perm)
        return
    for i, (kind, d, s) in enumerate(steps):
        last = i == len(steps) - 1
        out = (
            ctx.new_tensor(out_value, perm=perm)
            if last
            else b.add_tensor(ctx.name(node, kind), d, dtype, shape_signature=s)
        )
        if kind == "pad":
            lo, hi = [max(v, 0) for v in begin], [max(v, 0) for v in end]
            paddings = b.add_constant(ctx.name(node, "paddings"), np.array([lo, hi], np.int32).T.copy())
            value = _const(node, 2)
            if mode == "reflect":
                b.add_op("MIRROR_PAD", [cur, paddings], [out], name=node.name, mode=0)  # REFLECT
            elif value is None or float(value.reshape(-1)[0]) == 0.0:
                b.add_op("PAD", [cur, paddings], [out], name=node.name)
            else:
                v = b.add_constant(ctx.name(node, "constant_value"), value.reshape(1).astype(dtype))
                b.add_op("PADV2", [cur, paddings, v], [out], name=node.name)
        elif kind == "slice":
            start = np.array([max(-v, 0) for v in begin], np.int32)
            size = np.array([(-1 if q == -1 else n) for q, n in zip(s, d, strict=True)], np.int32)
            b.add_op(
                "SLICE",
                [
                    cur,
                    b.add_constant(ctx.name(node, "begin"), start),
                    b.add_constant(ctx.name(node, "size"), size),
                ],
                [out],
                name=node.name,
            )
        else:
            ax = int(kind[len("gather") :])
            src = np.arange(-begin[ax], dims[ax] + end[ax])
            idx = np.clip(src, 0, dims[ax] - 1) if mode == "edge" else np.mod(src, dims[ax])
            ind = b.add_constant(ctx.name(node, f"indices_{ax}"), idx.astype(np.int32))
            b.add_op("GATHER", [cur, ind], [out], name=node.name, axis=ax, batchDims=0)
        cur = out
