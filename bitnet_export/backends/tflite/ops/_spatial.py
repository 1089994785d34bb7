"""What convolutions, pools and resizes share: window attributes, padding, the NHWC region.

ONNX spatial ops are channels-first (NCHW, or NCL for 1-D); TFLite's are NHWC. Inputs are
taken channels-last (``ctx.tensor(x, node, NCHW_TO_NHWC)``) and outputs bound channels-last, so
a chain of spatial and elementwise ops has transposes only at its edges. A 1-D op runs as the
2-D op over ``[N, 1, L, C]`` (two RESHAPEs, no transpose: NLC is the 1-D value's channels-last
layout).

Padding: ONNX pads are explicit (``[x1_begin, x2_begin, x1_end, x2_end]``) or ``auto_pad``.
TFLite has SAME (``total = max((ceil(in/s) - 1)*s + (k-1)*d + 1 - in, 0)``, the smaller half
first) and VALID. Pads equal to SAME's use SAME; anything else is an explicit PAD before a
VALID op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import NCHW_TO_NHWC, LoweringContext, channels_last, node_input

__all__ = [
    "Window",
    "check_spatial_input",
    "explicit_pad",
    "resolve_pads",
    "spatial_input",
    "spatial_output",
    "tflite_padding",
    "window",
]


@dataclass(frozen=True)
class Window:
    """One spatial op's window over the 2-D (H, W) view; 1-D ops have H = 1, kernel 1."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads_begin: tuple[int, int]
    pads_end: tuple[int, int]

    def effective(self, i: int) -> int:
        """The dilated kernel extent along spatial axis ``i``."""
        return (self.kernel[i] - 1) * self.dilations[i] + 1


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return [int(v) for v in attr.as_ints()] if attr is not None else default


def spatial_dims(value: ir.Value) -> list[int] | None:
    """The static spatial dims of a channels-first value, or ``None`` when unknown/symbolic."""
    if value.shape is None or len(value.shape) < 3:
        return None
    dims = list(value.shape)[2:]
    ints = [d for d in dims if isinstance(d, int)]
    return ints if len(ints) == len(dims) else None


def check_spatial_input(node: ir.Node, ranks: tuple[int, ...] = (3, 4)) -> str | None:
    """Pre-flight: the input is 1-D/2-D spatial (NCL/NCHW) with static C and spatial dims."""
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None:
        return f"{node.op_type} needs an input of known shape; export with a static example input"
    rank = len(x.shape)
    if rank not in ranks:
        spatial = ", ".join(f"{r - 2}-D" for r in ranks)
        return f"{node.op_type} over {rank - 2}-D input has no TFLite builtin (only {spatial})"
    if not isinstance(x.shape[1], int) or spatial_dims(x) is None:
        return f"{node.op_type} needs static channel and spatial dims; export with a static shape"
    return None


def resolve_pads(
    node: ir.Node, in_spatial: list[int], kernel: list[int]
) -> tuple[list[int], list[int], list[int], list[int]]:
    """``(strides, dilations, pads_begin, pads_end)`` per spatial axis, ``auto_pad`` resolved."""
    n = len(in_spatial)
    strides = _ints(node, "strides", [1] * n)
    dilations = _ints(node, "dilations", [1] * n)
    attr = node.attributes.get("auto_pad")
    auto = attr.as_string() if attr is not None else "NOTSET"
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            out = -(-in_spatial[i] // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_spatial[i], 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    elif auto == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = _ints(node, "pads", [0] * (2 * n))
        begin, end = pads[:n], pads[n:]
    return strides, dilations, begin, end


def window(node: ir.Node, in_spatial: list[int], kernel: list[int]) -> Window:
    """Kernel, strides, dilations and explicit pads (``auto_pad`` resolved) as a 2-D window."""
    n = len(in_spatial)
    strides, dilations, begin, end = resolve_pads(node, in_spatial, kernel)
    if n == 1:  # 1-D: the 2-D op over [N, 1, L, C]
        kernel, strides, dilations = [1, *kernel], [1, *strides], [1, *dilations]
        begin, end = [0, *begin], [0, *end]
    return Window(
        (kernel[0], kernel[1]),
        (strides[0], strides[1]),
        (dilations[0], dilations[1]),
        (begin[0], begin[1]),
        (end[0], end[1]),
    )


def tflite_padding(w: Window, in_hw: list[int], out_hw: list[int]) -> str | None:
    """``"VALID"`` or ``"SAME"`` when TFLite's padding is exactly ``w``'s pads, else ``None``.

    The output size must also be TFLite's (ONNX ``ceil_mode`` may add a row/column).
    """
    if w.pads_begin == (0, 0) and w.pads_end == (0, 0):
        valid = [(in_hw[i] - w.effective(i)) // w.strides[i] + 1 for i in range(2)]
        return "VALID" if valid == list(out_hw) else None
    for i in range(2):
        out = -(-in_hw[i] // w.strides[i])
        total = max((out - 1) * w.strides[i] + w.effective(i) - in_hw[i], 0)
        if out != out_hw[i] or (w.pads_begin[i], w.pads_end[i]) != (total // 2, total - total // 2):
            return None
    return "SAME"


def explicit_pad(
    ctx: LoweringContext,
    node: ir.Node,
    x: int,
    nhwc: list[int],
    sig: list[int],
    begin: tuple[int, int],
    end: tuple[int, int],
    value: float = 0.0,
) -> tuple[int, list[int]]:
    """PAD (zeros) or PADV2 (``value``) an NHWC tensor on H and W; returns (tensor, new dims)."""
    if begin == (0, 0) and end == (0, 0):
        return x, nhwc
    pads = np.array([[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]], dtype=np.int32)
    dims = [nhwc[0], nhwc[1] + begin[0] + end[0], nhwc[2] + begin[1] + end[1], nhwc[3]]
    out_sig = [sig[0], *dims[1:]]
    b = ctx.builder
    out = b.add_tensor(ctx.name(node, "padded"), dims, "float32", shape_signature=out_sig)
    p = b.add_constant(ctx.name(node, "paddings"), pads)
    if value == 0.0:
        b.add_op("PAD", [x, p], [out], name=node.name)
    else:
        v = b.add_constant(ctx.name(node, "pad_value"), np.array([value], dtype=np.float32))
        b.add_op("PADV2", [x, p, v], [out], name=node.name)
    return out, dims


def spatial_input(ctx: LoweringContext, node: ir.Node, i: int = 0) -> tuple[int, list[int], list[int]]:
    """Input ``i`` as a 4-D NHWC tensor: ``(tensor, dims, signature)``."""
    x = node_input(node, i)
    dims, sig = ctx.shape(x)
    perm = channels_last(len(dims))
    idx = ctx.tensor(x, node, NCHW_TO_NHWC if len(dims) == 4 else perm)
    nhwc, nsig = [dims[i] for i in perm], [sig[i] for i in perm]
    if len(dims) == 4:
        return idx, nhwc, nsig
    # [N, L, C] -> [N, 1, L, C]
    d4, s4 = [nhwc[0], 1, *nhwc[1:]], [nsig[0], 1, *nsig[1:]]
    out = ctx.builder.add_tensor(ctx.name(node, "as_2d"), d4, "float32", shape_signature=s4)
    shape = ctx.builder.add_constant(ctx.name(node, "shape_2d"), np.array(s4, dtype=np.int32))
    ctx.builder.add_op("RESHAPE", [idx, shape], [out], name=node.name, newShape=s4)
    return out, d4, s4


def spatial_output(
    ctx: LoweringContext, node: ir.Node, i: int = 0
) -> tuple[int, list[int], Callable[[], None]]:
    """The 4-D NHWC tensor the op writes output ``i`` to: ``(tensor, dims, finish)``.

    Call ``finish()`` after emitting the op: for a 1-D op it RESHAPEs ``[N, 1, L, C]`` to the
    channels-last ``[N, L, C]`` the output is bound in.
    """
    value = node.outputs[i]
    dims, sig = ctx.shape(value)
    perm = channels_last(len(dims))
    if len(dims) == 4:
        return ctx.new_tensor(value, perm=NCHW_TO_NHWC), [dims[j] for j in perm], lambda: None
    nlc, nsig = [dims[j] for j in perm], [sig[j] for j in perm]
    d4, s4 = [nlc[0], 1, *nlc[1:]], [nsig[0], 1, *nsig[1:]]
    tmp = ctx.builder.add_tensor(ctx.name(node, "output_2d"), d4, "float32", shape_signature=s4)

    def finish() -> None:
        out = ctx.new_tensor(value, perm=perm)
        shape = ctx.builder.add_constant(ctx.name(node, "shape_1d"), np.array(nsig, dtype=np.int32))
        ctx.builder.add_op("RESHAPE", [tmp, shape], [out], name=node.name, newShape=nsig)

    return tmp, d4, finish
