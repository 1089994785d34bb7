"""Load Hugging Face BitNet checkpoints (packed ternary weights) into BitNetLayers.

A transformers BitNet checkpoint (``microsoft/bitnet-b1.58-*`` style) stores, for every
quantized linear at path ``P``: ``P.weight`` (uint8 ``[ceil(out/4), in]``, 2-bit packed ternary
codes) and ``P.weight_scale``; everything else (embeddings, norms, a float ``lm_head``) is
float. :func:`load_hf_bitnet` puts the codes and scales into a model's BitNetLayers as frozen
weights, with the maths of the checkpoint's ``linear_class`` (see
:mod:`bitnet_export.training.hf_bitnet`), and the float tensors into the rest of the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from bitnet_export.errors import QuantConfigError
from bitnet_export.layers.bitnet import BitNetLayer
from bitnet_export.training.convert import _convert, bitnet_layers
from bitnet_export.training.hf_bitnet import hf_kind, ternary_codes, unpack_ternary

__all__ = ["LinearClass", "load_hf_bitnet"]

#: transformers' ``BitNetQuantConfig.linear_class``: how ``weight_scale`` is applied.
LinearClass = Literal["bitlinear", "autobitlinear"]
_LINEAR_CLASSES: tuple[str, ...] = ("bitlinear", "autobitlinear")
_LAYER_KEYS = ("weight", "weight_scale", "bias")
_MAX_LISTED = 8


def load_hf_bitnet(
    source: nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    linear_class: LinearClass | None = None,
    strict: bool = True,
    **options: Any,
) -> nn.Module:
    """Hugging Face BitNet weights -> a model with BitNetLayers computing the same thing.

    Two uses:

    * ``load_hf_bitnet(hf_model)``: ``hf_model`` is a transformers model whose linears are
      ``BitLinear`` / ``AutoBitLinear`` (loaded with its quantization config). Returns a copy
      in which each of those is a ternary BitNetLayer; other ``nn.Linear`` layers (e.g. the
      float ``lm_head``) stay float, as in the source.
    * ``load_hf_bitnet(checkpoint, model)``: ``checkpoint`` is a state dict with HF key names
      or a ``.safetensors`` file or a folder of them (sharded checkpoints); ``model`` is the
      same architecture converted with :func:`convert_to_bitnet` (e.g.
      ``convert_to_bitnet(BitNetForCausalLM(config), skip=["lm_head"])``). Loads in place and
      returns ``model``. For every BitNetLayer at path ``P``: ``P.weight`` uint8 (packed), int8
      or float holding -1/0/+1, with ``P.weight_scale``, becomes frozen ternary codes;
      ``P.weight`` float without ``P.weight_scale`` is a latent weight (online AutoBitLinear).

    Args:
        source: a transformers model, a state dict, or a safetensors file / folder.
        model: the model to load into (for a state dict or file).
        linear_class: how ``weight_scale`` applies: ``"bitlinear"`` (it divides:
            ``W = codes / weight_scale``) or ``"autobitlinear"`` (it multiplies, after the
            bias). ``None``: ``quantization_config.linear_class`` of the ``config.json`` beside
            the file, else of ``model.config``, else ``"bitlinear"`` (transformers' default).
        strict: raise on checkpoint keys the model does not have and model tensors the
            checkpoint lacks (tied weights count as present).
        **options: quantization options for the BitNetLayers created from a transformers
            model (default: HF's maths).

    Returns:
        The model with BitNetLayers holding the checkpoint's weights.

    Raises:
        QuantConfigError: a missing or unexpected key, a tensor of the wrong shape or dtype,
            codes that are not ternary, a non-positive scale, an unknown ``linear_class``, no
            model to load into, or a file that cannot be read; the message names the key or
            module and the fix.
    """
    if isinstance(source, nn.Module):
        if model is not None:
            raise QuantConfigError(
                "load_hf_bitnet: pass either a transformers model, or a checkpoint and the model to "
                "load it into; not two models"
            )
        if not any(hf_kind(m) is not None for m in source.modules()):
            raise QuantConfigError(
                f"load_hf_bitnet: {type(source).__name__} has no transformers BitLinear / "
                "AutoBitLinear; for a float model use convert_to_bitnet(model), then "
                "load_hf_bitnet(checkpoint, model)"
            )
        converted, _ = _convert(source, float_linears=False, **options)
        return converted
    if model is None:
        raise QuantConfigError(
            "load_hf_bitnet: a checkpoint needs the model to load into; build the architecture and "
            "convert it first, e.g. model = convert_to_bitnet(BitNetForCausalLM(config), "
            "skip=['lm_head']); load_hf_bitnet(checkpoint, model)"
        )
    if options:
        raise QuantConfigError(
            f"load_hf_bitnet: options {sorted(options)} only apply when converting a transformers "
            "model; configure the loaded model with configure_model(model, ...)"
        )
    config_file: Path | None = None
    if isinstance(source, (str, os.PathLike)):
        state, config_file = _read_safetensors(Path(source))
    else:
        state = dict(source)
    kind = _linear_class(linear_class, config_file, model)
    _load_into(model, state, kind, strict)
    return model


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], Path | None]:
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise QuantConfigError(
            f"load_hf_bitnet: {str(path)!r} is not a .safetensors file or a folder holding some; "
            "pass the checkpoint's path (or a state dict)"
        )
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors ships with transformers
        raise QuantConfigError(
            "load_hf_bitnet: reading .safetensors needs the safetensors package; pip install safetensors"
        ) from exc
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            part = load_file(str(f))
        except Exception as exc:  # safetensors raises its own error types
            raise QuantConfigError(f"load_hf_bitnet: cannot read {str(f)!r}: {exc}") from exc
        state.update(part)
    config = files[0].parent / "config.json"
    return state, config if config.is_file() else None


def _linear_class(given: str | None, config_file: Path | None, model: nn.Module) -> LinearClass:
    found: Any = given
    origin = "linear_class"
    if found is None and config_file is not None:
        try:
            qc = json.loads(config_file.read_text()).get("quantization_config") or {}
        except (OSError, ValueError) as exc:
            raise QuantConfigError(f"load_hf_bitnet: cannot read {str(config_file)!r}: {exc}") from exc
        found = qc.get("linear_class") if isinstance(qc, dict) else None
        origin = f"{config_file}: quantization_config.linear_class"
    if found is None:
        qc = getattr(getattr(model, "config", None), "quantization_config", None)
        found = qc.get("linear_class") if isinstance(qc, dict) else getattr(qc, "linear_class", None)
        origin = "model.config.quantization_config.linear_class"
    if found is None:
        return "bitlinear"
    if found not in _LINEAR_CLASSES:
        raise QuantConfigError(
            f"load_hf_bitnet: {origin}={found!r} is not supported; choose one of {', '.join(_LINEAR_CLASSES)}"
        )
    return "bitlinear" if found == "bitlinear" else "autobitlinear"


def _listed(keys: Sequence[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(repr(k) for k in keys[:_MAX_LISTED]) + more


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], kind: LinearClass, strict: bool) -> None:
    layers = dict(bitnet_layers(model))
    if not layers:
        raise QuantConfigError(
            f"load_hf_bitnet: {type(model).__name__} has no BitNetLayer to load packed weights into; "
            "convert it first: model = convert_to_bitnet(model, skip=['lm_head'])"
        )
    owned: set[str] = set()
    for path, layer in layers.items():
        prefix = f"{path}." if path else ""
        owned.update(k for k in state if k.startswith(prefix) and k[len(prefix) :] in _LAYER_KEYS)
        if prefix + "weight" not in state:
            if strict:
                raise QuantConfigError(
                    f"load_hf_bitnet: checkpoint has no {prefix + 'weight'!r} for BitNetLayer "
                    f"'{path}'; is the checkpoint for this model? Fix: skip this layer when "
                    "converting (convert_to_bitnet(..., skip=[...])) or pass strict=False"
                )
            continue
        _load_layer(layer, path, prefix, state, kind, strict)

    rest = {k: v for k, v in state.items() if k not in owned}
    model_state = model.state_dict(keep_vars=True)
    unexpected = [k for k in rest if k not in model_state]
    for k in unexpected:
        for path in layers:
            if path and k.startswith(f"{path}."):
                raise QuantConfigError(
                    f"load_hf_bitnet: checkpoint key {k!r} belongs to BitNetLayer '{path}', which has "
                    f"only {', '.join(_LAYER_KEYS)}; a BitLinear with use_rms_norm=True is not "
                    "supported (build the model with use_rms_norm=False weights)"
                )
    if unexpected and strict:
        raise QuantConfigError(
            f"load_hf_bitnet: checkpoint keys not in the model: {_listed(unexpected)}; is the "
            "checkpoint for this architecture and config? Fix: build the model from the "
            "checkpoint's config.json, or pass strict=False to ignore them"
        )
    to_load = {k: v for k, v in rest.items() if k in model_state}
    for k, v in to_load.items():
        target = model_state[k]
        if tuple(v.shape) != tuple(target.shape):
            raise QuantConfigError(
                f"load_hf_bitnet: {k!r} has shape {tuple(v.shape)} in the checkpoint but "
                f"{tuple(target.shape)} in the model; build the model from the checkpoint's config"
            )
        if v.is_floating_point() != target.is_floating_point():
            raise QuantConfigError(
                f"load_hf_bitnet: {k!r} is {v.dtype} in the checkpoint but {target.dtype} in the "
                "model; a packed (uint8) weight belongs to a BitNetLayer: convert that linear with "
                "convert_to_bitnet first"
            )
    model.load_state_dict(to_load, strict=False)
    if strict:
        loaded_ids = {id(model_state[k]) for k in to_load} | {
            id(t) for path, layer in layers.items() for t in layer.state_dict(keep_vars=True).values()
        }
        missing = [
            k
            for k, t in model_state.items()
            if k not in to_load and id(t) not in loaded_ids and not _owned_by_layer(k, layers)
        ]
        if missing:
            raise QuantConfigError(
                f"load_hf_bitnet: the checkpoint lacks model tensor(s) {_listed(missing)}; is it "
                "complete (all shards)? Fix: load every shard (pass the folder), or strict=False"
            )


def _owned_by_layer(key: str, layers: Mapping[str, BitNetLayer]) -> bool:
    return any(key.startswith(f"{path}.") if path else True for path in layers)


def _load_layer(
    layer: BitNetLayer,
    path: str,
    prefix: str,
    state: Mapping[str, torch.Tensor],
    kind: LinearClass,
    strict: bool,
) -> None:
    wkey, skey, bkey = (prefix + k for k in _LAYER_KEYS)
    weight = state[wkey]
    out_f, in_f = layer.output_dim, layer.input_dim
    where = f"load_hf_bitnet: {wkey!r} (BitNetLayer '{path}')"
    bias = state.get(bkey)
    if layer.bias is None and bias is not None:
        raise QuantConfigError(
            f"load_hf_bitnet: checkpoint has {bkey!r} but BitNetLayer '{path}' has no bias; build "
            "the model with the checkpoint's config (bias=True for this linear)"
        )
    if layer.bias is not None and bias is None and strict:
        raise QuantConfigError(
            f"load_hf_bitnet: checkpoint has no {bkey!r} but BitNetLayer '{path}' has a bias; build "
            "the model with the checkpoint's config (no bias), or pass strict=False"
        )
    if bias is not None and tuple(bias.shape) != (out_f,):
        raise QuantConfigError(f"load_hf_bitnet: {bkey!r} has shape {tuple(bias.shape)}, expected ({out_f},)")
    if bias is not None and not bias.is_floating_point():
        raise QuantConfigError(f"load_hf_bitnet: {bkey!r} is {bias.dtype}; a bias is a float tensor")
    bias_f = None if bias is None else bias.detach().float()

    if skey not in state:
        if not weight.is_floating_point():
            raise QuantConfigError(
                f"{where} is {weight.dtype} (quantized codes) but {skey!r} is missing; the "
                "checkpoint is incomplete, or load every shard (pass the folder)"
            )
        if tuple(weight.shape) != (out_f, in_f):
            raise QuantConfigError(
                f"{where} has shape {tuple(weight.shape)}, expected ({out_f}, {in_f}) for a float "
                "latent weight; build the model from the checkpoint's config"
            )
        layer.unfreeze_weight()
        with torch.no_grad():
            layer.weight.copy_(weight.detach().float())
            if bias_f is not None and layer.bias is not None:
                layer.bias.copy_(bias_f)
        return

    if weight.dtype == torch.uint8:
        codes = unpack_ternary(weight, out_f, where=where)
        if weight.shape[1] != in_f:
            raise QuantConfigError(
                f"{where} has {weight.shape[1]} columns but in_features={in_f}; build the model "
                "from the checkpoint's config"
            )
    elif weight.dtype == torch.int8 or weight.is_floating_point():
        if tuple(weight.shape) != (out_f, in_f):
            raise QuantConfigError(
                f"{where} has shape {tuple(weight.shape)}, expected ({out_f}, {in_f}) (unpacked "
                f"codes) or ({(out_f + 3) // 4}, {in_f}) uint8 (packed)"
            )
        codes = ternary_codes(weight, where=where)
    else:
        raise QuantConfigError(
            f"{where} has dtype {weight.dtype}; expected uint8 (packed ternary), int8 or float "
            "(ternary codes), or float without weight_scale (latent weight)"
        )
    ws = state[skey]
    if not ws.is_floating_point():
        raise QuantConfigError(f"load_hf_bitnet: {skey!r} is {ws.dtype}; a weight scale is a float tensor")
    ws_f = ws.detach().float().reshape(-1)
    if ws_f.numel() not in (1, out_f):
        raise QuantConfigError(
            f"load_hf_bitnet: {skey!r} has {ws_f.numel()} values; expected 1 (per tensor) or "
            f"{out_f} (per output channel)"
        )
    if not bool((torch.isfinite(ws_f) & (ws_f > 0)).all()):
        raise QuantConfigError(
            f"load_hf_bitnet: {skey!r} must be positive and finite, got {ws_f[:4].tolist()}"
        )
    if kind == "bitlinear":
        scale = torch.reciprocal(ws_f)  # y = (q @ codes^T) / (weight_scale * gamma)
    else:
        scale = ws_f  # y = (x @ codes^T + bias) * weight_scale
        bias_f = None if bias_f is None else bias_f * ws_f
    if layer.precision != 1.58:
        layer.unfreeze_weight().configure_quantization(precision=1.58)
    layer.freeze_weight(codes.to(layer.weight.device), scale.to(layer.weight.device))
    if bias_f is not None and layer.bias is not None:
        with torch.no_grad():
            layer.bias.copy_(bias_f)
