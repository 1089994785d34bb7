"""Training-side helpers: conversion, calibration, gradual quantization, statistics."""

from bitnet_export.training.calibration import calibrate, calibration
from bitnet_export.training.convert import (
    bitnet_layers,
    configure_model,
    convert_to_bitnet,
    name_layers,
)
from bitnet_export.training.schedule import GradualQuantization
from bitnet_export.training.stats import LayerStats, format_statistics, layer_statistics

__all__ = [
    "GradualQuantization",
    "LayerStats",
    "bitnet_layers",
    "calibrate",
    "calibration",
    "configure_model",
    "convert_to_bitnet",
    "format_statistics",
    "layer_statistics",
    "name_layers",
]
