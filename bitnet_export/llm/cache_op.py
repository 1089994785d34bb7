"""``bitnet_export::cache_update``: write new key/value rows into a static KV cache.

One graph node for "``cache[:, :, start:start+S] = update``" (a functional copy, the input is not
mutated). The hub carries it as ``bitnet_export.CacheUpdate`` and the TFLite backend lowers it to
``DYNAMIC_UPDATE_SLICE``, which is what LiteRT-LM's static caches are updated with. ``start`` is
a one-element int32 tensor (the first position written), ``axis`` the sequence axis.
"""

from __future__ import annotations

from typing import Any, Final

import onnxscript
import torch
from onnx.defs import OpSchema, has, register_schema

__all__ = ["DOMAIN", "OP_TYPE", "cache_update", "translation_table"]

DOMAIN: Final = "bitnet_export"
OP_TYPE: Final = "CacheUpdate"


@torch.library.custom_op(f"{DOMAIN}::cache_update", mutates_args=())
def cache_update(cache: torch.Tensor, update: torch.Tensor, start: torch.Tensor, axis: int) -> torch.Tensor:
    """``cache`` with ``update`` written at ``start`` along ``axis`` (a new tensor).

    Raises:
        ValueError: the update does not fit (``start + len > cache length``): a cache overflow.
    """
    pos = int(start.reshape(-1)[0])
    n = update.shape[axis]
    if pos < 0 or pos + n > cache.shape[axis]:
        raise ValueError(
            f"cache_update: writing {n} position(s) at {pos} overflows a cache of {cache.shape[axis]}"
        )
    out = cache.clone()
    out.narrow(axis, pos, n).copy_(update)
    return out


@cache_update.register_fake
def _cache_update_fake(
    cache: torch.Tensor, update: torch.Tensor, start: torch.Tensor, axis: int
) -> torch.Tensor:
    return torch.empty_like(cache)


def _register_onnx_schema() -> None:
    if has(OP_TYPE, DOMAIN):
        return
    formal = OpSchema.FormalParameter
    register_schema(
        OpSchema(
            OP_TYPE,
            DOMAIN,
            1,
            doc="Static KV-cache write (lowered to TFLite DYNAMIC_UPDATE_SLICE).",
            inputs=[formal("cache", "T"), formal("update", "T"), formal("start", "TI")],
            outputs=[formal("y", "T")],
            type_constraints=[
                ("T", ["tensor(float)"], "cache values"),
                ("TI", ["tensor(int32)", "tensor(int64)"], "first position written"),
            ],
            attributes=[OpSchema.Attribute("axis", OpSchema.AttrType.INT, "sequence axis")],
        )
    )


_register_onnx_schema()
_OPSET = onnxscript.values.Opset(DOMAIN, 1)


def _translate(cache: Any, update: Any, start: Any, axis: int = 2) -> Any:
    return _OPSET.CacheUpdate(cache, update, start, axis=axis)


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` entries for ``torch.onnx.export``."""
    return {torch.ops.bitnet_export.cache_update.default: _translate}
