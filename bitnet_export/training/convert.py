"""Model-level helpers: find BitNetLayers, convert ``nn.Linear`` layers, configure them all."""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bitnet_export.errors import QuantConfigError
from bitnet_export.layers.bitnet import BitNetLayer
from bitnet_export.quant.params import parse_precision

__all__ = ["bitnet_layers", "configure_model", "convert_to_bitnet", "name_layers"]


def bitnet_layers(model: nn.Module) -> Iterator[tuple[str, BitNetLayer]]:
    """Yield ``(module_path, layer)`` for every BitNetLayer in ``model`` (itself included)."""
    for path, module in model.named_modules():
        if isinstance(module, BitNetLayer):
            yield path, module


def name_layers(model: nn.Module) -> nn.Module:
    """Store each BitNetLayer's module path on it, so its errors and exports name it."""
    for path, layer in bitnet_layers(model):
        layer.module_path = path
    return model


def configure_model(model: nn.Module, **options: Any) -> nn.Module:
    """Apply ``configure_quantization(**options)`` to every BitNetLayer of ``model``.

    Raises:
        QuantConfigError: invalid options (checked on every layer before returning).
    """
    for _, layer in bitnet_layers(name_layers(model)):
        layer.configure_quantization(**options)
    return model


def _match(path: str, patterns: Sequence[str]) -> str | None:
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern):
            return pattern
    return None


def convert_to_bitnet(
    model: nn.Module,
    precision: float | int | str = 1.58,
    *,
    plan: Mapping[str, float | int | str] | None = None,
    skip: Sequence[str] = (),
    inplace: bool = False,
    **options: Any,
) -> nn.Module:
    """Replace the model's ``nn.Linear`` layers by BitNetLayers with the same weights.

    Args:
        model: the float model.
        precision: weight precision of layers the plan does not name.
        plan: per-layer precision (layer-wise quantization): ``{"pattern": precision}``,
            patterns are ``fnmatch`` patterns on module paths (``"encoder.*"``, ``"head"``);
            the first matching pattern wins.
        skip: patterns of ``nn.Linear`` paths to keep in float (e.g. the classifier head).
        inplace: modify ``model`` itself instead of a deep copy.
        **options: quantization options for every new layer (see
            :meth:`BitNetLayer.configure_quantization`).

    Returns:
        The converted model (``model`` itself when ``inplace``).

    Raises:
        QuantConfigError: an invalid precision/option, or a plan/skip pattern that matches no
            ``nn.Linear`` (the message lists the layers there are).
    """
    plan = dict(plan or {})
    plan_precisions = {k: parse_precision(v) for k, v in plan.items()}
    default = parse_precision(precision)
    target = model if inplace else copy.deepcopy(model)
    linears = [(p, m) for p, m in target.named_modules() if type(m) is nn.Linear]
    names = [p for p, _ in linears]
    unmatched = [pat for pat in (*plan, *skip) if not any(fnmatch.fnmatchcase(n, pat) for n in names)]
    if unmatched:
        raise QuantConfigError(
            f"convert_to_bitnet: pattern(s) {unmatched} match no nn.Linear; the model's "
            f"nn.Linear layers are: {names or 'none'}"
        )
    for path, linear in linears:
        if _match(path, skip) is not None:
            continue
        pattern = _match(path, list(plan))
        layer_precision = plan_precisions[pattern] if pattern is not None else default
        layer = BitNetLayer(
            linear.in_features,
            linear.out_features,
            precision=layer_precision,
            bias=linear.bias is not None,
            **options,
        )
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.to(device=linear.weight.device)
        _set_submodule(target, path, layer)
    return name_layers(target)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    if not path:
        raise QuantConfigError(
            "convert_to_bitnet: the model itself is an nn.Linear; wrap it in a module "
            "or build a BitNetLayer directly"
        )
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)
