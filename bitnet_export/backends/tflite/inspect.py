"""Describe a ``.tflite`` file as plain data (the same shape as ``backends.onnx.inspect``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from bitnet_export.backends.tflite.flatbuffer import read_model
from bitnet_export.errors import ExportError

__all__ = ["inspect_tflite"]


def _group(name: str) -> str:
    name = name.split(":")[0]  # "Gelu:0" -> "Gelu" (an op at the model's root)
    return name.split("/")[0] if "/" in name else name.split(".")[0]


def inspect_tflite(path: Path) -> dict[str, Any]:
    """Ops, tensors per layer (dtype, shape, bytes), inputs/outputs and metadata of a file.

    Raises:
        ExportError: missing, truncated or invalid file (including wrongly packed buffers).
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"tflite inspect: {path} does not exist or is not a file")
    data = path.read_bytes()
    parsed = read_model(data)
    ops = Counter(kind for kind, _, _, _ in parsed.operators)
    groups: dict[str, dict[str, Any]] = {}
    for kind, ins, outs, _ in parsed.operators:
        first = parsed.tensors[outs[0]].name if outs else kind
        g = groups.setdefault(
            _group(first), {"name": _group(first), "ops": Counter(), "initializers": [], "bytes": 0}
        )
        g["ops"][kind] += 1
        del ins
    for t in parsed.tensors:
        if t.data is None:
            continue
        g = groups.setdefault(
            _group(t.name), {"name": _group(t.name), "ops": Counter(), "initializers": [], "bytes": 0}
        )
        g["initializers"].append(
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "bytes": len(t.data),
                "location": "inline",
            }
        )
        g["bytes"] += len(t.data)
    meta = {}
    for key, value in parsed.metadata.items():
        if key.startswith("bitnet_export."):
            try:
                meta[key.removeprefix("bitnet_export.")] = json.loads(value)
            except ValueError:
                meta[key.removeprefix("bitnet_export.")] = value.decode(errors="replace")

    def io(indices: tuple[int, ...], names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [
            {
                "name": names[k] if k < len(names) else parsed.tensors[i].name,
                "dtype": parsed.tensors[i].dtype,
                "shape": list(parsed.tensors[i].shape),
            }
            for k, i in enumerate(indices)
        ]

    weight_bytes = sum(g["bytes"] for g in groups.values())
    return {
        "path": str(path),
        "format": "tflite",
        "producer": parsed.description,
        "ir_version": "TFLite schema 3",
        "opset_imports": {},
        "file_bytes": len(data),
        "total_bytes": len(data),
        "external_data": [],
        "initializer_bytes": weight_bytes,
        "inputs": io(parsed.inputs, parsed.signature_inputs),
        "outputs": io(parsed.outputs, parsed.signature_outputs),
        "ops": [{"domain": "tflite", "op_type": k, "count": n} for k, n in ops.most_common()],
        "node_count": len(parsed.operators),
        "groups": [{**g, "ops": dict(g["ops"])} for g in groups.values()],
        "bitnet_export": meta,
    }
