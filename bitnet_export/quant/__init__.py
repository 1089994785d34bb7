"""Quantization formulas, observers and the frozen parameter records exporters read."""

from bitnet_export.quant.observers import RangeObserver
from bitnet_export.quant.params import (
    ACTIVATION_MODES,
    GRANULARITIES,
    OBSERVERS,
    PRECISIONS,
    ActivationQuantParams,
    LayerQuantParams,
    WeightQuantParams,
    parse_precision,
)

__all__ = [
    "ACTIVATION_MODES",
    "GRANULARITIES",
    "OBSERVERS",
    "PRECISIONS",
    "ActivationQuantParams",
    "LayerQuantParams",
    "RangeObserver",
    "WeightQuantParams",
    "parse_precision",
]
