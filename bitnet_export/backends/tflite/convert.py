"""ONNX IR hub -> TFLite flatbuffer bytes.

Pre-flight first (every op without a lowering, grouped, with module paths, in one error), then
one registered lowering per node in graph order, then the model's inputs, outputs, SignatureDef
and metadata.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

from bitnet_export._version import __version__
from bitnet_export.backends._storage import check_storage
from bitnet_export.backends.tflite import lower_bitlinear as _lower_bitlinear  # noqa: F401 (registers)
from bitnet_export.backends.tflite import ops as _ops  # noqa: F401 (registers)
from bitnet_export.backends.tflite.context import LoweringContext
from bitnet_export.backends.tflite.flatbuffer import TflModelBuilder
from bitnet_export.backends.tflite.registry import CHECKS, LOWERINGS
from bitnet_export.capture.bitlinear_op import is_bitlinear, read_bitlinear
from bitnet_export.capture.preflight import format_problems
from bitnet_export.errors import BitNetExportError, ExportError, InternalError
from bitnet_export.passes.name_nodes import module_path_of
from bitnet_export.quant.params import LayerQuantParams

__all__ = ["TFLITE_WEIGHT_MODES", "check_supported", "convert_hub", "lower_graph"]

TFLITE_WEIGHT_MODES = ("int8", "int4", "int2")


def _layer_problems(graph: ir.Graph, weights: str) -> list[str]:
    """Every BitNetLayer the TFLite kernels cannot take as recorded (storage, activation bits)."""
    problems: list[str] = []
    seen: set[str] = set()
    for node in graph:
        if not is_bitlinear(node):
            continue
        p = read_bitlinear(node)
        if p.module_path in seen:  # a layer called twice: one report
            continue
        seen.add(p.module_path)
        try:
            check_storage(p, weights)
        except ExportError as exc:
            problems.append(str(exc))
        if p.input.bits != 8:
            kind = (
                "full-integer FC takes int8 activations"
                if p.input.mode == "static"
                else ("hybrid FC quantizes rows to 8 bits")
            )
            problems.append(
                f"layer {p.module_path!r} (BitNetLayer): TFLite's {kind}; activation_bits="
                f"{p.input.bits} is not supported; use activation_bits=8"
            )
    return problems


def check_supported(graph: ir.Graph, weights: str | None = None) -> None:
    """Raise one :class:`ExportError` listing every node the TFLite backend cannot lower.

    Three kinds of problem, all found before anything is lowered: an op without a lowering,
    a node whose attributes, shapes or inputs the lowering's registered check refuses (the op
    table's constraints, e.g. a Softmax over a dynamic axis), and (with ``weights``) a
    BitNetLayer the storage or TFLite's kernels cannot hold.
    """
    missing: dict[str, list[str]] = defaultdict(list)
    refused: dict[tuple[str, str], list[str]] = defaultdict(list)
    layers = _layer_problems(graph, weights) if weights is not None else []
    for node in graph:
        key = (node.domain, node.op_type)
        op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
        where = module_path_of(node) or "<root>"
        if key not in LOWERINGS:
            missing[op].append(where)
            continue
        check = CHECKS.get(key)
        reason = check(node) if check is not None else None
        if reason:
            refused[(op, reason)].append(where)
    if missing or refused or layers:
        problems = [f"ONNX {op}: {len(p)} use(s), e.g. in {p[0]}" for op, p in sorted(missing.items())]
        problems += [
            f"ONNX {op}: {reason} ({len(p)} use(s), e.g. in {p[0]})"
            for (op, reason), p in sorted(refused.items())
        ]
        problems += layers
        supported = sorted({op for _, op in LOWERINGS})
        raise ExportError(
            format_problems(
                "pre-flight op analysis for tflite",
                problems,
                f"the TFLite backend lowers {', '.join(supported)}; replace the other ops in the "
                "model, or follow the fix named for each node. Nothing was written",
            )
        )


def lower_graph(
    model: ir.Model, weights: str, batch: int, activation_quant: str = "kernel"
) -> tuple[TflModelBuilder, dict[str, Any]]:
    """Lower the hub ``model`` into a builder (one subgraph) and its output metadata.

    Returns:
        The builder (inputs, ops, outputs, signature names) and the ``bitnet_export.*`` entries
        that describe its outputs (scales, ranges, requantized layers).

    Raises:
        ExportError: unsupported ops (all listed), a layer the storage cannot hold, ...
    """
    if weights not in TFLITE_WEIGHT_MODES:
        raise ExportError(
            f"export_tflite: weights={weights!r}; choose one of {', '.join(TFLITE_WEIGHT_MODES)}"
        )
    graph = model.graph
    check_supported(graph, weights)
    builder = TflModelBuilder(description=f"bitnet_export {__version__}")
    ctx = LoweringContext(builder, batch, weights, activation_quant=activation_quant)
    for value in graph.inputs:
        idx = ctx.new_tensor(value)
        builder.inputs.append(idx)
        builder.input_names.append(str(value.name))
    for node in graph:
        try:
            LOWERINGS[(node.domain, node.op_type)](ctx, node)
        except BitNetExportError:
            raise
        except Exception as exc:  # a lowering the pre-flight accepted must not fail: our bug
            where = module_path_of(node) or "<root>"
            raise InternalError(
                f"tflite backend: lowering ONNX {node.op_type} node {node.name!r} (in {where}) failed "
                f"after the pre-flight accepted it: {type(exc).__name__}: {exc}. Please report it; "
                "nothing was written"
            ) from exc
    output_scales: dict[str, list[float]] = {}
    output_ranges: dict[str, list[float]] = {}
    for value in graph.outputs:
        alias = ctx.int8.get(id(value))
        if alias is not None:  # an int8 tensor, dequantized: its LSB is the scale, its range saturates
            output_scales[str(value.name)] = [alias.scale]
            output_ranges[str(value.name)] = [
                (-128 - alias.zero_point) * alias.scale,
                (127 - alias.zero_point) * alias.scale,
            ]
        builder.outputs.append(ctx.float_tensor(value, value.producer() or next(iter(graph))))
        builder.output_names.append(str(value.name))
    return builder, {
        "bitnet_export.output_scales": output_scales,
        "bitnet_export.output_ranges": output_ranges,
        "bitnet_export.requantized_outputs": ctx.requantized,
    }


def convert_hub(
    model: ir.Model,
    layers: Mapping[str, LayerQuantParams],
    weights: str,
    batch: int,
    extra_metadata: Mapping[str, Any] | None = None,
    weights_after: bool | None = None,
) -> bytes:
    """Lower the hub ``model`` to ``.tflite`` bytes.

    Args:
        model: the captured hub (BitLinear nodes not yet lowered for ONNX).
        layers: the recorded parameters per module path (for metadata).
        weights: ``int8``, ``int4`` or ``int2``.
        batch: the concrete batch size of the model's tensors (signature keeps -1).
        extra_metadata: more ``bitnet_export.*`` metadata entries (JSON encoded).
        weights_after: weights after the flatbuffer (see ``TflModelBuilder.to_bytes``).

    Raises:
        ExportError: unsupported ops (all listed), a layer the storage cannot hold, ...
    """
    builder, outputs_meta = lower_graph(model, weights, batch)
    meta = {
        "bitnet_export.version": __version__,
        "bitnet_export.layers": [p.describe() for p in layers.values()],
        "bitnet_export.weights": weights,
        **outputs_meta,
        **dict(extra_metadata or {}),
    }
    builder.metadata = {k: json.dumps(v, sort_keys=True).encode() for k, v in meta.items()}
    return builder.to_bytes(weights_after)
