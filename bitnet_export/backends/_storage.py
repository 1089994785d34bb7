"""Weight storage shared by both backends: which integer range each storage type holds."""

from __future__ import annotations

from typing import Final

from bitnet_export.errors import ExportError
from bitnet_export.quant.params import LayerQuantParams

__all__ = ["STORAGE_RANGE", "check_storage"]

#: Signed range of each weight storage type (INT4/INT2 as ONNX and TFLite define them).
STORAGE_RANGE: Final = {"int8": (-128, 127), "int4": (-8, 7), "int2": (-2, 1)}


def check_storage(p: LayerQuantParams, storage: str) -> None:
    """Raise :class:`ExportError` naming the layer when ``storage`` cannot hold its weight codes."""
    lo, hi = STORAGE_RANGE[storage]
    codes = p.weight.values
    if codes.min() < lo or codes.max() > hi:
        raise ExportError(
            f"layer {p.module_path!r} (BitNetLayer, precision={p.weight.precision}): weight codes "
            f"span {int(codes.min())}..{int(codes.max())}, which {storage} storage ({lo}..{hi}) "
            "cannot hold; use weights='int8' or a precision that fits (int4: <= 4, int2: ternary, "
            "binary or 2)"
        )
