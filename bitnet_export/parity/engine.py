"""The parity engine: run the PyTorch reference and runtime adapters on the same inputs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitnet_export.backends import file_format, read_file_metadata
from bitnet_export.capture.outputs import flatten_outputs
from bitnet_export.errors import ExportError
from bitnet_export.parity.metrics import compare
from bitnet_export.parity.report import ParityReport, TargetResult, Tolerance
from bitnet_export.parity.tolerances import tolerance_for, tolerance_vs_cpu, tolerance_vs_host
from bitnet_export.quant.functional import RoundingMode, activation_rounding, output_requantization
from bitnet_export.training.convert import name_layers
from runtimes import make_adapter
from runtimes.protocol import RuntimeAdapter

__all__ = [
    "DEFAULT_TARGETS",
    "GPU_CPU_TWIN",
    "base_runtime",
    "default_targets",
    "expand_targets",
    "reference_outputs",
    "run_parity",
    "seeded_inputs",
]


def seeded_inputs(example_inputs: Sequence[torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like ``example_inputs`` (and of their dtype), with their mean and spread."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for ex in example_inputs:
        if not ex.is_floating_point():
            out.append(ex.clone())
            continue
        std = float(ex.float().std()) if ex.numel() > 1 else 1.0
        mean = float(ex.float().mean())
        out.append((torch.randn(ex.shape, generator=gen) * (std or 1.0) + mean).to(ex.dtype))
    return tuple(out)


@torch.no_grad()
def reference_outputs(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    rounding: RoundingMode = "half_even",
    requantized: Mapping[str, tuple[float, int]] | None = None,
) -> list[np.ndarray]:
    """PyTorch's outputs (eval mode, no grad: BitNetLayer's integer inference form).

    Args:
        model: the model.
        inputs: positional inputs.
        rounding: activation rounding of the reference: ``half_even`` (BitNet, ONNX) or
            ``half_away`` (TFLite's ``std::round``); they differ only on exact .5 ties.
        requantized: static layers whose outputs the file requantizes to int8 at their own
            calibrated range (TFLite full-integer FCs feeding float ops): module path ->
            ``(scale, zero point)``; the reference does the same.
    """
    was_training = model.training
    model.eval()
    name_layers(model)  # the layers' module paths key ``requantized``
    try:
        with activation_rounding(rounding), output_requantization(dict(requantized or {})):
            out = model(*inputs)
    finally:
        model.train(was_training)
    return [t.detach().float().numpy() for t in flatten_outputs(out, "verify (the model's forward)")]


@dataclass(frozen=True)
class _FileFacts:
    format: str
    modes: list[str]
    weights: str | None
    kernels: str
    scales: dict[str, Any]
    ranges: dict[str, Any]
    #: the file's outputs in the model's (pytree) order; empty for files written before 0.x
    outputs: list[str]
    #: TFLite: static layers requantized to their own output range (see reference_outputs)
    requantized: dict[str, tuple[float, int]]


def _file_facts(path: Path) -> _FileFacts:
    meta = read_file_metadata(path)
    try:
        return _parse_facts(path, meta)
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # json.JSONDecodeError is a ValueError
        raise ExportError(
            f"{path}: its bitnet_export.* metadata cannot be read ({type(exc).__name__}: {exc}); "
            "the file was edited or written by another tool. Fix: re-export it with bitnet-export export"
        ) from exc


def _parse_facts(path: Path, meta: dict[str, str]) -> _FileFacts:
    layers = json.loads(meta.get("bitnet_export.layers", "[]"))
    weights = json.loads(meta["bitnet_export.weights"]) if "bitnet_export.weights" in meta else None
    return _FileFacts(
        format=file_format(path),
        modes=[layer["input"]["mode"] for layer in layers],
        weights=weights,
        kernels=json.loads(meta.get("bitnet_export.kernels", '"integer"')),
        scales=json.loads(meta.get("bitnet_export.output_scales", "{}")),
        ranges=json.loads(meta.get("bitnet_export.output_ranges", "{}")),
        outputs=json.loads(meta.get("bitnet_export.outputs", "[]")),
        requantized={
            k: (float(v[0]), int(v[1]))
            for k, v in json.loads(meta.get("bitnet_export.requantized_outputs", "{}")).items()
        },
    )


#: Runtime targets by file format, for ``targets=None``. XNNPACK-based targets are added for
#: int8 TFLite files only: XNNPACK does not take INT4/INT2 FULLY_CONNECTED graphs.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "onnx": ("ort-cpu",),
    "tflite": ("litert-builtin", "litert-reference"),
}
_XNNPACK_TARGETS = ("litert-xnnpack", "litert-compiled-cpu")


def default_targets(path: Path) -> tuple[str, ...]:
    """The runtime targets that can run ``path`` (by format and weight storage)."""
    facts = _file_facts(path)
    targets = DEFAULT_TARGETS[facts.format]
    if facts.format == "tflite" and facts.weights == "int8":
        targets = (*targets, *_XNNPACK_TARGETS)
    return targets


def base_runtime(target: str) -> str:
    """The host-equivalent runtime of a target: ``arm64:<cpu>:ort`` -> ``ort-cpu``,
    ``arm64:<cpu>:litert-builtin`` -> ``litert-builtin``; host targets map to themselves."""
    if target.startswith("arm64:") and target.count(":") == 2:
        runtime = target.split(":")[2]
        return "ort-cpu" if runtime == "ort" else runtime
    return target


def expand_targets(targets: Sequence[str | RuntimeAdapter], path: Path) -> list[str | RuntimeAdapter]:
    """Expand ``arm64:<cpu>`` (no runtime) into every arm64 runtime that can run ``path``."""
    out: list[str | RuntimeAdapter] = []
    for t in targets:
        if isinstance(t, str) and t.startswith("arm64:") and t.count(":") == 1:
            out += [
                f"{t}:{'ort' if d == 'ort-cpu' else d}"
                for d in default_targets(path)
                if d != "litert-compiled-cpu"
            ]
        else:
            out.append(t)
    return out


def _target_matches(target: str | RuntimeAdapter, fmt: str) -> bool:
    name = base_runtime(target if isinstance(target, str) else target.name)
    return name.startswith("ort-") if fmt == "onnx" else name.startswith("litert-")


def run_parity(
    model: nn.Module,
    path: Path | Sequence[Path],
    inputs: Sequence[torch.Tensor],
    targets: Sequence[str | RuntimeAdapter] | None = ("ort-cpu",),
    tolerance: Tolerance | None = None,
    inputs_description: Mapping[str, Any] | None = None,
) -> ParityReport:
    """Compare every target's outputs on the file(s) with PyTorch's on the same ``inputs``.

    With several files (an ONNX and a TFLite export of the same checkpoint, say) one report
    holds every (file, runtime) pair; each target runs the files of its format (``ort-*``:
    ONNX, ``litert-*``: TFLite). A target that fails to load or run becomes a failed result
    carrying its error message; it never aborts the others. A file that cannot be read at all
    (truncated, wrongly packed weights) raises before anything runs.

    Args:
        model: the PyTorch model the file was exported from.
        path: the exported file, or several.
        inputs: positional model inputs (float tensors).
        targets: runtime names (see ``runtimes.ADAPTERS``) or adapter objects; ``None``: every
            target that can run each file (:func:`default_targets`).
        tolerance: override the per-mode tolerance table.
        inputs_description: how the inputs were made, for the report.
    """
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    facts = {p: _file_facts(p) for p in paths}  # first: a corrupt file is an error before any run
    results: list[TargetResult] = []
    for p in paths:
        chosen = default_targets(p) if targets is None else expand_targets(targets, p)
        if len(paths) > 1:
            chosen = [t for t in chosen if _target_matches(t, facts[p].format)]
        results += _run_file(model, p, facts[p], inputs, chosen, tolerance, len(paths) > 1)
    desc = dict(inputs_description or {})
    desc.setdefault("shapes", [list(t.shape) for t in inputs])
    return ParityReport(model=", ".join(p.name for p in paths), results=tuple(results), inputs=desc)


def _run_file(
    model: nn.Module,
    path: Path,
    facts: _FileFacts,
    inputs: Sequence[torch.Tensor],
    targets: Sequence[str | RuntimeAdapter],
    tolerance: Tolerance | None,
    label_with_file: bool,
) -> list[TargetResult]:
    # TFLite's kernels round activation codes half away from zero (std::round), ONNX half to
    # even like torch.round: the reference follows the file's format on exact .5 ties
    rounding: RoundingMode = "half_away" if facts.format == "tflite" else "half_even"
    ref = reference_outputs(model, inputs, rounding, facts.requantized)
    ref_name = "pytorch" if rounding == "half_even" else "pytorch (ties rounded away from zero)"
    if facts.requantized:
        ref_name = ref_name[:-1] + ", int8 layer outputs as in the file)"
    results = []
    for target in targets:
        adapter = make_adapter(target) if isinstance(target, str) else target
        label = f"{adapter.name} [{path.name}]" if label_with_file else adapter.name
        tol = tolerance or tolerance_for(
            facts.modes, facts.weights, base_runtime(adapter.name), facts.format, facts.kernels
        )
        try:
            adapter.load(path)
            names = [n for n, _, _ in adapter.input_specs()]  # type: ignore[attr-defined]
            feed = {n: t.detach().numpy() for n, t in zip(names, inputs, strict=True)}
            got = adapter.run(feed)
            runtime = adapter.info().as_dict()
        except Exception as exc:  # reported as this target's failure
            results.append(TargetResult(label, ref_name, {}, (), tol, error=f"{type(exc).__name__}: {exc}"))
            continue
        metrics = []
        reference = ref_name
        # pair outputs by the names the export recorded in the model's order: a runtime may
        # return them in another order (LiteRT's signature runner sorts them by name)
        order = facts.outputs if set(facts.outputs) == set(got) else list(got)
        for name, r in zip(order, ref, strict=False):
            arr = got[name]
            scale = facts.scales.get(name)
            if name in facts.ranges:
                # an int8 output saturates at its calibrated range, by design: compare with the
                # reference clipped to that range (saturation is not a kernel error)
                lo, hi = facts.ranges[name]
                r = np.clip(r, lo, hi)
                reference = f"{ref_name}, clipped to the int8 output range"
            metrics.append(compare(name, r, arr, None if scale is None else np.asarray(scale, np.float64)))
        error = None
        if len(got) != len(ref):
            error = f"{len(got)} outputs from the runtime, {len(ref)} from PyTorch"
        results.append(TargetResult(label, reference, runtime, tuple(metrics), tol, error=error))
        if adapter.name.startswith("arm64:"):
            host = base_runtime(adapter.name)
            tol_host = tolerance_vs_host(facts.modes, host, facts.format)
            results.append(_versus_host(host, f"{label} vs x86", path, facts, feed, got, runtime, tol_host))
        elif adapter.name in GPU_CPU_TWIN:
            cpu = GPU_CPU_TWIN[adapter.name]
            tol_cpu = tolerance_vs_cpu(facts.modes, facts.weights, adapter.name, facts.kernels)
            results.append(_versus_host(cpu, f"{label} vs cpu", path, facts, feed, got, runtime, tol_cpu))
    return results


#: The CPU adapter each GPU target is compared with (same file, same runtime family).
GPU_CPU_TWIN: dict[str, str] = {
    "litert-gpu": "litert-reference",
    "litert-gpu-fp16": "litert-reference",
    "ort-webgpu": "ort-cpu",
}


def _versus_host(
    host_name: str,
    label: str,
    path: Path,
    facts: _FileFacts,
    feed: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    runtime: Mapping[str, Any],
    tol: Tolerance,
) -> TargetResult:
    """The same file on a host CPU runtime (an emulated core vs x86, a GPU vs its CPU twin)."""
    host = make_adapter(host_name)
    try:
        host.load(path)
        host_out = host.run(feed)
    except Exception as exc:
        return TargetResult(label, host_name, dict(runtime), (), tol, error=f"{host_name} run failed: {exc}")
    metrics = tuple(
        compare(n, host_out[n], got[n], None if facts.scales.get(n) is None else np.asarray(facts.scales[n]))
        for n in got
        if n in host_out
    )
    return TargetResult(label, f"x86 {host_name}", dict(runtime), metrics, tol)
