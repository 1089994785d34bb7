"""Annotate a model with its producer and every layer's quantization config (metadata_props)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

from bitnet_export._version import __version__
from bitnet_export.quant.params import LayerQuantParams

__all__ = ["METADATA_PREFIX", "annotate"]

METADATA_PREFIX = "bitnet_export."


def annotate(model: ir.Model, layers: Mapping[str, LayerQuantParams], extra: Mapping[str, Any]) -> bool:
    """Set producer name/version and ``bitnet_export.*`` metadata on ``model``.

    Keys: ``bitnet_export.version``, ``bitnet_export.layers`` (JSON list of each layer's
    :meth:`LayerQuantParams.describe`), and one ``bitnet_export.<key>`` per ``extra`` item
    (JSON encoded).

    Returns:
        Whether the model was modified (always True: metadata is always written).
    """
    model.producer_name = "bitnet_export"
    model.producer_version = __version__
    props = model.metadata_props
    props[f"{METADATA_PREFIX}version"] = __version__
    props[f"{METADATA_PREFIX}layers"] = json.dumps([p.describe() for p in layers.values()], sort_keys=True)
    for key, value in extra.items():
        props[f"{METADATA_PREFIX}{key}"] = json.dumps(value, sort_keys=True)
    return True
