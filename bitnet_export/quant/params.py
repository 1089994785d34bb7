"""Quantization parameters as data.

Everything an exporter needs to reproduce a :class:`~bitnet_export.layers.bitnet.BitNetLayer`
is captured in frozen dataclasses here. Arrays inside them are numpy arrays marked read-only,
so a recorded parameter set cannot be changed after the fact.

Integer ranges are explicit (``qmin``/``qmax``): ternary weights are stored in int8 with the
range ``-1..1``, binary weights ``-1..1`` (never 0), k-bit weights ``-(2^(k-1)-1)..2^(k-1)-1``
(symmetric, narrow range).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from bitnet_export.errors import QuantConfigError

__all__ = [
    "ACTIVATION_MODES",
    "GRANULARITIES",
    "OBSERVERS",
    "PRECISIONS",
    "ActivationQuantParams",
    "LayerQuantParams",
    "WeightQuantParams",
    "WeightScheme",
    "parse_precision",
    "weight_scheme",
]

WeightScheme = Literal["ternary", "binary", "int"]
ActivationMode = Literal["dynamic", "static"]
Granularity = Literal["per_tensor", "per_channel"]
ObserverKind = Literal["minmax", "moving_average"]

#: Allowed weight precisions (bits). 1.58 is ternary (BitNet b1.58), 1 is binary (BitNet 2023).
PRECISIONS: Final[tuple[float | int, ...]] = (1.58, 1, 2, 4, 8)
#: Activation modes: per-token dynamic absmax (BitNet) or static per-tensor (calibrated).
ACTIVATION_MODES: Final[tuple[str, ...]] = ("dynamic", "static")
GRANULARITIES: Final[tuple[str, ...]] = ("per_tensor", "per_channel")
OBSERVERS: Final[tuple[str, ...]] = ("minmax", "moving_average")


def parse_precision(value: object) -> float | int:
    """Normalise a user-given weight precision.

    Args:
        value: ``1.58`` / ``"1.58"`` / ``"ternary"``, ``1`` / ``"binary"``, ``2``, ``4`` or ``8``.

    Returns:
        ``1.58`` for ternary, otherwise the integer bit width.

    Raises:
        QuantConfigError: for any other value; the message lists the allowed values.
    """
    aliases: dict[str, float | int] = {"ternary": 1.58, "binary": 1}
    if isinstance(value, str):
        key = value.strip().lower()
        if key in aliases:
            return aliases[key]
        try:
            value = float(key)
        except ValueError:
            value = key
    if isinstance(value, bool):  # bool is an int: reject explicitly
        value = repr(value)
    if isinstance(value, (int, float)):
        for allowed in PRECISIONS:
            if abs(float(value) - float(allowed)) < 1e-9:
                return allowed
    raise QuantConfigError(
        f"BitNetLayer: precision={value!r} is not supported; allowed weight precisions are "
        "1.58 (or 'ternary'), 1 (or 'binary'), 2, 4, 8"
    )


def weight_scheme(precision: float | int) -> WeightScheme:
    """Return the quantizer family used for a normalised precision."""
    if precision == 1.58:
        return "ternary"
    if precision == 1:
        return "binary"
    return "int"


def _frozen_array(a: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class WeightQuantParams:
    """Quantized weight of one layer: ``W ~= values * scale`` (scale broadcast over rows).

    Attributes:
        scheme: ``"ternary"``, ``"binary"`` or ``"int"`` (symmetric absmax k-bit).
        precision: the user-facing bit width (1.58, 1, 2, 4, 8).
        storage_bits: the bits needed per stored value (2 for ternary, 1 for binary, k).
        granularity: ``"per_tensor"`` or ``"per_channel"`` (one scale per output row, axis 0).
        values: int8 array ``[out_features, in_features]`` with values in ``qmin..qmax``.
        scale: float32 array ``[out_features]`` (per channel) or ``[1]`` (per tensor).
        qmin: smallest integer value the scheme produces.
        qmax: largest integer value the scheme produces.
    """

    scheme: WeightScheme
    precision: float | int
    storage_bits: int
    granularity: Granularity
    values: np.ndarray
    scale: np.ndarray
    qmin: int
    qmax: int
    axis: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _frozen_array(self.values, np.int8))
        object.__setattr__(self, "scale", _frozen_array(self.scale, np.float32))

    def dequantize(self) -> np.ndarray:
        """Return the float32 weight ``values * scale`` the layer computes with."""
        return (self.values.astype(np.float32) * self.scale.reshape(-1, 1)).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (no arrays), e.g. for ONNX/TFLite metadata."""
        return {
            "scheme": self.scheme,
            "precision": self.precision,
            "storage_bits": self.storage_bits,
            "granularity": self.granularity,
            "qmin": self.qmin,
            "qmax": self.qmax,
            "shape": list(self.values.shape),
        }


@dataclass(frozen=True)
class ActivationQuantParams:
    """How a tensor of activations is quantized.

    ``dynamic``: per token (last dim), ``gamma = qmax / max(max|x|, eps)``,
    ``q = clip(round(x * gamma), qmin, qmax)``, ``x ~= q / gamma`` (BitNet).

    ``static``: per tensor with a calibrated ``scale`` and ``zero_point``,
    ``q = clip(round(x / scale) + zero_point, qmin, qmax)``, ``x ~= (q - zero_point) * scale``
    (ONNX QuantizeLinear / TFLite int8 semantics, round half to even).

    Attributes:
        mode: ``"dynamic"`` or ``"static"``.
        bits: activation bit width.
        qmin: lowest integer code (``-2^(bits-1)``).
        qmax: highest integer code (``2^(bits-1)-1``).
        symmetric: static only: zero point fixed at 0.
        scale: static only: the calibrated float32 scale.
        zero_point: static only: the calibrated zero point.
        eps: floor of the range, so an all-zero input quantizes to zeros, never NaN.
        observer: static only: the observer that produced the range.
        observed_min: static only: the calibrated range's lower end.
        observed_max: static only: the calibrated range's upper end.
    """

    mode: ActivationMode
    bits: int
    qmin: int
    qmax: int
    symmetric: bool = True
    scale: float | None = None
    zero_point: int | None = None
    eps: float = 1e-5
    observer: ObserverKind | None = None
    observed_min: float | None = None
    observed_max: float | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class LayerQuantParams:
    """Everything recorded by one BitNetLayer: what an exporter lowers.

    Attributes:
        module_path: the layer's path in its model (``"layer1"``), ``""`` when standalone.
        in_features: input width.
        out_features: output width.
        weight: the quantized weight.
        input: how the layer's input is quantized.
        output: static mode: the calibrated range of the layer's float output (an int8 backend
            uses it for its output tensor); ``None`` in dynamic mode.
        bias: float32 bias ``[out_features]`` or ``None``.
        enabled: quantization on (``False``: the layer is a plain float linear).
        blend: gradual-quantization factor; only 1.0 is exportable as integer maths.
    """

    module_path: str
    in_features: int
    out_features: int
    weight: WeightQuantParams
    input: ActivationQuantParams
    output: ActivationQuantParams | None
    bias: np.ndarray | None
    enabled: bool = True
    blend: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bias is not None:
            object.__setattr__(self, "bias", _frozen_array(self.bias, np.float32))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of the layer's quantization config (no weight arrays)."""
        return {
            "module_path": self.module_path,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "weight": self.weight.describe(),
            "input": self.input.describe(),
            "output": None if self.output is None else self.output.describe(),
            "bias": self.bias is not None,
            "enabled": self.enabled,
            "blend": self.blend,
        }
