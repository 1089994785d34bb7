"""bitnet_export: train BitNet-style low-bit models in PyTorch, ship them to ONNX Runtime and LiteRT.

Pipeline (one folder per stage)::

    layers/, quant/, training/   BitNetLayer: quantize in forward, train with STE, record params
    capture/                     torch.export + torch.onnx (dynamo) -> ONNX IR hub (BitLinear nodes)
    passes/                      name nodes after modules, annotate metadata
    backends/onnx/               lower BitLinear to QDQ / integer ONNX, write the file
    parity/                      PyTorch vs runtimes -> report
    runtimes/ (top level)        one adapter per target (ONNX Runtime CPU, ...)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bitnet_export._version import __version__

#: public name -> the module that defines it. Imported on first use, so that ``import
#: bitnet_export`` (and ``bitnet-export --help``) does not load torch, onnx and LiteRT up front.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("ExportResult", "export_onnx", "export_tflite", "verify"), "bitnet_export.api"),
    "export_llm": "bitnet_export.llm.export",
    **dict.fromkeys(
        ("BitNetExportError", "ExportError", "InternalError", "NotCalibratedError", "QuantConfigError"),
        "bitnet_export.errors",
    ),
    "BitNetLayer": "bitnet_export.layers.bitnet",
    **dict.fromkeys(
        ("ActivationQuantParams", "LayerQuantParams", "WeightQuantParams"), "bitnet_export.quant.params"
    ),
    **dict.fromkeys(
        (
            "ConversionReport",
            "GradualQuantization",
            "LayerStats",
            "bitnet_layers",
            "calibrate",
            "calibration",
            "configure_model",
            "convert_to_bitnet",
            "format_statistics",
            "layer_statistics",
            "load_hf_bitnet",
            "name_layers",
        ),
        "bitnet_export.training",
    ),
}

__all__ = [
    "ActivationQuantParams",
    "BitNetExportError",
    "BitNetLayer",
    "ConversionReport",
    "ExportError",
    "ExportResult",
    "GradualQuantization",
    "InternalError",
    "LayerQuantParams",
    "LayerStats",
    "NotCalibratedError",
    "QuantConfigError",
    "WeightQuantParams",
    "__version__",
    "bitnet_layers",
    "calibrate",
    "calibration",
    "configure_model",
    "convert_to_bitnet",
    "export_llm",
    "export_onnx",
    "export_tflite",
    "format_statistics",
    "layer_statistics",
    "load_hf_bitnet",
    "name_layers",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bitnet_export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if TYPE_CHECKING:  # static checkers see the eager imports
    from bitnet_export.api import ExportResult, export_onnx, export_tflite, verify
    from bitnet_export.errors import (
        BitNetExportError,
        ExportError,
        InternalError,
        NotCalibratedError,
        QuantConfigError,
    )
    from bitnet_export.layers.bitnet import BitNetLayer
    from bitnet_export.llm.export import export_llm
    from bitnet_export.quant.params import ActivationQuantParams, LayerQuantParams, WeightQuantParams
    from bitnet_export.training import (
        ConversionReport,
        GradualQuantization,
        LayerStats,
        bitnet_layers,
        calibrate,
        calibration,
        configure_model,
        convert_to_bitnet,
        format_statistics,
        layer_statistics,
        load_hf_bitnet,
        name_layers,
    )
