"""bitnet_export: train BitNet-style low-bit models in PyTorch, ship them to ONNX Runtime and LiteRT.

Pipeline (one folder per stage)::

    layers/, quant/, training/   BitNetLayer: quantize in forward, train with STE, record params
    capture/                     torch.export + torch.onnx (dynamo) -> ONNX IR hub (BitLinear nodes)
    passes/                      name nodes after modules, annotate metadata
    backends/onnx/               lower BitLinear to QDQ / integer ONNX, write the file
    parity/                      PyTorch vs runtimes -> report
    runtimes/ (top level)        one adapter per target (ONNX Runtime CPU, ...)
"""

from bitnet_export._version import __version__
from bitnet_export.api import ExportResult, export_onnx, export_tflite, verify
from bitnet_export.errors import (
    BitNetExportError,
    ExportError,
    InternalError,
    NotCalibratedError,
    QuantConfigError,
)
from bitnet_export.layers.bitnet import BitNetLayer
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
    "export_onnx",
    "export_tflite",
    "format_statistics",
    "layer_statistics",
    "load_hf_bitnet",
    "name_layers",
    "verify",
]
