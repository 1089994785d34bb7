"""The lowering registry: one function per ONNX op (or hub op), registered by decorator.

The registry is also the backend's op table: a lowering may register a ``check`` that says,
from the hub node alone (static shapes, constant inputs, attributes), why that node cannot be
lowered. :func:`bitnet_export.backends.tflite.convert.check_supported` runs every check before
anything is lowered, so all unsupported ops and configurations are reported in one error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx_ir as ir

    from bitnet_export.backends.tflite.context import LoweringContext

__all__ = ["CHECKS", "LOWERINGS", "Check", "Lowering", "lowers"]

Lowering = Callable[["LoweringContext", "ir.Node"], None]
#: ``check(node)``: ``None`` when the lowering can take ``node``, else the reason and the fix.
Check = Callable[["ir.Node"], "str | None"]

#: ``(domain, op_type)`` -> lowering function.
LOWERINGS: dict[tuple[str, str], Lowering] = {}
#: ``(domain, op_type)`` -> pre-flight check of the lowering's constraints.
CHECKS: dict[tuple[str, str], Check] = {}


def lowers(op_type: str, domain: str = "", check: Check | None = None) -> Callable[[Lowering], Lowering]:
    """Register ``fn`` as the TFLite lowering of ONNX ``op_type`` (in ``domain``).

    Args:
        op_type: the ONNX op type.
        domain: the op's domain (``""`` for the default ONNX domain).
        check: the lowering's constraints as a pre-flight predicate (see :data:`Check`).
    """

    def register(fn: Lowering) -> Lowering:
        LOWERINGS[(domain, op_type)] = fn
        if check is not None:
            CHECKS[(domain, op_type)] = check
        return fn

    return register
