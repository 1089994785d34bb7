"""Backends: the hub (ONNX IR) -> a file format (ONNX, TFLite)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["file_format", "read_file_metadata"]


def file_format(path: Path) -> str:
    """``"tflite"`` or ``"onnx"``, from the file's identifier (not its name)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return "tflite" if head[4:8] == b"TFL3" else "onnx"


def read_file_metadata(path: Path) -> dict[str, str]:
    """The ``bitnet_export.*`` metadata of an exported file of either format.

    Raises:
        ExportError: the file cannot be read as that format.
    """
    from bitnet_export.errors import ExportError

    try:
        fmt = file_format(path)
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    if fmt == "tflite":
        from bitnet_export.backends.tflite.flatbuffer import read_metadata as read_tflite

        return read_tflite(path)
    from bitnet_export.backends.onnx.writer import read_metadata as read_onnx

    return read_onnx(path)
