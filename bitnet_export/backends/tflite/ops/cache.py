"""The static KV-cache write (hub op ``bitnet_export.CacheUpdate``) -> DYNAMIC_UPDATE_SLICE.

``CacheUpdate(cache, update, start[1], axis)`` writes ``update`` into ``cache`` from position
``start`` along ``axis``. DYNAMIC_UPDATE_SLICE takes one start index per dimension: zeros, with
``start`` (int32) at ``axis``. TFLite clamps a start that would overflow the cache (XLA
semantics) instead of failing, so callers must keep ``start + len <= cache length``: the
LiteRT-LM bundle records the cache length, and the step loops check it before every call.
"""

from __future__ import annotations

import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext, node_input
from bitnet_export.backends.tflite.ops._util import (
    all_checks,
    attr_int,
    int_constant,
    rank,
    shapes_known,
    temp,
)
from bitnet_export.backends.tflite.registry import lowers


def _check(node: ir.Node) -> str | None:
    start = node_input(node, 2)
    if start.dtype != ir.DataType.INT32:
        return "the start position must be int32 (TFLite's DYNAMIC_UPDATE_SLICE indices)"
    return None


@lowers("CacheUpdate", domain="bitnet_export", check=all_checks(shapes_known, _check))
def lower_cache_update(ctx: LoweringContext, node: ir.Node) -> None:
    """``cache[.., start:start+S, ..] = update`` as DYNAMIC_UPDATE_SLICE."""
    cache, update, start = (node_input(node, i) for i in range(3))
    r = rank(cache)
    axis = attr_int(node, "axis", 2) % r
    before = int_constant(ctx, node, "start_before", [0] * axis)
    after = int_constant(ctx, node, "start_after", [0] * (r - axis - 1))
    parts = [
        i
        for i in (before if axis else None, ctx.tensor(start, node), after if r - axis - 1 else None)
        if i is not None
    ]
    starts = temp(ctx, node, "starts", [r], "int32")
    ctx.builder.add_op(
        "CONCATENATION", parts, [starts], name=f"{node.name}/starts", axis=0, fusedActivationFunction=0
    )
    out = ctx.new_tensor(node.outputs[0])
    ctx.builder.add_op(
        "DYNAMIC_UPDATE_SLICE",
        [ctx.tensor(cache, node), ctx.tensor(update, node), starts],
        [out],
        name=node.name,
    )
