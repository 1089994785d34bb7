"""The Python API: ``export_onnx`` and ``verify``. The CLI is a thin layer over these."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitnet_export._io import atomic_write_bytes, check_target
from bitnet_export.backends.onnx.lower_bitlinear import KERNELS, WEIGHT_MODES, lower_bitlinear_nodes
from bitnet_export.backends.onnx.writer import save_onnx
from bitnet_export.capture.bitlinear_op import is_bitlinear, read_bitlinear
from bitnet_export.capture.capture import capture
from bitnet_export.errors import ExportError
from bitnet_export.parity.engine import run_parity, seeded_inputs
from bitnet_export.parity.report import ParityReport, Tolerance
from bitnet_export.passes.annotate import annotate
from bitnet_export.passes.fold_batchnorm import fold_batchnorm
from bitnet_export.passes.name_nodes import name_nodes
from runtimes.protocol import RuntimeAdapter

__all__ = ["ExportResult", "export_onnx", "export_tflite", "verify"]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        path: the model file.
        format: ``"onnx"``.
        size_bytes: bytes on disk (model file plus external data).
        weights: weight storage mode.
        opset: default-domain opset.
        input_names: graph input names.
        output_names: graph output names.
        layers: one summary per BitNetLayer (module path, precision, mode, storage, bytes, ops).
        external_data: the external data file, if any.
        seconds: wall time of the export.
        kernels: ONNX only: ``integer``, ``float`` or ``nbits`` (see :func:`export_onnx`); ``""`` for TFLite.
        batch: the file's fixed batch size, or ``None`` when its batch dimension is free.
    """

    path: Path
    format: str
    size_bytes: int
    weights: str
    opset: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    layers: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    external_data: Path | None = None
    seconds: float = 0.0
    kernels: str = ""
    batch: int | None = None

    def summary(self) -> str:
        """A short human-readable summary."""
        lines = [
            f"wrote {self.path} ({self.size_bytes / 1e6:.3f} MB, {self.format}, weights={self.weights}, "
            + (f"kernels={self.kernels}, " if self.kernels else "")
            + (f"opset {self.opset}, " if self.opset else "")
            + f"batch {'free' if self.batch is None else self.batch}, {self.seconds:.1f} s)"
        ]
        for layer in self.layers:
            lines.append(
                f"  {layer['module_path']:<20} precision={layer['precision']!s:<5} "
                f"act={layer['activation_mode']:<8} weight bytes={layer['weight_bytes']}"
            )
        return "\n".join(lines)


def _as_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _batch_of(args: tuple[torch.Tensor, ...]) -> int | None:
    """The batch of the example inputs (their first dimension), ``None`` for scalars."""
    return int(args[0].shape[0]) if args and args[0].dim() > 0 else None


def _progress(enabled: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def say(msg: str) -> None:
        if enabled:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say


def _output_scales(hub: Any) -> dict[str, list[float]]:
    """LSB of each graph output produced directly by a static BitLinear: ``s_x * s_w[c]``."""
    outputs = {v.name for v in hub.graph.outputs}
    scales: dict[str, list[float]] = {}
    for node in hub.graph:
        if is_bitlinear(node) and node.outputs[0].name in outputs:
            p = read_bitlinear(node)
            if p.input.mode == "static" and p.input.scale is not None:
                s = np.float32(p.input.scale) * np.broadcast_to(p.weight.scale, (p.out_features,))
                scales[str(node.outputs[0].name)] = [float(v) for v in s]
    return scales


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    weights: str = "int8",
    *,
    kernels: str = "integer",
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    external_data: bool | None = None,
    progress: bool = False,
) -> ExportResult:
    """Export ``model`` to an ONNX QDQ / integer graph.

    Args:
        model: a model with BitNetLayers (and any standard modules).
        example_inputs: one tensor or a tuple of positional inputs.
        path: the ``.onnx`` file to write (atomically: nothing is left on failure).
        weights: weight storage: ``int8``, ``int4`` (opset 21), ``int2`` (opset 25) or
            ``matmulnbits`` (ORT's 2/4-bit contrib op, dynamic activations only).
        kernels: ``integer`` (QuantizeLinear / MatMulInteger / QDQ: ORT's CPU and mobile
            integer kernels) or ``float`` (the same integer maths with float ops only: for
            ORT's WebGPU EP, which has no integer kernels) or ``nbits`` (per-token layers on
            ORT's ``MatMulNBits`` block kernel, the same exact numbers, 1.4x (int8) to 2.4x
            (int2) faster than ``MatMulInteger`` at batch 1 on ORT CPU). Weights stay packed
            either way.
        opset: default-domain opset; 21, or 25 for ``int2``.
        input_names: graph input names.
        output_names: graph output names.
        dynamic_batch: keep the first dimension of the inputs free.
        external_data: weights in a ``.data`` side file (``None``: only above ~1.8 GB).
        progress: print progress steps to stderr.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: naming the module, op, stage and fix. No file is written.
    """
    t0 = time.perf_counter()
    if weights not in WEIGHT_MODES:
        raise ExportError(f"export_onnx: weights={weights!r}; choose one of {', '.join(WEIGHT_MODES)}")
    if kernels not in KERNELS:
        raise ExportError(f"export_onnx: kernels={kernels!r}; choose one of {', '.join(KERNELS)}")
    if opset is None:
        opset = 25 if weights == "int2" else 21
    if weights == "int2" and opset < 25:
        raise ExportError(f"export_onnx: weights='int2' needs opset >= 25 (INT2), got opset={opset}")
    check_target(Path(path))  # refuse a symlink/device/folder target before any work
    say = _progress(progress)
    captured = capture(
        model,
        _as_tuple(example_inputs),
        opset=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_batch=dynamic_batch,
        log=say,
    )
    hub = captured.model
    name_nodes(hub)
    scales = _output_scales(hub)
    say(f"lowering {len(captured.layers)} BitNetLayer(s) with weights={weights}, kernels={kernels}")
    layers = lower_bitlinear_nodes(hub, weights, kernels)
    annotate(
        hub,
        captured.layers,
        {
            "weights": weights,
            "kernels": kernels,
            "output_scales": scales,
            "outputs": list(captured.output_names),
            "batch": None if captured.batch_free else _batch_of(_as_tuple(example_inputs)),
        },
    )
    say(f"writing {path}")
    path = Path(path)
    data = save_onnx(hub, path, external_data=external_data)
    size = path.stat().st_size + (data.stat().st_size if data else 0)
    return ExportResult(
        path=path,
        format="onnx",
        size_bytes=size,
        weights=weights,
        opset=opset,
        input_names=captured.input_names,
        output_names=captured.output_names,
        layers=tuple(layers),
        external_data=data,
        seconds=time.perf_counter() - t0,
        kernels=kernels,
        batch=None if captured.batch_free else _batch_of(_as_tuple(example_inputs)),
    )


def export_tflite(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    weights: str = "int8",
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool | str = "auto",
    weights_after: bool | None = None,
    progress: bool = False,
) -> ExportResult:
    """Export ``model`` to a TFLite flatbuffer, without TensorFlow.

    Static-activation BitNetLayers become full-integer int8 ``FULLY_CONNECTED`` ops (int8
    between consecutive BitNet layers), dynamic per-token ones hybrid ``FULLY_CONNECTED`` ops
    (float in/out, int8/INT4/INT2 weights) whose builtin kernel quantizes rows exactly like
    BitNet. Shapes are resolved at export (TFLite kernels are static-shaped): the batch of
    ``example_inputs`` is the file's; its signature keeps it free (``-1``) unless the model
    computes with its sizes (attention masks, ``view(B, ...)``), then the file is fixed at it.

    Args:
        model: a model with BitNetLayers (and supported float ops).
        example_inputs: one tensor or a tuple of positional inputs.
        path: the ``.tflite`` file to write (atomically).
        weights: ``int8``, ``int4`` (TensorType INT4) or ``int2`` (INT2), packed low bits first.
        input_names: SignatureDef input names.
        output_names: SignatureDef output names.
        dynamic_batch: ``"auto"`` (above), ``True`` (a free batch, or an error where the model
            computes with it) or ``False`` (always fixed at the example batch).
        weights_after: store the weights after the flatbuffer (``Buffer.offset/size``), as
            models over 2 GiB need; ``None``: only above ~1.9 GB of weights.
        progress: print progress steps to stderr.

    Returns:
        An :class:`ExportResult` with ``format="tflite"``.

    Raises:
        ExportError: naming module, op, stage and fix; no file is written.
    """
    from bitnet_export.backends.tflite.convert import TFLITE_WEIGHT_MODES, convert_hub

    t0 = time.perf_counter()
    if weights not in TFLITE_WEIGHT_MODES:
        raise ExportError(
            f"export_tflite: weights={weights!r}; choose one of {', '.join(TFLITE_WEIGHT_MODES)}"
        )
    args = _as_tuple(example_inputs)
    check_target(Path(path))  # refuse a symlink/device/folder target before any work
    say = _progress(progress)
    captured = capture(
        model,
        args,
        opset=21,
        input_names=input_names,
        output_names=output_names,
        dynamic_batch=dynamic_batch,
        log=say,
    )
    hub = captured.model
    name_nodes(hub)
    fold_batchnorm(hub)  # a BatchNormalization right after a Conv: into its weights
    say(f"lowering to TFLite with weights={weights}")
    batch = _batch_of(args) or 1
    data = convert_hub(
        hub,
        captured.layers,
        weights,
        batch,
        extra_metadata={
            "bitnet_export.batch": None if captured.batch_free else batch,
            "bitnet_export.outputs": list(captured.output_names),
        },
        weights_after=weights_after,
    )
    path = Path(path)
    say(f"writing {path}")
    atomic_write_bytes(path, data)
    layers = tuple(
        {
            "module_path": p.module_path,
            "precision": p.weight.precision,
            "activation_mode": p.input.mode,
            "weights": weights,
            "weight_bytes": int(p.weight.values.size * {"int8": 8, "int4": 4, "int2": 2}[weights] // 8),
        }
        for p in captured.layers.values()
    )
    return ExportResult(
        path=path,
        format="tflite",
        size_bytes=path.stat().st_size,
        weights=weights,
        opset=0,
        input_names=captured.input_names,
        output_names=captured.output_names,
        layers=layers,
        seconds=time.perf_counter() - t0,
        batch=None if captured.batch_free else batch,
    )


def verify(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path | Sequence[str | Path],
    targets: Sequence[str | RuntimeAdapter] | None = None,
    *,
    inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    seed: int = 0,
    tolerance: Tolerance | None = None,
) -> ParityReport:
    """Run the parity engine: PyTorch vs every target on the same inputs.

    Args:
        model: the model the file(s) were exported from.
        example_inputs: used for the shapes (and mean/spread) of seeded inputs.
        path: the exported file, or several (e.g. the ONNX and the TFLite export of one
            checkpoint: one report shows PyTorch vs ORT vs LiteRT).
        targets: runtime targets (``"ort-cpu"``, ``"litert-builtin"``...) or adapter objects;
            ``None``: every target that can run each file.
        inputs: user data to use instead of seeded random inputs.
        seed: seed of the random inputs.
        tolerance: override the explicit per-mode tolerance.

    Returns:
        The :class:`ParityReport` (``.passed``, ``.format_table()``, ``.to_json()``).

    Raises:
        ExportError: a file that cannot be read (missing, truncated, wrongly packed).
    """
    if inputs is not None:
        used = _as_tuple(inputs)
        desc: dict[str, Any] = {"source": "user data"}
    else:
        used = seeded_inputs(_as_tuple(example_inputs), seed)
        desc = {"source": "seeded random, like example_inputs", "seed": seed}
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    return run_parity(model, paths, used, targets, tolerance, desc)
