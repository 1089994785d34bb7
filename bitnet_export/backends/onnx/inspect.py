"""Read an ``.onnx`` file's structure as plain data (ops, initializers per layer, sizes, metadata).

The ONNX backend's reader for ``bitnet-export inspect``. Weights are never loaded: the file is
parsed with ``load_external_data=False`` and every initializer's size comes from its inline bytes,
its external-data ``length`` entry, or its dims and data type (sub-byte types packed).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from bitnet_export.errors import ExportError

__all__ = ["TOP_LEVEL_GROUP", "inspect_onnx"]

#: The group of names that belong to no module (e.g. ``node_relu`` from a functional call).
TOP_LEVEL_GROUP = "(graph)"

_METADATA_PREFIX = "bitnet_export."
_SEPARATOR = re.compile(r"[./]")


def _dtype_name(data_type: int) -> str:
    try:
        return str(onnx.TensorProto.DataType.Name(data_type))
    except ValueError:
        return f"dtype {data_type}"


def _bitwidth(data_type: int) -> int | None:
    try:
        return int(ir.DataType(data_type).bitwidth)
    except (ValueError, TypeError):  # unknown type or STRING (no fixed width)
        return None


def _stored_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of ``tensor``'s data without loading it (external data is never read)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        if "length" in info:
            return int(info["length"])
    elif tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    bits = _bitwidth(tensor.data_type)
    if bits is None:
        return sum(len(s) for s in tensor.string_data)
    # Sub-byte types (INT4, INT2, ...) are packed: ceil(numel * bits / 8) bytes.
    return math.ceil(math.prod(tensor.dims) * bits / 8)


def _shape(value: onnx.ValueInfoProto) -> list[int | str] | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims: list[int | str] = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
    return {"name": value.name, "dtype": _dtype_name(elem), "shape": _shape(value)}


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph``, including those of subgraphs (If / Loop / Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_nodes(sub)


def _group_of(name: str, layer_paths: Sequence[str]) -> str:
    """The layer a tensor or node name belongs to.

    A known BitNetLayer module path wins (longest first, so ``enc.0.fc1/Abs`` -> ``enc.0.fc1``);
    otherwise the prefix before the first ``.`` or ``/`` (``head.weight`` -> ``head``); names
    without either go to :data:`TOP_LEVEL_GROUP`.
    """
    for path in layer_paths:
        if name == path or name.startswith((f"{path}.", f"{path}/")):
            return path
    sep = _SEPARATOR.search(name)
    return name[: sep.start()] if sep and sep.start() > 0 else TOP_LEVEL_GROUP


def _metadata(proto: onnx.ModelProto) -> tuple[dict[str, Any], dict[str, str]]:
    ours: dict[str, Any] = {}
    other: dict[str, str] = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(_METADATA_PREFIX):
            try:
                ours[prop.key.removeprefix(_METADATA_PREFIX)] = json.loads(prop.value)
            except json.JSONDecodeError:  # e.g. a hand-edited value: keep the text
                ours[prop.key.removeprefix(_METADATA_PREFIX)] = prop.value
        else:
            other[prop.key] = prop.value
    return ours, other


def inspect_onnx(path: str | Path) -> dict[str, Any]:
    """Describe an ``.onnx`` file as plain data, without loading its weights.

    Args:
        path: the ``.onnx`` file (its external data, if any, is only ``stat``-ed).

    Returns:
        A JSON-ready dict with the keys

        * ``path``, ``file_bytes`` (the ``.onnx`` file), ``total_bytes`` (plus external data),
        * ``external_data``: ``[{"file", "bytes", "exists"}]``, one per referenced data file,
        * ``ir_version``, ``producer``, ``opset_imports`` (``{domain: version}``, ``""`` is ONNX),
        * ``inputs`` / ``outputs``: ``[{"name", "dtype", "shape"}]``,
        * ``ops``: ``[{"domain", "op_type", "count"}]`` (most frequent first), ``node_count``,
        * ``groups``: one per layer, in graph order: ``{"name", "ops": {op_type: count},
          "initializers": [{"name", "dtype", "shape", "bytes", "location"}], "bytes"}``,
        * ``initializer_bytes``: the sum over all initializers,
        * ``bitnet_export``: the ``bitnet_export.*`` metadata, JSON-decoded, keyed without the
          prefix (``layers``, ``weights``, ``version``, ...), and ``metadata``: the other keys.

    Raises:
        ExportError: the file is missing or is not an ONNX model.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"onnx inspect: {path} does not exist or is not a file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"onnx inspect: cannot read {path} as an ONNX model: {exc}") from exc
    ours, other = _metadata(proto)
    layers = ours.get("layers")
    paths = [
        str(lay["module_path"]) for lay in layers or [] if isinstance(lay, dict) and lay.get("module_path")
    ]
    layer_paths = sorted(set(paths), key=len, reverse=True)

    groups: dict[str, dict[str, Any]] = {}

    def group(name: str) -> dict[str, Any]:
        key = _group_of(name, layer_paths)
        return groups.setdefault(key, {"name": key, "ops": Counter(), "initializers": [], "bytes": 0})

    op_counts: Counter[tuple[str, str]] = Counter()
    node_count = 0
    for node in _all_nodes(proto.graph):
        node_count += 1
        op_counts[(node.domain, node.op_type)] += 1
        label = node.op_type if not node.domain else f"{node.domain}::{node.op_type}"
        group(node.name or (node.output[0] if node.output else ""))["ops"][label] += 1

    data_files: dict[str, None] = {}  # referenced data files, in order
    total_init = 0
    for tensor in proto.graph.initializer:
        nbytes = _stored_bytes(tensor)
        total_init += nbytes
        location = "inline"
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            location = f"external:{info.get('location', '?')}"
            data_files.setdefault(info.get("location", "?"), None)
        g = group(tensor.name)
        g["initializers"].append(
            {
                "name": tensor.name,
                "dtype": _dtype_name(tensor.data_type),
                "shape": [int(d) for d in tensor.dims],
                "bytes": nbytes,
                "location": location,
            }
        )
        g["bytes"] += nbytes

    external: list[dict[str, Any]] = []
    external_bytes = 0
    for name in data_files:
        data_path = path.parent / name
        exists = data_path.is_file()
        nbytes = data_path.stat().st_size if exists else 0
        external_bytes += nbytes
        external.append({"file": str(data_path), "bytes": nbytes, "exists": exists})
    file_bytes = path.stat().st_size
    return {
        "path": str(path),
        "file_bytes": file_bytes,
        "total_bytes": file_bytes + external_bytes,
        "external_data": external,
        "ir_version": int(proto.ir_version),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "opset_imports": {o.domain: int(o.version) for o in proto.opset_import},
        "inputs": [_value_info(v) for v in proto.graph.input],
        "outputs": [_value_info(v) for v in proto.graph.output],
        "ops": [
            {"domain": domain, "op_type": op_type, "count": count}
            for (domain, op_type), count in sorted(op_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "node_count": node_count,
        "groups": [{**g, "ops": dict(g["ops"])} for g in groups.values()],
        "initializer_bytes": total_init,
        "bitnet_export": ours,
        "metadata": other,
    }
