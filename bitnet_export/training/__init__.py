"""Training-side helpers: conversion, calibration, gradual quantization, statistics."""

from bitnet_export.training.calibration import calibrate, calibration
from bitnet_export.training.convert import (
    ConversionReport,
    ConvertedLayer,
    FloatLayer,
    bitnet_layers,
    configure_model,
    convert_to_bitnet,
    name_layers,
)
from bitnet_export.training.hf_load import load_hf_bitnet
from bitnet_export.training.schedule import GradualQuantization
from bitnet_export.training.stats import LayerStats, format_statistics, layer_statistics

__all__ = [
    "ConversionReport",
    "ConvertedLayer",
    "FloatLayer",
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
]
