"""Tolerances, per-target results and the parity report (JSON + terminal table).

A :class:`ParityReport` holds one :class:`TargetResult` per runtime target; each result holds
the :class:`~bitnet_export.parity.metrics.OutputMetrics` of every output and the explicit
:class:`Tolerance` it was judged by. Pass/fail is derived from those, never stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet_export._io import atomic_write_text
from bitnet_export.parity.metrics import OutputMetrics, json_float

__all__ = ["ParityReport", "TargetResult", "Tolerance"]


def _fmt_bound(value: float, bound: float, spec: Callable[[int], str], start: int) -> tuple[str, str]:
    """Format ``value`` and ``bound`` with the least precision that tells them apart (up to 17)."""
    for digits in range(start, 18):
        a, b = format(value, spec(digits)), format(bound, spec(digits))
        if a != b:
            return a, b
    return format(value, spec(17)), format(bound, spec(17))


def _upper(label: str, value: float, bound: float | None) -> str | None:
    """Violation text when ``value`` is not ``<= bound`` (NaN never satisfies a bound)."""
    if bound is None or value <= bound:
        return None
    if math.isnan(value):
        return f"{label} is nan (bound <= {bound:.1e})"
    a, b = _fmt_bound(value, bound, lambda d: f".{d}e", 1)
    return f"{label} {a} > {b}"


def _lower(label: str, value: float, bound: float | None) -> str | None:
    """Violation text when ``value`` is not ``>= bound`` (NaN never satisfies a bound)."""
    if bound is None or value >= bound:
        return None
    if math.isnan(value):
        return f"{label} is nan (bound >= {bound:.4f})"
    a, b = _fmt_bound(value, bound, lambda d: f".{d}f", 4)
    return f"{label} {a} < {b}"


@dataclass(frozen=True)
class Tolerance:
    """Explicit bounds one output must meet; a bound left None is not checked.

    Attributes:
        max_rel: upper bound on ``OutputMetrics.max_rel``.
        max_lsb: upper bound on ``OutputMetrics.lsb`` (checked only when the output has a scale).
        min_cosine: lower bound on ``OutputMetrics.cosine``.
        min_top1: lower bound on ``OutputMetrics.top1_agreement`` (checked only when defined).
        note: why these bounds, e.g. ``"MatMulNBits quantizes activations block-wise"``.
    """

    max_rel: float | None = None
    max_lsb: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None
    note: str = ""

    def check(self, m: OutputMetrics) -> list[str]:
        """List every bound that ``m`` violates.

        A degenerate comparison is always (and then only) a violation: its numbers mean nothing.

        Args:
            m: the metrics of one output.

        Returns:
            Human-readable violations, e.g. ``"max_rel 3.1e-04 > 1.0e-05"``; empty when ``m``
            passes.
        """
        if m.degenerate is not None:
            return [f"degenerate: {m.degenerate}"]
        found = [
            _upper("max_rel", m.max_rel, self.max_rel),
            _upper("lsb", m.lsb, self.max_lsb) if m.lsb is not None else None,
            _lower("cosine", m.cosine, self.min_cosine),
            _lower("top1", m.top1_agreement, self.min_top1) if m.top1_agreement is not None else None,
        ]
        return [v for v in found if v is not None]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form.

        Returns:
            The bounds (None where unchecked) and the note.
        """
        return {
            "max_rel": self.max_rel,
            "max_lsb": self.max_lsb,
            "min_cosine": self.min_cosine,
            "min_top1": self.min_top1,
            "note": self.note,
        }


@dataclass(frozen=True)
class TargetResult:
    """The comparison of one runtime target against a reference.

    Attributes:
        target: target name, e.g. ``"ort-cpu"``, ``"pytorch"``.
        reference: what it was compared with, e.g. ``"pytorch"`` or ``"integer-reference"``.
        runtime: ``RuntimeInfo.as_dict()`` of what actually ran.
        outputs: metrics of every compared output.
        tolerance: the bounds every output is judged by.
        error: why the target failed to run, or None; a failed target never passes.
    """

    target: str
    reference: str
    runtime: Mapping[str, Any]
    outputs: tuple[OutputMetrics, ...]
    tolerance: Tolerance
    error: str | None = None

    @property
    def violations(self) -> list[str]:
        """Every reason this target fails.

        Returns:
            ``"output 'logits': <violation>"`` per violated bound, ``"error: <error>"`` when the
            target failed to run, ``"no outputs were compared"`` when there is nothing to judge.
        """
        found = [f"output {m.name!r}: {v}" for m in self.outputs for v in self.tolerance.check(m)]
        if self.error is not None:
            found.append(f"error: {self.error}")
        elif not self.outputs:
            found.append("no outputs were compared")
        return found

    @property
    def passed(self) -> bool:
        """True when the target ran, compared at least one output, and nothing was violated."""
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived ``passed`` and ``violations``.

        Returns:
            A dict of plain Python values.
        """
        return {
            "target": self.target,
            "reference": self.reference,
            "passed": self.passed,
            "error": self.error,
            "runtime": _jsonable(self.runtime),
            "tolerance": self.tolerance.as_dict(),
            "outputs": [m.as_dict() for m in self.outputs],
            "violations": self.violations,
        }


@dataclass(frozen=True)
class ParityReport:
    """Parity of one model across every target.

    Attributes:
        model: what was checked, e.g. the file name.
        results: one result per target.
        inputs: the inputs used, e.g. ``{"source": "seeded", "seed": 0, "shapes": {...}}``.
    """

    model: str
    results: tuple[TargetResult, ...]
    inputs: Mapping[str, Any]

    @property
    def passed(self) -> bool:
        """True when there is at least one result and every result passed."""
        return bool(self.results) and all(r.passed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (strict JSON: non-finite floats are strings).

        Returns:
            ``{"model", "passed", "inputs", "results"}``.
        """
        return {
            "model": self.model,
            "passed": self.passed,
            "inputs": _jsonable(self.inputs),
            "results": [r.as_dict() for r in self.results],
        }

    def to_json(self, path: Path | None = None) -> str:
        """Serialize the report; optionally write it atomically.

        Args:
            path: file to write; the text goes to a temporary file in the same folder first, which
                then replaces ``path``, so a reader never sees a half-written report.

        Returns:
            The JSON text (``indent=2``).
        """
        text = json.dumps(self.as_dict(), indent=2, allow_nan=False)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def format_table(self) -> str:
        """Readable fixed-width table for the terminal.

        One row per (target, output), then the violations, then what ran per target, then the
        verdict.

        Returns:
            The table as one string (no trailing newline).
        """
        header = (
            "target",
            "reference",
            "output",
            "max_abs",
            "max_rel",
            "LSB",
            "cosine",
            "SNR dB",
            "top-1",
            "result",
        )
        rows: list[tuple[str, ...]] = []
        for r in self.results:
            failed_to_run = r.error is not None
            for m in r.outputs:
                ok = not failed_to_run and not r.tolerance.check(m)
                rows.append(
                    (
                        r.target,
                        r.reference,
                        m.name,
                        _num(m.max_abs, ".3e"),
                        _num(m.max_rel, ".3e"),
                        "-" if m.lsb is None else _num(m.lsb, ".2f"),
                        _num(m.cosine, ".6f"),
                        _num(m.snr_db, ".1f"),
                        "-" if m.top1_agreement is None else _num(m.top1_agreement, ".3f"),
                        "PASS" if ok else "FAIL",
                    )
                )
            if not r.outputs:
                rows.append((r.target, r.reference, "-", "-", "-", "-", "-", "-", "-", "FAIL"))

        lines = [f"parity: {self.model}"]
        lines += _table(header, rows)
        failing = [(r.target, v) for r in self.results for v in r.violations]
        if failing:
            lines.append("violations:")
            lines += [f"  {target}: {v}" for target, v in failing]
        notes = [(r.target, r.tolerance.note) for r in self.results if r.tolerance.note]
        if notes:
            lines.append("tolerance notes:")
            lines += [f"  {target}: {note}" for target, note in notes]
        if self.results:
            lines.append("ran:")
            lines += [f"  {r.target}: {_describe_runtime(r.runtime)}" for r in self.results]
        verdict = "PASS" if self.passed else "FAIL"
        passed = sum(r.passed for r in self.results)
        lines.append(f"{verdict}: {passed}/{len(self.results)} targets passed")
        return "\n".join(lines)


def _num(value: float, spec: str) -> str:
    return str(json_float(value)) if not math.isfinite(value) else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-align text columns (the first three), right-align the numbers."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _describe_runtime(runtime: Mapping[str, Any]) -> str:
    """``onnxruntime 1.20.1, provider CPUExecutionProvider, arch aarch64, cpu ..., emulated``."""
    head = " ".join(str(runtime[k]) for k in ("runtime", "version") if runtime.get(k) not in (None, ""))
    parts = [head] if head else []
    for key, label in (("provider", "provider"), ("arch", "arch"), ("cpu_model", "cpu")):
        if runtime.get(key) not in (None, ""):
            parts.append(f"{label} {runtime[key]}")
    if "emulated" in runtime:
        parts.append("emulated" if runtime["emulated"] else "native")
    details = runtime.get("details") or {}
    device = details.get("device")
    if device:  # the GPU adapter that served the run (e.g. "SwiftShader Device", "NVIDIA H100")
        parts.append(f"device {device}")
    if details.get("precision"):
        parts.append(f"precision {details['precision']}")
    return ", ".join(parts) or "(runtime not recorded)"


def _jsonable(value: Any) -> Any:
    """Plain-JSON copy of a free-form value (numpy scalars/arrays, tuples, paths, non-finite floats)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return json_float(value)
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)  # Path, enum, anything else: its readable spelling
