"""Hugging Face BitNet linears -> BitNetLayers with the same maths.

``transformers.integrations.bitnet`` has two linear layers (read from transformers 5.x):

``BitLinear`` (the packed checkpoint form, ``linear_class="bitlinear"``)
    ``weight``: uint8 ``[ceil(out/4), in]``, four ternary rows per stored row: stored row
    ``r`` holds rows ``r + i*R`` (``R`` = stored rows) in bits ``2i..2i+1`` as ``code + 1``.
    ``weight_scale`` ``[1]`` **divides**: ``gamma = 127 / max(max|x|, 1e-5)`` per token,
    ``q = clamp(round(x * gamma), -128, 127)``, ``y = (q @ codes^T) / (weight_scale * gamma)``,
    then ``+ bias``. So ``W ~= codes / weight_scale``: a BitNetLayer with frozen ``codes`` and
    scale ``1 / weight_scale``.

``AutoBitLinear`` (an ``nn.Linear`` subclass, ``linear_class="autobitlinear"``)
    activations as above, dequantized (``q / gamma``) before a float ``F.linear``.
    ``online_quant=True``: ``s = 1 / max(mean|W|, 1e-5)``, ``W ~= clamp(round(W*s), -1, 1) / s``
    (BitNet b1.58 absmean: a plain ternary BitNetLayer on the latent weight).
    Offline: ``weight`` already holds ternary codes (float) and ``weight_scale`` **multiplies
    after the bias**: ``y = (x_dq @ codes^T + bias) * weight_scale``, i.e. a frozen BitNetLayer
    with scale ``weight_scale`` and bias ``bias * weight_scale``.

BitNetLayer's defaults are these maths (8-bit per-token absmax activations in ``-128..127``,
``eps = 1e-5``, round half to even); the float results agree up to float32 rounding (the
order of the final multiplications differs). Nothing here imports transformers: the classes
are recognised by their module and name.
"""

from __future__ import annotations

import sys
from typing import Literal

import torch
from torch import nn

from bitnet_export.errors import QuantConfigError
from bitnet_export.layers.bitnet import BitNetLayer

__all__ = [
    "HF_MODULE",
    "HFKind",
    "bitnet_layer_from_hf",
    "hf_kind",
    "pack_ternary",
    "ternary_codes",
    "unpack_ternary",
]

#: Where transformers defines its BitNet linears.
HF_MODULE = "transformers.integrations.bitnet"
#: ``"bitlinear"`` (packed), ``"autobitlinear_online"``, ``"autobitlinear_offline"``.
HFKind = Literal["bitlinear", "autobitlinear_online", "autobitlinear_offline"]
#: Ternary values per stored uint8 (2 bits each).
VALUES_PER_BYTE = 4


def hf_kind(module: nn.Module) -> HFKind | None:
    """Which Hugging Face BitNet linear ``module`` is, or ``None`` for any other module."""
    hf = sys.modules.get(HF_MODULE)  # imported iff such modules exist
    if hf is None:
        return None
    bit_linear = getattr(hf, "BitLinear", None)
    auto_bit_linear = getattr(hf, "AutoBitLinear", None)
    if isinstance(bit_linear, type) and isinstance(module, bit_linear):
        return "bitlinear"
    if isinstance(auto_bit_linear, type) and isinstance(module, auto_bit_linear):
        return "autobitlinear_online" if getattr(module, "online_quant", False) else "autobitlinear_offline"
    return None


def unpack_ternary(packed: torch.Tensor, out_features: int, *, where: str = "weight") -> torch.Tensor:
    """Ternary codes ``[out_features, in]`` int8 from transformers' 2-bit packing.

    Stored row ``r`` holds original rows ``r + i*R`` (``i = 0..3``, ``R = packed.shape[0]``) in
    bits ``2i..2i+1`` as ``code + 1`` (0, 1, 2); rows past ``out_features`` are padding.

    Raises:
        QuantConfigError: not uint8, not 2-D, ``R != ceil(out_features / 4)``, or a field
            holding 3 (not a ternary code).
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise QuantConfigError(
            f"{where}: a packed ternary weight is a 2-D uint8 tensor, got {packed.dtype} of shape "
            f"{tuple(packed.shape)}"
        )
    rows = (out_features + VALUES_PER_BYTE - 1) // VALUES_PER_BYTE
    if packed.shape[0] != rows:
        raise QuantConfigError(
            f"{where}: packed weight of shape {tuple(packed.shape)} holds "
            f"{packed.shape[0] * VALUES_PER_BYTE} rows but the layer has out_features={out_features}; "
            f"expected [{rows}, in_features] "
            "(4 ternary rows per uint8 row): is the checkpoint for this model config?"
        )
    p = packed.to(torch.int16)
    fields = torch.cat([(p >> (2 * i)) & 3 for i in range(VALUES_PER_BYTE)], dim=0)[:out_features]
    if bool((fields == 3).any()):
        raise QuantConfigError(
            f"{where}: packed weight has 2-bit fields equal to 3, not a ternary code (0, 1, 2 = -1, 0, +1); "
            "the tensor is not in transformers' pack_weights format"
        )
    return (fields - 1).to(torch.int8)


def pack_ternary(codes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unpack_ternary`: uint8 ``[ceil(out/4), in]`` (transformers' layout)."""
    out_features = codes.shape[0]
    rows = (out_features + VALUES_PER_BYTE - 1) // VALUES_PER_BYTE
    fields = torch.zeros((rows * VALUES_PER_BYTE, *codes.shape[1:]), dtype=torch.int16, device=codes.device)
    fields[:out_features] = codes.to(torch.int16) + 1
    packed = torch.zeros((rows, *codes.shape[1:]), dtype=torch.int16, device=codes.device)
    for i in range(VALUES_PER_BYTE):
        packed |= fields[i * rows : (i + 1) * rows] << (2 * i)
    return packed.to(torch.uint8)


def ternary_codes(weight: torch.Tensor, *, where: str) -> torch.Tensor:
    """``weight`` (float or int holding -1, 0, +1) as int8 codes.

    Raises:
        QuantConfigError: a value other than -1, 0, +1 (e.g. a latent float weight).
    """
    w = weight.detach()
    if not bool(((w == -1) | (w == 0) | (w == 1)).all()):
        bad = w[(w != -1) & (w != 0) & (w != 1)].flatten()[:3].tolist()
        raise QuantConfigError(
            f"{where}: expected ternary codes (-1, 0, +1) but found values such as {bad}; an "
            "offline AutoBitLinear must hold its checkpoint's codes (load the checkpoint first), "
            "or drop weight_scale to treat the tensor as a latent float weight"
        )
    return w.to(torch.int8)


def _weight_scale(module: nn.Module, where: str) -> torch.Tensor:
    scale = getattr(module, "weight_scale", None)
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise QuantConfigError(f"{where}: has no float weight_scale buffer")
    return scale.detach().float().reshape(-1)


def _check_positive(scale: torch.Tensor, where: str) -> None:
    if not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise QuantConfigError(
            f"{where}: weight_scale must be positive and finite, got {scale.flatten()[:4].tolist()}; "
            "the checkpoint's weight_scale is not loaded or corrupt"
        )


def bitnet_layer_from_hf(module: nn.Module, path: str, **options: object) -> BitNetLayer:
    """A BitNetLayer computing what the Hugging Face BitNet linear ``module`` computes.

    Args:
        module: a ``BitLinear`` or ``AutoBitLinear`` (see :func:`hf_kind`).
        path: its module path (for messages).
        **options: quantization options for the new layer (default: HF's maths).

    Returns:
        A ternary BitNetLayer: frozen codes for ``BitLinear`` and offline ``AutoBitLinear``,
        the latent float weight for online ``AutoBitLinear``.

    Raises:
        QuantConfigError: not an HF BitNet linear, an offline weight that is not ternary, a
            weight scale that is not positive, or a bad option.
    """
    kind = hf_kind(module)
    where = f"convert_to_bitnet: '{path}' ({type(module).__name__})"
    in_f = int(module.in_features)  # type: ignore[arg-type]
    out_f = int(module.out_features)  # type: ignore[arg-type]
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise QuantConfigError(f"{where}: has no weight tensor")
    bias = getattr(module, "bias", None)
    bias_f = bias.detach().float() if isinstance(bias, torch.Tensor) else None
    if kind == "bitlinear":
        codes = unpack_ternary(weight, out_f, where=where)
        ws = _weight_scale(module, where)
        _check_positive(ws, where)
        scale = torch.reciprocal(ws)  # y / (ws * gamma) == (q @ codes^T) * (1/ws) / gamma
        layer = BitNetLayer.from_quantized(codes, scale, bias_f, precision=1.58, **options)
    elif kind == "autobitlinear_offline":
        codes = ternary_codes(weight, where=where)
        ws = _weight_scale(module, where)
        _check_positive(ws, where)
        # (x @ codes^T + b) * ws == x @ (codes * ws)^T + b * ws
        bias_s = None if bias_f is None else bias_f * ws
        layer = BitNetLayer.from_quantized(codes, ws, bias_s, precision=1.58, **options)
    elif kind == "autobitlinear_online":
        layer = BitNetLayer(in_f, out_f, precision=1.58, bias=bias_f is not None, **options)
        layer.to(device=weight.device)
        with torch.no_grad():
            layer.weight.copy_(weight.detach().float())
            if bias_f is not None and layer.bias is not None:
                layer.bias.copy_(bias_f)
        layer.weight.requires_grad_(weight.requires_grad)
    else:
        raise QuantConfigError(f"{where}: not a transformers BitLinear / AutoBitLinear")
    layer.to(device=weight.device)
    return layer
