"""Fuse rotary-embedding op chains into ONNX ``RotaryEmbedding`` (opset 23): one kernel for six.

At decode time (one token) every op of the decoder is the launch of a tiny kernel, and the
BitNet matmuls of the fast path are fast enough that these launches weigh. Rotary embedding as
HF writes it (and :mod:`bitnet_export.llm.decoder`), ``t * cos + rotate_half(t) * sin`` with
``cos = table[position_ids]`` (``Gather`` of a constant table whose two halves are equal,
``Unsqueeze`` over heads) and ``rotate_half(t) = Concat(-t[..., h:], t[..., :h])`` on a 4-D
``[batch, heads, seq, head_dim]`` ``t``, becomes ``RotaryEmbedding`` with half tables and the
position ids. (RMSNorm needs no pass here: torch.onnx's optimizer writes ``RMSNormalization``
itself at opset 23, and keeps the op chain at 21 and 25.)

The fused kernel rounds differently from the chain (another operation order), so a fused graph
is *not* bit-identical with PyTorch: only the fast path uses it (``export_llm(weights=
"matmulnbits")``, opset 23), never an exact one, where one flipped activation code changes the
logits (measured: fusing a random 100M ternary LM's RMSNorms moved its logits by ~80 % of their
range over 32 steps). Measured with torch's RMSNorm fusion: 4.99x -> 5.28x fp32's decode speed
at 1 thread (bench_llm, the 100M ternary LM).

A chain is fused only when it goes away with it: its negation, rotation and products feed
nothing else and no intermediate is a graph output (the slices of ``t`` may have other readers);
its constants are constants of the expected values.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

__all__ = ["fuse_rope"]


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        tensor = producer.attributes["value"].as_tensor()
        return tensor.numpy()
    return None


def _other(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The input of the binary ``node`` that is not ``value`` (None if both or neither are)."""
    a, b = node.inputs[0], node.inputs[1]
    if a is value and b is not value:
        return b
    if b is value and a is not value:
        return a
    return None


def _slice_of_last_axis(node: ir.Node | None, t: ir.Value, rank: int) -> tuple[int, int] | None:
    """``(start, end)`` of a ``Slice(t, start, end, axes=[last], steps=[1])`` node."""
    if node is None or node.op_type != "Slice" or node.domain != "" or node.inputs[0] is not t:
        return None
    ins = list(node.inputs) + [None] * (5 - len(node.inputs))
    starts, ends, axes, steps = (_const(v) for v in ins[1:5])
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if axes is not None and (axes.size != 1 or int(axes.reshape(-1)[0]) not in (-1, rank - 1)):
        return None
    if steps is not None and (steps.size != 1 or int(steps.reshape(-1)[0]) != 1):
        return None
    return int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])


def _position_table(value: ir.Value | None) -> tuple[np.ndarray, ir.Value] | None:
    """``Unsqueeze(Gather(table, position_ids), 1)`` -> ``(table, position_ids)``."""
    unsq = value.producer() if value is not None else None
    if unsq is None or unsq.op_type != "Unsqueeze" or unsq.domain != "":
        return None
    axes = _const(unsq.inputs[1] if len(unsq.inputs) > 1 else None)
    if axes is None or axes.size != 1 or int(axes.reshape(-1)[0]) != 1:
        return None
    gather = unsq.inputs[0].producer() if unsq.inputs[0] is not None else None
    if gather is None or gather.op_type != "Gather" or gather.domain != "":
        return None
    axis = gather.attributes.get("axis")
    table = _const(gather.inputs[0])
    pos = gather.inputs[1]
    if (axis is not None and axis.as_int() != 0) or table is None or table.ndim != 2 or pos is None:
        return None
    if pos.shape is None or len(pos.shape) != 2:
        return None
    return table, pos


def _match_rope(add: ir.Node) -> tuple[ir.Value, np.ndarray, np.ndarray, ir.Value] | None:
    """``(t, cos half table, sin half table, position_ids)`` when ``add`` is ``t*cos + rot(t)*sin``."""
    if len(add.inputs) != 2 or any(v is None for v in add.inputs):
        return None
    a, b = add.inputs[0], add.inputs[1]
    assert a is not None and b is not None
    for va, vb in ((a, b), (b, a)):
        mul_c, mul_s = va.producer(), vb.producer()
        if mul_c is None or mul_s is None or mul_c.op_type != "Mul" or mul_s.op_type != "Mul":
            continue
        for cat_i in (0, 1):
            rotated = mul_s.inputs[cat_i]
            cat = rotated.producer() if rotated is not None else None
            if cat is None or cat.op_type != "Concat" or len(cat.inputs) != 2:
                continue
            neg = cat.inputs[0].producer() if cat.inputs[0] is not None else None
            if neg is None or neg.op_type != "Neg" or neg.inputs[0] is None:
                continue
            hi = neg.inputs[0].producer()
            t = hi.inputs[0] if hi is not None else None
            if t is None or t.shape is None or len(t.shape) != 4 or not isinstance(t.shape[-1], int):
                continue
            d = t.shape[-1]
            half = d // 2
            if d % 2 or _other(mul_c, t) is None:
                continue
            cat_axis = cat.attributes.get("axis")
            if cat_axis is None or cat_axis.as_int() not in (-1, 3):
                continue
            lo = cat.inputs[1].producer() if cat.inputs[1] is not None else None
            hi_range, lo_range = _slice_of_last_axis(hi, t, 4), _slice_of_last_axis(lo, t, 4)
            if hi_range is None or lo_range is None or hi_range[0] != half or hi_range[1] < d:
                continue
            if lo_range != (0, half):
                continue
            cos = _position_table(_other(mul_c, t))
            sin = _position_table(mul_s.inputs[1 - cat_i])
            if cos is None or sin is None or cos[1] is not sin[1]:
                continue
            tables = []
            for table, _ in (cos, sin):
                if table.shape[1] != d or not np.array_equal(table[:, :half], table[:, half:]):
                    break
                tables.append(np.ascontiguousarray(table[:, :half]))
            if len(tables) != 2:
                continue
            assert hi is not None and lo is not None
            inner = [hi.outputs[0], neg.outputs[0], lo.outputs[0], cat.outputs[0]]
            inner += [mul_c.outputs[0], mul_s.outputs[0]]
            if any(v.is_graph_output() for v in inner):
                continue
            if any(len(list(v.uses())) != 1 for v in inner[1:2] + inner[3:]):
                continue
            return t, tables[0], tables[1], cos[1]
    return None


def fuse_rope(model: ir.Model) -> int:
    """Replace every rotary-embedding chain of ``model``'s main graph in place; the number fused.

    The chain's final ``Add`` is replaced; what it read and nothing else reads any more (the
    rotation, the cos / sin gathers) is removed after. Needs opset >= 23 (``RotaryEmbedding``).
    """
    if model.opset_imports.get("", 0) < 23:
        return 0
    graph = model.graph
    fused = 0
    halves: dict[tuple[int, bytes], ir.Value] = {}

    def table_value(role: str, table: np.ndarray) -> ir.Value:
        key = (table.shape[0], table.tobytes())
        if key not in halves:
            name = f"rope.{role}_half_{len(halves)}"
            value = ir.Value(name=name, shape=ir.Shape(table.shape), type=ir.TensorType(ir.DataType.FLOAT))
            value.const_value = ir.tensor(table.astype(np.float32), name=name)
            graph.register_initializer(value)
            halves[key] = value
        return halves[key]

    for node in [n for n in graph if n.op_type == "Add" and n.domain == ""]:
        found = _match_rope(node)
        if found is None:
            continue
        t, cos, sin, pos = found
        new = ir.node(
            "RotaryEmbedding",
            [t, table_value("cos", cos), table_value("sin", sin), pos],
            attributes={"interleaved": 0},
            name=f"{node.name or 'rope'}/RotaryEmbedding",
        )
        out = node.outputs[0]
        name = out.name
        ir.convenience.replace_nodes_and_values(graph, node, [node], [new], [out], [new.outputs[0]])
        new.outputs[0].name = name
        fused += 1
    if fused:  # the rotations and gathers nothing reads any more
        RemoveUnusedNodesPass()(model)
    return fused
