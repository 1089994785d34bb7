"""Model-level helpers: find BitNetLayers, convert linear layers (with a report), configure them all."""

from __future__ import annotations

import copy
import fnmatch
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch import nn

from bitnet_export.errors import InternalError, QuantConfigError
from bitnet_export.layers.bitnet import BitNetLayer
from bitnet_export.quant.params import parse_precision
from bitnet_export.training.hf_bitnet import bitnet_layer_from_hf, hf_kind

__all__ = [
    "ConversionReport",
    "ConvertedLayer",
    "FloatLayer",
    "bitnet_layers",
    "configure_model",
    "convert_to_bitnet",
    "name_layers",
]


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


@dataclass(frozen=True)
class ConvertedLayer:
    """One module :func:`convert_to_bitnet` replaced by a BitNetLayer.

    Attributes:
        path: module path in the model.
        source: class of the replaced module (``"torch.nn.Linear"``, ``"...AutoBitLinear"``).
        precision: weight precision of the new layer.
        in_features: input width.
        out_features: output width.
        weights: ``"latent"`` (quantized on the fly from a float weight) or ``"frozen"``
            (given codes and scale, e.g. a packed BitNet checkpoint).
    """

    path: str
    source: str
    precision: float | int
    in_features: int
    out_features: int
    weights: str


@dataclass(frozen=True)
class FloatLayer:
    """A linear-like module :func:`convert_to_bitnet` left as it was.

    Attributes:
        path: module path in the model.
        source: class of the module.
        reason: why it was not converted.
        fix: what to do if it should be (or to silence a warning).
    """

    path: str
    source: str
    reason: str
    fix: str = ""


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert_to_bitnet` converted and what it left as it was.

    Attributes:
        converted: the new BitNetLayers, in model order.
        left_float: the linear-like modules not converted, with the reason.
    """

    converted: tuple[ConvertedLayer, ...]
    left_float: tuple[FloatLayer, ...]

    def format(self) -> str:
        """A human-readable summary, one line per module."""
        lines = [
            f"convert_to_bitnet: {len(self.converted)} converted, {len(self.left_float)} left as they were"
        ]
        for c in self.converted:
            lines.append(
                f"  converted  {c.path:<32} {c.source} [{c.in_features} -> {c.out_features}] "
                f"precision={c.precision} weights={c.weights}"
            )
        for f in self.left_float:
            fix = f"; fix: {f.fix}" if f.fix else ""
            lines.append(f"  left       {f.path:<32} {f.source}: {f.reason}{fix}")
        return "\n".join(lines)


def _qualname(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


_Kind = Literal["linear", "hf", "custom", "mha", "conv1d"]


def _is_hf_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2 and its family): a linear with weight ``[in, out]``."""
    utils = sys.modules.get("transformers.pytorch_utils")  # imported iff such modules exist
    conv1d: Any = getattr(utils, "Conv1D", None)
    if not isinstance(conv1d, type) or not isinstance(module, conv1d):
        return False
    weight = getattr(module, "weight", None)
    same_forward = getattr(type(module), "forward", None) is getattr(conv1d, "forward", None)
    return same_forward and isinstance(weight, torch.Tensor) and weight.dim() == 2


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module, _Kind]]:
    """Linear-like modules of ``model``: nn.Linear and subclasses, and HF BitNet linears."""
    inside_mha = {
        id(child)
        for m in model.modules()
        if isinstance(m, nn.MultiheadAttention)
        for child in m.modules()
        if child is not m
    }
    found: list[tuple[str, nn.Module, _Kind]] = []
    for path, module in model.named_modules():
        if isinstance(module, BitNetLayer):
            continue
        if hf_kind(module) is not None:
            found.append((path, module, "hf"))
        elif _is_hf_conv1d(module):
            found.append((path, module, "conv1d"))
        elif isinstance(module, nn.Linear):
            if id(module) in inside_mha:
                found.append((path, module, "mha"))
            elif type(module).forward is nn.Linear.forward:
                found.append((path, module, "linear"))
            else:
                found.append((path, module, "custom"))
    return found


@overload
def convert_to_bitnet(
    model: nn.Module,
    precision: float | int | str = ...,
    *,
    plan: Mapping[str, float | int | str] | None = ...,
    skip: Sequence[str] = ...,
    inplace: bool = ...,
    return_report: Literal[False] = ...,
    **options: Any,
) -> nn.Module: ...


@overload
def convert_to_bitnet(
    model: nn.Module,
    precision: float | int | str = ...,
    *,
    plan: Mapping[str, float | int | str] | None = ...,
    skip: Sequence[str] = ...,
    inplace: bool = ...,
    return_report: Literal[True],
    **options: Any,
) -> tuple[nn.Module, ConversionReport]: ...


def convert_to_bitnet(
    model: nn.Module,
    precision: float | int | str = 1.58,
    *,
    plan: Mapping[str, float | int | str] | None = None,
    skip: Sequence[str] = (),
    inplace: bool = False,
    return_report: bool = False,
    **options: Any,
) -> nn.Module | tuple[nn.Module, ConversionReport]:
    """Replace the model's linear layers by BitNetLayers with the same weights.

    Converted: ``nn.Linear`` and its subclasses that keep ``nn.Linear.forward``, and the
    Hugging Face BitNet linears (``transformers.integrations.bitnet.BitLinear``: packed ternary
    weights, and ``AutoBitLinear``, online or offline), each into a ternary BitNetLayer with
    HF's maths (see :mod:`bitnet_export.training.hf_bitnet`; packed/offline weights become
    frozen codes). Left as they were, with a warning and a report entry: ``nn.Linear``
    subclasses that override ``forward`` (unknown maths), HF linears with ``use_rms_norm``.
    Linears inside ``nn.MultiheadAttention`` stay float (it reads their weights directly).

    Args:
        model: the float model.
        precision: weight precision of layers the plan does not name (HF BitNet linears are
            always ternary).
        plan: per-layer precision (layer-wise quantization): ``{"pattern": precision}``,
            patterns are ``fnmatch`` patterns on module paths (``"encoder.*"``, ``"head"``);
            the first matching pattern wins.
        skip: patterns of linear paths to keep in float (e.g. the classifier head).
        inplace: modify ``model`` itself instead of a deep copy.
        return_report: also return a :class:`ConversionReport`.
        **options: quantization options for every new layer (see
            :meth:`BitNetLayer.configure_quantization`).

    Returns:
        The converted model (``model`` itself when ``inplace``), and with ``return_report``
        the pair ``(model, report)``.

    Raises:
        QuantConfigError: an invalid precision/option, a plan/skip pattern that matches no
            linear layer (the message lists the layers there are), a plan giving an HF BitNet
            linear a precision other than ternary, or an HF linear whose weights are not
            valid (e.g. an offline AutoBitLinear not loaded yet).
    """
    target, report = _convert(model, precision, plan=plan, skip=skip, inplace=inplace, **options)
    return (target, report) if return_report else target


def _convert(
    model: nn.Module,
    precision: float | int | str = 1.58,
    *,
    plan: Mapping[str, float | int | str] | None = None,
    skip: Sequence[str] = (),
    inplace: bool = False,
    float_linears: bool = True,
    **options: Any,
) -> tuple[nn.Module, ConversionReport]:
    """:func:`convert_to_bitnet`; ``float_linears=False`` converts only HF BitNet linears."""
    plan = dict(plan or {})
    plan_precisions = {k: parse_precision(v) for k, v in plan.items()}
    default = parse_precision(precision)
    target = model if inplace else copy.deepcopy(model)
    found = _candidates(target)
    names = [p for p, _, _ in found]
    unmatched = [pat for pat in (*plan, *skip) if not any(fnmatch.fnmatchcase(n, pat) for n in names)]
    if unmatched:
        raise QuantConfigError(
            f"convert_to_bitnet: pattern(s) {unmatched} match no linear layer; the model's "
            f"linear layers are: {names or 'none'}"
        )
    converted: list[ConvertedLayer] = []
    left: list[FloatLayer] = []
    replacements: list[tuple[str, BitNetLayer]] = []
    for path, module, kind in found:
        source = _qualname(module)
        if any(path.startswith(done + ".") for done, _ in replacements):
            continue  # inside a module already replaced
        skipped_by = _match(path, skip)
        if skipped_by is not None:
            left.append(FloatLayer(path, source, f"skipped by pattern {skipped_by!r}"))
            continue
        pattern = _match(path, list(plan))
        if kind == "custom":
            fix = f"add {path!r} to skip=[...] to keep it float silently, or convert it by hand"
            warnings.warn(
                f"convert_to_bitnet: '{path}' is a {source}, an nn.Linear subclass with its own "
                f"forward (unknown maths); left float. Fix: {fix}",
                stacklevel=3,
            )
            left.append(FloatLayer(path, source, "nn.Linear subclass overrides forward (unknown maths)", fix))
            continue
        if kind == "mha":
            left.append(
                FloatLayer(
                    path,
                    source,
                    "inside nn.MultiheadAttention, which uses its weight directly, not its forward",
                    "replace nn.MultiheadAttention by an attention built from nn.Linear layers",
                )
            )
            continue
        if kind in ("linear", "conv1d") and not float_linears:
            left.append(FloatLayer(path, source, "float in the source model (not an HF BitNet linear)"))
            continue
        if kind == "hf":
            if pattern is not None and plan_precisions[pattern] != 1.58:
                raise QuantConfigError(
                    f"convert_to_bitnet: plan pattern {pattern!r} gives '{path}' precision="
                    f"{plan_precisions[pattern]}, but it is a {type(module).__name__} with ternary "
                    "weights; remove it from the plan (HF BitNet linears convert as ternary)"
                )
            if getattr(module, "rms_norm", None) is not None:
                fix = "build the model with use_rms_norm=False, or add it to skip=[...] to silence this"
                warnings.warn(
                    f"convert_to_bitnet: '{path}' is a {type(module).__name__} with use_rms_norm=True "
                    "(an RMSNorm inside the linear), which BitNetLayer does not have; left as it is. "
                    f"Fix: {fix}",
                    stacklevel=3,
                )
                left.append(FloatLayer(path, source, "HF BitNet linear with use_rms_norm=True", fix))
                continue
            layer = bitnet_layer_from_hf(module, path, **options)
        elif kind == "conv1d":  # y = x @ W + b with W [in, out]: a Linear with weight W^T
            weight: torch.Tensor = module.weight  # type: ignore[assignment]
            bias: torch.Tensor | None = getattr(module, "bias", None)
            layer_precision = plan_precisions[pattern] if pattern is not None else default
            layer = BitNetLayer(
                int(weight.shape[0]),
                int(weight.shape[1]),
                precision=layer_precision,
                bias=bias is not None,
                **options,
            )
            with torch.no_grad():
                layer.weight.copy_(weight.T)
                if bias is not None and layer.bias is not None:
                    layer.bias.copy_(bias)
            layer.to(device=weight.device)
        else:
            linear = module
            if not isinstance(linear, nn.Linear):
                raise InternalError(f"convert_to_bitnet: '{path}' classified as nn.Linear but is {source}")
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
        replacements.append((path, layer))
        converted.append(
            ConvertedLayer(
                path,
                source,
                layer.precision,
                layer.in_features,
                layer.out_features,
                "frozen" if layer.weight_frozen else "latent",
            )
        )
    for path, layer in replacements:
        _set_submodule(target, path, layer)
    return name_layers(target), ConversionReport(tuple(converted), tuple(left))


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    if not path:
        raise QuantConfigError(
            "convert_to_bitnet: the model itself is an nn.Linear; wrap it in a module "
            "or build a BitNetLayer directly"
        )
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)
