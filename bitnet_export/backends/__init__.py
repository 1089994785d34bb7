"""Backends: the hub (ONNX IR) -> a file format (ONNX, TFLite)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["check_readable", "file_format", "read_file_metadata"]


def check_readable(path: Path) -> None:
    """Refuse anything but a non-empty regular file before opening it.

    Opening a FIFO blocks until a writer comes (``verify`` hung forever), a device reads
    without end, and an empty file parses as an empty ONNX model.

    Raises:
        ExportError: missing, not a regular file, or empty; the message names the fix.
    """
    import os
    import stat

    from bitnet_export.errors import ExportError

    try:
        st = os.stat(path)
    except OSError as exc:
        raise ExportError(
            f"{path} not found ({exc.strerror}); export it first with bitnet-export export"
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise ExportError(f"{path}: {kind}; give the .onnx or .tflite file that bitnet-export wrote")
    if st.st_size == 0:
        raise ExportError(f"{path}: the file is empty (0 bytes); re-export it with bitnet-export export")


def file_format(path: Path) -> str:
    """``"tflite"`` or ``"onnx"``, from the file's identifier (not its name)."""
    check_readable(path)
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
