"""Calibration of static activation ranges."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from bitnet_export.errors import NotCalibratedError
from bitnet_export.training.convert import bitnet_layers, name_layers

__all__ = ["calibrate", "calibration"]


def _static_layers(model: nn.Module) -> list[Any]:
    layers = [layer for _, layer in bitnet_layers(name_layers(model))]
    static = [layer for layer in layers if layer.activation_mode == "static"]
    if not static:
        raise NotCalibratedError(
            "calibrate: the model has no BitNetLayer with activation_mode='static'; "
            "configure them first, e.g. configure_model(model, activation_mode='static')"
        )
    return static


@contextmanager
def calibration(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: observe activation ranges inside, freeze them on exit.

    Example:
        >>> with calibration(model):
        ...     for x in batches:
        ...         model(x)

    Raises:
        NotCalibratedError: the model has no static layer, or a layer saw no data.
    """
    layers = _static_layers(model)
    for layer in layers:
        layer.start_calibration()
    try:
        yield model
    except BaseException:
        for layer in layers:
            layer.calibrating = False
        raise
    for layer in layers:
        layer.freeze_calibration()


def calibrate(model: nn.Module, batches: Iterable[Any]) -> nn.Module:
    """Run ``batches`` through ``model`` in eval mode, without gradients, and freeze the ranges.

    Args:
        model: a model whose static-mode BitNetLayers are to be calibrated.
        batches: an iterable of inputs; a tuple or list is unpacked as positional arguments.

    Returns:
        ``model``, calibrated (its train/eval mode is restored).
    """
    was_training = model.training
    model.eval()
    try:
        with calibration(model), torch.no_grad():
            for batch in batches:
                if isinstance(batch, (tuple, list)):
                    model(*batch)
                else:
                    model(batch)
    finally:
        model.train(was_training)
    return model
