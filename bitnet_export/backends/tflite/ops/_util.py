"""Hub-reading helpers shared by the shape, logic, reduce, matmul and norm lowerings.

Attribute and constant-input access, static shapes, and the pre-flight checks several op
families register (shapes known, ranks within a TFLite kernel's limit). Nothing here emits a
TFLite op except the small tensor helpers at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.context import LoweringContext
from bitnet_export.backends.tflite.registry import Check

__all__ = [
    "MAX_RANK",
    "all_checks",
    "attr_float",
    "attr_int",
    "attr_ints",
    "const_array",
    "dtype_check",
    "int_constant",
    "normalize_axis",
    "opset",
    "optional_input",
    "rank",
    "shapes_known",
    "static_dims",
    "temp",
]

#: The highest rank LiteRT 2.3's TRANSPOSE, broadcasting binary ops (MUL, LESS, LOGICAL_AND...),
#: SELECT_V2 and STRIDED_SLICE were measured to run (9-D: refused at prepare, or an abort).
#: BATCH_MATMUL takes 5 (its own check).
MAX_RANK = 8


def attr_int(node: ir.Node, name: str, default: int) -> int:
    """Integer attribute ``name`` of ``node`` (``default`` when absent)."""
    a = node.attributes.get(name)
    return a.as_int() if a is not None else default


def attr_float(node: ir.Node, name: str, default: float) -> float:
    """Float attribute ``name`` of ``node`` (``default`` when absent)."""
    a = node.attributes.get(name)
    return a.as_float() if a is not None else default


def attr_ints(node: ir.Node, name: str) -> list[int] | None:
    """Integer-list attribute ``name`` of ``node`` (``None`` when absent)."""
    a = node.attributes.get(name)
    return [int(i) for i in a.as_ints()] if a is not None else None


def opset(node: ir.Node) -> int:
    """The opset version ``node`` is defined in (its own version, else the graph's import)."""
    if node.version is not None:
        return int(node.version)
    graph = node.graph
    if graph is not None:
        v = graph.opset_imports.get(node.domain or "")
        if v is not None:
            return int(v)
    return 1_000  # unknown: assume the newest semantics


def optional_input(node: ir.Node, i: int) -> ir.Value | None:
    """Input ``i`` of ``node``, or ``None`` when it is absent or empty."""
    return node.inputs[i] if i < len(node.inputs) else None


def const_array(node: ir.Node, i: int) -> np.ndarray | None:
    """The constant data of input ``i`` (``None``: absent or computed at run time)."""
    v = optional_input(node, i)
    if v is None or v.const_value is None:
        return None
    return np.asarray(v.const_value.numpy())


def rank(value: ir.Value) -> int:
    """The rank of ``value`` (-1 when the hub does not know it)."""
    return len(value.shape) if value.shape is not None else -1


def static_dims(value: ir.Value) -> list[int | None] | None:
    """The dims of ``value``: ints, ``None`` for symbolic ones; ``None`` when the rank is unknown."""
    if value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape]


def normalize_axis(axis: int, r: int) -> int:
    """``axis`` in ``[0, r)`` (ONNX counts negative axes from the end)."""
    return axis + r if axis < 0 else axis


def shapes_known(node: ir.Node) -> str | None:
    """Check: every present input and output has a known rank (TFLite needs static ranks)."""
    for v in [*node.inputs, *node.outputs]:
        if v is not None and v.shape is None:
            return (
                f"value {v.name!r} has no known shape; export with example inputs of the real rank "
                "(or run shape inference on the hub)"
            )
    return None


def dtype_check(allowed: Sequence[ir.DataType], what: str = "input 0", index: int = 0) -> Check:
    """Check: input ``index`` (``-1``: output 0) has one of the ``allowed`` element types."""

    def check(node: ir.Node) -> str | None:
        v = node.outputs[0] if index < 0 else optional_input(node, index)
        if v is None or v.dtype is None or v.dtype in allowed:
            return None
        names = ", ".join(d.name for d in allowed)
        return f"{what} is {v.dtype.name}; the TFLite kernel takes {names}"

    return check


def all_checks(*checks: Check) -> Check:
    """One check that runs ``checks`` in order and returns the first refusal."""

    def check(node: ir.Node) -> str | None:
        for c in checks:
            reason = c(node)
            if reason:
                return reason
        return None

    return check


# ---------------------------------------------------------------------------- emitting


def int_constant(ctx: LoweringContext, node: ir.Node, role: str, values: object, dtype: str = "int32") -> int:
    """A constant int tensor (shape operands: axes, begins, sizes...) named after ``node``."""
    return ctx.builder.add_constant(f"{node.name or node.op_type}/{role}", np.asarray(values, dtype=dtype))


def temp(
    ctx: LoweringContext,
    node: ir.Node,
    role: str,
    dims: Sequence[int],
    dtype: str,
    sig: Sequence[int] | None = None,
) -> int:
    """An intermediate tensor of ``node``."""
    return ctx.builder.add_tensor(
        f"{node.name or node.op_type}/{role}", list(dims), dtype, shape_signature=list(sig or dims)
    )
