"""Capture: nn.Module with BitNetLayers -> ONNX IR model (the hub every later stage reads).

Step 1/3 ``torch.export`` with every BitNetLayer as one ``bitnet_export::bitlinear`` node;
step 2/3 pre-flight op analysis; step 3/3 ``torch.onnx.export(dynamo=True)`` with the BitLinear
translation into an in-memory ``onnx_ir.Model``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import onnx_ir as ir
import torch
from torch import nn

from bitnet_export.capture import bitlinear_op
from bitnet_export.capture.outputs import output_names as flat_output_names
from bitnet_export.capture.preflight import check_model, check_ops, format_problems
from bitnet_export.errors import BitNetExportError, ExportError, InternalError
from bitnet_export.llm import cache_op
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
        batch_free: whether the first dimension of the inputs stayed symbolic.
    """

    model: ir.Model
    layers: dict[str, LayerQuantParams]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int
    batch_free: bool = True


#: torch.export / torch.onnx keep global tracing state (fake modes, the dispatcher): two threads
#: capturing at once corrupt each other. Every capture holds this lock.
CAPTURE_LOCK = threading.RLock()


def shadow_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree that shares its parameter and buffer tensors.

    Capture switches layers into capture mode (buffers, flags, ``eval()``) on this copy, so the
    user's model is never changed, even for a moment, and costs no second copy of the weights.
    A model that cannot be deep-copied (a module holding a lock or a file) is captured in place,
    under :data:`CAPTURE_LOCK`, and restored on exit.
    """
    memo: dict[int, object] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        return copy.deepcopy(model, memo)
    except Exception:
        return model


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


#: FX targets through which a program computes with its (symbolic) input sizes.
_SIZE_OPS = ("sym_size", "sym_numel", "sym_stride", "sym_storage_offset")


def reads_sizes(program: torch.export.ExportedProgram) -> bool:
    """Whether ``program`` computes with a symbolic size (``x.shape[0]`` in a view, a mask...)."""
    for node in program.graph.nodes:
        target = node.target
        if (
            node.op == "call_function"
            and isinstance(target, torch._ops.OpOverload)
            and target.namespace == "aten"
            and target._opname in _SIZE_OPS
        ):
            return True
    return False


def _dynamic_shapes(args: Sequence[torch.Tensor], dynamic_batch: bool) -> tuple[object, ...] | None:
    if not dynamic_batch:
        return None
    return tuple({0: torch.export.Dim.AUTO} if a.dim() > 0 else None for a in args)


def _torch_export(
    model: nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_batch: bool | str,
    dynamic_shapes: tuple[object, ...] | None = None,
) -> tuple[torch.export.ExportedProgram, tuple[torch.Tensor, ...]]:
    """``torch.export`` with project errors; returns the program and the arguments traced."""
    dynamic = dynamic_batch is not False and dynamic_shapes is None
    if dynamic and any(a.dim() > 0 and a.shape[0] == 1 for a in args):
        # torch.export specializes a size-1 dimension to a constant (0/1 specialization): trace
        # with the batch repeated so the exported batch dimension really stays free.
        args = tuple(torch.cat([a, a]) if a.dim() > 0 and a.shape[0] == 1 else a for a in args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                model,
                args,
                dynamic_shapes=dynamic_shapes
                if dynamic_shapes is not None
                else _dynamic_shapes(args, dynamic),
                strict=False,
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
    return program, args


def capture(
    model: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    *,
    opset: int = 21,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool | str = True,
    dynamic_shapes: tuple[object, ...] | None = None,
    log: Callable[[str], None] | None = None,
) -> CapturedModel:
    """Capture ``model`` into the ONNX IR hub.

    Args:
        model: the PyTorch model (BitNetLayers and standard modules).
        example_inputs: positional example inputs.
        opset: default-domain ONNX opset (21, 23 or 25).
        input_names: graph input names (default ``input``, ``input_1``... from torch).
        output_names: graph output names.
        dynamic_batch: make the first dimension of every input dynamic; ``"auto"``: dynamic
            unless the model computes with its sizes (then every shape is fixed at the
            example inputs', and shape arithmetic folds to constants: what TFLite needs).
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
    for i, a in enumerate(args):
        if a.is_floating_point() and a.dtype != torch.float32:
            raise ExportError(
                f"capture: example_inputs[{i}] is {str(a.dtype).removeprefix('torch.')}; exported "
                "files take float32 inputs (BitNetLayers compute in float32). Fix: pass "
                f"example_inputs[{i}].float() (and feed float32 at run time)"
            )
        if a.dim() > 0 and a.shape[0] == 0:
            raise ExportError(
                f"capture: example_inputs[{i}] has batch 0 (shape {tuple(a.shape)}); the file's "
                "shapes come from the example inputs. Fix: give at least one row, e.g. "
                "torch.randn(1, ...)"
            )
    if dynamic_batch not in (True, False, "auto"):
        raise ExportError(f"capture: dynamic_batch={dynamic_batch!r}; use True, False or 'auto'")
    check_model(model)
    with CAPTURE_LOCK:
        return _capture(
            shadow_copy(model), args, opset, input_names, output_names, dynamic_batch, dynamic_shapes, say
        )


def _capture(
    model: nn.Module,
    args: tuple[torch.Tensor, ...],
    opset: int,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    dynamic_batch: bool | str,
    dynamic_shapes: tuple[object, ...] | None,
    say: Callable[[str], None],
) -> CapturedModel:
    example_inputs = args
    was_training = model.training
    model.eval()
    try:
        try:
            with torch.no_grad():
                eager = model(*args)
        except BitNetExportError:
            raise
        except Exception as exc:
            raise ExportError(
                format_problems(
                    "capture (the model's forward on example_inputs)",
                    [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"],
                    "pass example_inputs the model's forward accepts (shapes, dtypes, order)",
                )
            ) from exc
        names = flat_output_names(eager, "capture (the model's forward)")
        with capture_mode(model) as recorded:
            say("step 1/3 torch.export (BitNetLayers as bitnet_export::bitlinear)")
            program, args = _torch_export(model, args, dynamic_batch, dynamic_shapes)
            batch_free = dynamic_batch is not False if dynamic_shapes is None else False
            if dynamic_batch == "auto" and reads_sizes(program):
                say("  the model computes with its input sizes: capturing at fixed shapes")
                args = tuple(example_inputs)
                program, _ = _torch_export(model, args, False)
                batch_free = False
            say("step 2/3 pre-flight op analysis")
            registry, decompose = _onnx_registry()
            decomposed = decompose(program)
            custom = (torch.ops.bitnet_export.bitlinear.default, torch.ops.bitnet_export.cache_update.default)

            def supported(target: object) -> bool:
                if target in custom or not isinstance(target, torch._ops.OpOverload):
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
                    custom_translation_table=bitlinear_op.translation_table() | cache_op.translation_table(),
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
    outs = list(ir_model.graph.outputs)
    if len(outs) != len(names):
        raise InternalError(f"capture: {len(outs)} graph outputs for {len(names)} model outputs")
    if not output_names:
        # torch names outputs after FX nodes ("bitlinear_3"); name them after the forward's
        # return value instead (``logits``, ``output_0``...: see capture/outputs.py)
        for value, name in zip(outs, names, strict=True):
            value.name = name
    return CapturedModel(
        model=ir_model,
        layers=dict(recorded),
        input_names=tuple(str(v.name) for v in ir_model.graph.inputs),
        output_names=tuple(str(v.name) for v in ir_model.graph.outputs),
        opset=opset,
        batch_free=batch_free,
    )
