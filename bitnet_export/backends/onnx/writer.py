"""The ONNX serializer: IR model -> ``.onnx`` file (optionally with external data), atomically.

The only module of the ONNX backend that touches files. The file appears at ``path`` only once
it is complete and passed ``onnx.checker.check_model(full_check=True)``: everything is written
into a temporary folder beside ``path`` and moved into place with ``os.replace``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

import onnx
import onnx_ir as ir

from bitnet_export.errors import ExportError

__all__ = ["EXTERNAL_DATA_THRESHOLD", "initializer_bytes", "read_metadata", "save_onnx"]

#: Protobuf's hard limit is 2 GiB; above this many weight bytes the weights go to a side file.
EXTERNAL_DATA_THRESHOLD: Final = 1_800_000_000


def initializer_bytes(model: ir.Model) -> int:
    """Total bytes of the graph's initializers."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_onnx(
    model: ir.Model, path: Path, external_data: bool | None = None, check: bool = True
) -> Path | None:
    """Write ``model`` to ``path`` atomically.

    Args:
        model: the lowered model.
        path: destination ``.onnx`` file.
        external_data: store weights in ``<name>.data`` beside the file; ``None`` decides by
            size (over :data:`EXTERNAL_DATA_THRESHOLD` bytes of weights). Written by onnx_ir,
            without a protobuf copy of the weights.
        check: run ``onnx.checker.check_model(full_check=True)`` before moving into place.

    Returns:
        The external data file's path, or ``None``.

    Raises:
        ExportError: the checker rejected the model (nothing is left at ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = f"{path.name}.data" if external_data else None
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp_model = tmp / path.name
        ir.save(model, tmp_model, external_data=data_name)
        if check:
            try:
                onnx.checker.check_model(str(tmp_model), full_check=True)
            except onnx.checker.ValidationError as exc:
                raise ExportError(
                    f"onnx writer: the lowered model fails onnx.checker ({exc}); nothing was "
                    "written. This is a bitnet_export bug: please report it with the model"
                ) from exc
        data_path = None
        if data_name:
            data_path = path.parent / data_name
            os.replace(tmp / data_name, data_path)
        os.replace(tmp_model, path)
        return data_path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ``.onnx`` file (weights are not loaded).

    Raises:
        ExportError: the file is missing or not an ONNX model.
    """
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"onnx reader: cannot read {path} as an ONNX model: {exc}") from exc
    return {p.key: p.value for p in proto.metadata_props}
