"""The ONNX serializer: IR model -> ``.onnx`` file (optionally with external data), atomically.

The only module of the ONNX backend that touches files. The file appears at ``path`` only once
it is complete and passed ``onnx.checker.check_model(full_check=True)``: everything is written
into a temporary folder beside ``path`` (:func:`bitnet_export._io.temp_dir`) and moved into
place with ``os.replace``, model and external data together (see :func:`save_onnx`).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Final

import onnx
import onnx_ir as ir

from bitnet_export._io import check_target, temp_dir
from bitnet_export.errors import ExportError

__all__ = ["EXTERNAL_DATA_THRESHOLD", "initializer_bytes", "read_metadata", "save_onnx"]

#: Hex digits of the digest in an external data file's name.
_DIGEST: Final = 16

#: Protobuf's hard limit is 2 GiB; above this many weight bytes the weights go to a side file.
EXTERNAL_DATA_THRESHOLD: Final = 1_800_000_000


def initializer_bytes(model: ir.Model) -> int:
    """Total bytes of the graph's initializers."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def _ours(path: Path, name: str) -> bool:
    """Whether ``name`` is a data file this writer names for ``path`` (``<name>[.<digest>].data``)."""
    return re.fullmatch(rf"{re.escape(path.name)}(\.[0-9a-f]{{{_DIGEST}}})?\.data", name) is not None


def _digest(file: Path) -> str:
    h = hashlib.blake2b(digest_size=_DIGEST // 2)
    with open(file, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def save_onnx(
    model: ir.Model, path: Path, external_data: bool | None = None, check: bool = True
) -> Path | None:
    """Write ``model`` to ``path`` atomically; with external data, model and data as one.

    The weights go to ``<name>.<digest>.data`` (``digest``: of its bytes), a name no earlier
    export's model refers to unless its weights are the same. The data file is moved into place
    first, then the model file replaces the old one: that rename is the commit. Until it, the old
    model and its data are untouched; after it, the old data files are deleted. A process killed
    in between leaves at most an unreferenced data file, which the next write to ``path``
    deletes (with any dead writer's temporary folder: :func:`bitnet_export._io.sweep`).

    Args:
        model: the lowered model.
        path: destination ``.onnx`` file.
        external_data: store weights in a side file beside ``path``; ``None`` decides by size
            (over :data:`EXTERNAL_DATA_THRESHOLD` bytes of weights). Written by onnx_ir,
            without a protobuf copy of the weights.
        check: run ``onnx.checker.check_model(full_check=True)`` before moving into place.

    Returns:
        The external data file's path, or ``None``.

    Raises:
        ExportError: the checker rejected the model, or ``path`` is not a regular file
            (nothing is left at ``path``).
    """
    path = Path(path)
    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    with temp_dir(path) as tmp:
        tmp_model = tmp / path.name
        data_name = f"{path.name}.data" if external_data else None
        ir.save(model, tmp_model, external_data=data_name)
        if data_name:
            final = f"{path.name}.{_digest(tmp / data_name)}.data"
            os.replace(tmp / data_name, tmp / final)
            proto = onnx.load(str(tmp_model), load_external_data=False)
            for tensor in proto.graph.initializer:  # onnx_ir externalizes initializers only
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = final
            onnx.save(proto, str(tmp_model))
            data_name = final
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
            check_target(data_path)
            os.replace(tmp / data_name, data_path)
        os.replace(tmp_model, path)  # the commit
    # the data files of earlier exports, and of exports killed before their commit
    for entry in path.parent.iterdir():
        if entry.name != data_name and _ours(path, entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
    return data_path


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
