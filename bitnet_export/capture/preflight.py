"""Pre-flight analysis: every reason a model cannot be exported, found before lowering, at once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import nn

from bitnet_export.errors import ExportError
from bitnet_export.training.convert import bitnet_layers, name_layers

__all__ = ["check_model", "check_ops", "format_problems"]


def format_problems(stage: str, problems: Iterable[str], fix: str = "") -> str:
    """One message for a list of problems: ``stage``, a numbered list, and the general fix."""
    items = list(problems)
    lines = [f"bitnet_export: cannot export ({stage}): {len(items)} problem(s)"]
    lines += [f"  {i}. {p}" for i, p in enumerate(items, 1)]
    if fix:
        lines.append(f"Fix: {fix}")
    return "\n".join(lines)


def check_model(model: nn.Module) -> None:
    """Check the model itself: finite weights, calibrated static layers, finished blends.

    Raises:
        ExportError: listing every problem, each naming the module path.
    """
    name_layers(model)
    problems: list[str] = []
    for mod_path, module in model.named_modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, t in tensors:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                where = f"{mod_path}.{name}" if mod_path else name
                problems.append(
                    f"{where} ({type(module).__name__}): {bad} NaN/Inf value(s); "
                    "fix the training run or load a clean checkpoint"
                )
    for path, layer in bitnet_layers(model):
        label = f"{path or '<root>'} (BitNetLayer)"
        if not layer.enabled or layer.blend == 0.0:
            continue  # a float layer: exported as a float MatMul
        if layer.blend != 1.0:
            problems.append(
                f"{label}: blend={layer.blend} is between float and quantized; finish the "
                "gradual-quantization schedule (blend=1) or configure enabled=False"
            )
        if layer.activation_mode == "static" and not bool(layer.calibrated):
            problems.append(
                f"{label}: activation_mode='static' but the layer was never calibrated; run "
                "bitnet_export.calibrate(model, batches) before exporting"
            )
    if problems:
        raise ExportError(format_problems("pre-flight model check", problems))


def check_ops(
    program: torch.export.ExportedProgram,
    is_supported: Callable[[object], bool],
    backend: str,
) -> None:
    """List every op of ``program`` that ``backend`` cannot lower, grouped by op.

    Args:
        program: the captured (and decomposed) program.
        is_supported: predicate on an FX node target.
        backend: backend name for the message (``"onnx"``).

    Raises:
        ExportError: one error naming each unsupported op, how often it occurs and one
            module path where it does.
    """
    seen: dict[str, list[str]] = defaultdict(list)
    for node in program.graph.nodes:
        if node.op != "call_function" or is_supported(node.target):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        path = ""
        if stack:
            path, cls = list(stack.values())[-1]
            path = f"{path or '<root>'} ({getattr(cls, '__name__', cls)})"
        original = node.meta.get("original_aten")
        op = str(node.target)
        if original is not None and str(original) != op:
            op = f"{original} (decomposes to {op})"
        seen[op].append(path or "<root>")
    if seen:
        problems = [f"{op}: {len(paths)} use(s), e.g. in {paths[0]}" for op, paths in sorted(seen.items())]
        raise ExportError(
            format_problems(
                f"pre-flight op analysis for {backend}",
                problems,
                "replace these ops in the model (or wrap them in a supported module); nothing was written",
            )
        )
