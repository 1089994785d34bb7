"""The ``BitLinear`` op: how a BitNetLayer travels from PyTorch into the ONNX IR hub.

During capture every BitNetLayer calls ``torch.ops.bitnet_export.bitlinear`` (one node in
``torch.export``), which the ONNX translation turns into one ``bitnet_export.BitLinear`` node
(domain :data:`DOMAIN`, version 1) in the IR:

    BitLinear(x, weight_q, weight_scale[, bias]) -> y      attribute ``config``: JSON

* ``x``: float ``[..., K]``
* ``weight_q``: int8 ``[N, K]``, integer codes in ``qmin..qmax`` of the weight scheme
* ``weight_scale``: float32 ``[N]`` (per output channel) or ``[1]`` (per tensor)
* ``bias``: optional float32 ``[N]``
* ``config``: JSON of :meth:`LayerQuantParams.describe` (module path, activation mode, static
  scale / zero point, bits, qmin/qmax, eps).

Backends lower this node (``backends/onnx``, ``backends/tflite``); :func:`read_bitlinear`
turns it back into the frozen :class:`LayerQuantParams` it came from.
"""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np
import onnx_ir as ir
import onnxscript
import torch
from onnx.defs import OpSchema, has, register_schema

from bitnet_export.errors import InternalError
from bitnet_export.quant import functional as qf
from bitnet_export.quant.params import ActivationQuantParams, LayerQuantParams, WeightQuantParams

__all__ = [
    "DOMAIN",
    "OP_TYPE",
    "bitlinear",
    "decode_config",
    "encode_config",
    "is_bitlinear",
    "read_bitlinear",
    "translation_table",
]

DOMAIN: Final = "bitnet_export"
OP_TYPE: Final = "BitLinear"


def encode_config(params: LayerQuantParams) -> str:
    """The ``config`` attribute of a BitLinear node (deterministic JSON)."""
    return json.dumps(params.describe(), sort_keys=True)


def decode_config(config: str) -> dict[str, Any]:
    """Parse a ``config`` attribute."""
    return dict(json.loads(config))


def _reference_bitlinear(
    x: torch.Tensor,
    weight_q: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    config: str,
) -> torch.Tensor:
    """Eager semantics: BitNetLayer's inference forward (the integer form)."""
    act = decode_config(config)["input"]
    codes = weight_q.to(torch.float32)
    if act["mode"] == "dynamic":
        return qf.linear_dynamic_int(x, codes, weight_scale, bias, act["bits"], act["eps"])
    return qf.linear_static_int(x, codes, weight_scale, bias, act["scale"], act["zero_point"], act["bits"])


@torch.library.custom_op(f"{DOMAIN}::bitlinear", mutates_args=())
def bitlinear(
    x: torch.Tensor,
    weight_q: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    config: str,
) -> torch.Tensor:
    """One quantized linear layer as a single graph node (see module docstring)."""
    return _reference_bitlinear(x, weight_q, weight_scale, bias, config)


@bitlinear.register_fake
def _bitlinear_fake(
    x: torch.Tensor,
    weight_q: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    config: str,
) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight_q.shape[0]))


def _register_onnx_schema() -> None:
    # onnxscript builds nodes against a schema; register ours once per process.
    if has(OP_TYPE, DOMAIN):
        return
    formal = OpSchema.FormalParameter
    register_schema(
        OpSchema(
            OP_TYPE,
            DOMAIN,
            1,
            doc="A BitNetLayer: quantized linear layer, lowered by bitnet_export backends.",
            inputs=[
                formal("x", "T"),
                formal("weight_q", "TW"),
                formal("weight_scale", "T"),
                formal("bias", "T", param_option=OpSchema.FormalParameterOption.Optional),
            ],
            outputs=[formal("y", "T")],
            type_constraints=[
                ("T", ["tensor(float)"], "float activations, scales and bias"),
                ("TW", ["tensor(int8)"], "integer weight codes"),
            ],
            attributes=[OpSchema.Attribute("config", OpSchema.AttrType.STRING, "JSON config")],
        )
    )


_register_onnx_schema()
_OPSET = onnxscript.values.Opset(DOMAIN, 1)


def _translate_bitlinear(x: Any, weight_q: Any, weight_scale: Any, bias: Any = None, config: str = "") -> Any:
    """torch ``bitnet_export::bitlinear`` -> ONNX ``bitnet_export.BitLinear``."""
    if bias is None:
        return _OPSET.BitLinear(x, weight_q, weight_scale, config=config)
    return _OPSET.BitLinear(x, weight_q, weight_scale, bias, config=config)


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export``."""
    return {torch.ops.bitnet_export.bitlinear.default: _translate_bitlinear}


def is_bitlinear(node: ir.Node) -> bool:
    """True for a ``bitnet_export.BitLinear`` node."""
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def _const(value: ir.Value | None, what: str, node: ir.Node) -> np.ndarray:
    if value is None or value.const_value is None:
        raise InternalError(
            f"BitLinear node {node.name!r}: input {what} is not a constant initializer; "
            "the hub contract requires it"
        )
    return value.const_value.numpy()


def read_bitlinear(node: ir.Node) -> LayerQuantParams:
    """Rebuild the frozen :class:`LayerQuantParams` a BitLinear node was made from.

    Raises:
        InternalError: the node breaks the hub contract (non-constant weights, bad config).
    """
    if not is_bitlinear(node):
        raise InternalError(f"read_bitlinear: node {node.name!r} is {node.op_type}, not BitLinear")
    cfg = decode_config(node.attributes["config"].as_string())
    inputs = list(node.inputs)
    values = _const(inputs[1], "weight_q", node)
    scale = _const(inputs[2], "weight_scale", node)
    bias = _const(inputs[3], "bias", node) if len(inputs) > 3 and inputs[3] is not None else None
    w = cfg["weight"]
    weight = WeightQuantParams(
        scheme=w["scheme"],
        precision=w["precision"],
        storage_bits=w["storage_bits"],
        granularity=w["granularity"],
        values=values,
        scale=scale.reshape(-1),
        qmin=w["qmin"],
        qmax=w["qmax"],
    )
    out = cfg["output"]
    return LayerQuantParams(
        module_path=cfg["module_path"],
        in_features=cfg["in_features"],
        out_features=cfg["out_features"],
        weight=weight,
        input=ActivationQuantParams(**cfg["input"]),
        output=None if out is None else ActivationQuantParams(**out),
        bias=bias,
        enabled=cfg["enabled"],
        blend=cfg["blend"],
    )
