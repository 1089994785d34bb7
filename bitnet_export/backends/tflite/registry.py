"""The lowering registry: one function per ONNX op (or hub op), registered by decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx_ir as ir

    from bitnet_export.backends.tflite.context import LoweringContext

__all__ = ["LOWERINGS", "Lowering", "lowers"]

Lowering = Callable[["LoweringContext", "ir.Node"], None]

#: ``(domain, op_type)`` -> lowering function.
LOWERINGS: dict[tuple[str, str], Lowering] = {}


def lowers(op_type: str, domain: str = "") -> Callable[[Lowering], Lowering]:
    """Register ``fn`` as the TFLite lowering of ONNX ``op_type`` (in ``domain``)."""

    def register(fn: Lowering) -> Lowering:
        LOWERINGS[(domain, op_type)] = fn
        return fn

    return register
