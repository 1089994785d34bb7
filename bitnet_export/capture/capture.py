"""Capture: nn.Module with BitNetLayers -> ONNX IR model (the hub every later stage reads).

Step 1/3 ``torch.export`` with every BitNetLayer as one ``bitnet_export::bitlinear`` node;
step 2/3 pre-flight op analysis; step 3/3 ``torch.onnx.export(dynamo=True)`` with the BitLinear
translation into an in-memory ``onnx_ir.Model``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import onnx_ir as ir
import torch
from torch import nn

from bitnet_export.capture import bitlinear_op
from bitnet_export.capture.preflight import check_model, check_ops, format_problems
from bitnet_export.errors import BitNetExportError, ExportError, InternalError
from bitnet_export.quant.params import LayerQuantParams
from bitnet_export.training.convert import bitnet_layers

__all__ = ["CapturedModel", "capture"]

#: Opsets the exporter emits: 21 (INT4) by default, 25 when INT2 weights are stored.
SUPPORTED_OPSETS = (21, 23, 25)


@dataclass(frozen=True)
class CapturedModel:
    """The hub: an ONNX IR model with one BitLinear node per quantized BitNetLayer.

    Attributes:
        model: the in-memory ``onnx_ir.Model``.
        layers: recorded parameters of each captured layer, by module path.
        input_names: graph input names.
        output_names: graph output names.
        opset: default-domain opset of ``model``.
    """

    model: ir.Model
    layers: dict[str, LayerQuantParams]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int


@contextlib.contextmanager
def capture_mode(model: nn.Module) -> Iterator[dict[str, LayerQuantParams]]:
    """Switch every quantized BitNetLayer to emit ``bitnet_export::bitlinear``; undo on exit."""
    recorded: dict[str, LayerQuantParams] = {}
    switched = []
    try:
        for path, layer in bitnet_layers(model):
            if not layer.enabled or layer.blend == 0.0:
                continue
            params = layer.quant_params()
            recorded[path] = params
            layer.register_buffer("weight_q", torch.from_numpy(params.weight.values.copy()), persistent=False)
            layer.register_buffer(
                "weight_scale", torch.from_numpy(params.weight.scale.copy()), persistent=False
            )
            layer._capture_config = bitlinear_op.encode_config(params)
            switched.append(layer)
        yield recorded
    finally:
        for layer in switched:
            layer._capture_config = None
            del layer._buffers["weight_q"]
            del layer._buffers["weight_scale"]


#: Name prefixes of the assertion / range-constraint ops torch.export records (``.to(dtype)``
#: becomes ``_assert_tensor_metadata``, a data-dependent size ``_assert_scalar`` and
#: ``sym_constrain_range_for_size``). They compute nothing; torch.onnx drops them.
_ASSERTION_PREFIXES = (
    "_assert",
    "_functional_assert",
    "sym_constrain_range",
    "_functional_sym_constrain_range",
)


def is_assertion(target: torch._ops.OpOverload) -> bool:
    """Whether an aten op is one of torch.export's no-op checks (never an unsupported op)."""
    return target.namespace == "aten" and target._opname.startswith(_ASSERTION_PREFIXES)


def _find_cause(exc: BaseException) -> BaseException | None:
    """The first bitnet_export error or our own ValueError in an exception chain."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (BitNetExportError, ValueError)) and "BitNetLayer" in str(cur):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _onnx_registry() -> tuple[object, Callable[[torch.export.ExportedProgram], torch.export.ExportedProgram]]:
    from torch.onnx._internal.exporter import _fx_passes, _registration

    registry = _registration.ONNXRegistry.from_torchlib()

    def decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
        return _fx_passes.decompose_with_registry(ep, registry)

    return registry, decompose


def _dynamic_shapes(args: Sequence[torch.Tensor], dynamic_batch: bool) -> tuple[object, ...] | None:
    if not dynamic_batch:
        return None
    return tuple({0: torch.export.Dim.AUTO} if a.dim() > 0 else None for a in args)


def capture(
    model: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    *,
    opset: int = 21,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    log: Callable[[str], None] | None = None,
) -> CapturedModel:
    """Capture ``model`` into the ONNX IR hub.

    Args:
        model: the PyTorch model (BitNetLayers and standard modules).
        example_inputs: positional example inputs.
        opset: default-domain ONNX opset (21, 23 or 25).
        input_names: graph input names (default ``input``, ``input_1``... from torch).
        output_names: graph output names.
        dynamic_batch: make the first dimension of every input dynamic.
        log: progress callback (``"step 1/3 ..."`` messages).

    Returns:
        The :class:`CapturedModel`.

    Raises:
        ExportError: the model cannot be captured; the message names the modules, ops and fix.
    """
    say = log or (lambda _msg: None)
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"capture: opset={opset} is not supported; use one of {SUPPORTED_OPSETS}")
    args = tuple(example_inputs)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise ExportError(
            "capture: example_inputs must be a non-empty tuple of tensors, e.g. (torch.randn(1, 64),)"
        )
    if dynamic_batch and any(a.dim() > 0 and a.shape[0] == 1 for a in args):
        # torch.export specializes a size-1 dimension to a constant (0/1 specialization): trace
        # with the batch repeated so the exported batch dimension really stays free.
        args = tuple(torch.cat([a, a]) if a.dim() > 0 and a.shape[0] == 1 else a for a in args)
    check_model(model)
    was_training = model.training
    model.eval()
    try:
        with capture_mode(model) as recorded:
            say("step 1/3 torch.export (BitNetLayers as bitnet_export::bitlinear)")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    program = torch.export.export(
                        model, args, dynamic_shapes=_dynamic_shapes(args, dynamic_batch), strict=False
                    )
            except Exception as exc:
                cause = _find_cause(exc)
                if cause is not None:
                    raise ExportError(format_problems("capture (torch.export)", [str(cause)])) from exc
                raise ExportError(
                    format_problems(
                        "capture (torch.export)",
                        [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"],
                        "make the model torch.export-able (no data-dependent Python control flow)",
                    )
                ) from exc
            say("step 2/3 pre-flight op analysis")
            registry, decompose = _onnx_registry()
            decomposed = decompose(program)
            custom = torch.ops.bitnet_export.bitlinear.default

            def supported(target: object) -> bool:
                if target is custom or not isinstance(target, torch._ops.OpOverload):
                    return True  # python operators (getitem, sym ops) are handled by torch
                if is_assertion(target):
                    return True  # a no-op check torch.export records; torch.onnx drops it
                return bool(registry.is_registered(target))  # type: ignore[attr-defined]

            check_ops(decomposed, supported, "onnx")
            say("step 3/3 torch.onnx.export (dynamo) -> ONNX IR")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_program = torch.onnx.export(
                    program,
                    args,
                    dynamo=True,
                    custom_translation_table=bitlinear_op.translation_table(),
                    opset_version=opset,
                    input_names=list(input_names) if input_names else None,
                    output_names=list(output_names) if output_names else None,
                    optimize=True,
                    verbose=False,
                )
    finally:
        model.train(was_training)
    if onnx_program is None:
        raise InternalError("capture: torch.onnx.export returned no program")
    ir_model = onnx_program.model
    if not output_names:
        # torch names outputs after FX nodes ("bitlinear_3"); give them stable names instead
        outs = list(ir_model.graph.outputs)
        for i, value in enumerate(outs):
            value.name = "output" if len(outs) == 1 else f"output_{i}"
    return CapturedModel(
        model=ir_model,
        layers=dict(recorded),
        input_names=tuple(str(v.name) for v in ir_model.graph.inputs),
        output_names=tuple(str(v.name) for v in ir_model.graph.outputs),
        opset=opset,
    )
