"""ONNX node conformance cases run through the TFLite backend on LiteRT (a test helper module).

ONNX ships its own single-node test cases (``onnx.backend.test.case.node.collect_testcases()``:
model + input/output data). This module runs them through
:func:`bitnet_export.backends.tflite.convert.convert_hub` and LiteRT:

- :func:`float32_cases` selects the cases of some op types whose data TFLite can hold with
  float32 as the only float type (int64 indices/axes, int32, bool... are fine; float16, double,
  bfloat16, strings, unsigned > 8 bits are not).
- :func:`run_case` converts one case and runs it on LiteRT with the reference kernels
  (``BUILTIN_REF``) *and* the optimized builtin kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``);
  the :class:`Outcome` is ``pass``, ``refused`` (the pre-flight :func:`check_supported` raised an
  :class:`ExportError` with a reason: allowed, not a pass) or ``fail`` (anything else: an error
  while lowering, a LiteRT load/invoke error, wrong numbers).
- :func:`summarize` gives per-op pass counts.

Shape-like inputs are frozen: the ONNX cases feed ``axes``, ``shape``, ``starts``... as graph
inputs, while in the hub (static shapes, shape arithmetic folded by the exporter) they are
constants. :data:`CONSTANT_INPUTS` names those input positions per op; they become initializers
holding the case's data before conversion. Data inputs (``indices`` of Gather, ``condition``
of Where) stay runtime inputs.

Tolerance: ONNX's own backend-test defaults, ``rtol=1e-3, atol=1e-7`` (or the case's own, if
looser). A looser ``atol=1e-5`` was considered for decomposed lowerings (LayerNorm as
MEAN/RSQRT/MUL, ReduceL2 as SQRT(SUM(x*x))), whose near-zero outputs could miss ``1e-7`` by a few
ulps; measured on LiteRT 2.3, every float32 case that is not refused (347 of the shape, logic,
reduce, matmul and norm families, 206 of the vision ones) passes at ``atol=1e-7`` on both
resolvers, so the stricter bound is kept. Integer and bool outputs must match exactly.

Usage::

    from tflite_conformance import float32_cases, run_case, summarize
    outcomes = [run_case(c) for c in float32_cases({"Softmax", "Gather"})]
    print(summarize(outcomes))
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from bitnet_export.backends.tflite.convert import check_supported, convert_hub
from bitnet_export.errors import ExportError

__all__ = [
    "ATOL",
    "CONSTANT_INPUTS",
    "RESOLVERS",
    "RTOL",
    "Outcome",
    "float32_cases",
    "op_type_of",
    "run_case",
    "summarize",
]

RTOL: Final = 1e-3
ATOL: Final = 1e-7
#: LiteRT op resolvers every case runs on (reference kernels, optimized builtin kernels).
RESOLVERS: Final = ("BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")

#: op type -> input positions that are constants in the hub (frozen from the case's data).
CONSTANT_INPUTS: Final[dict[str, tuple[int, ...]]] = {
    "Reshape": (1,),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "ReduceMean": (1,),
    "ReduceSum": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceSumSquare": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "Pad": (1, 2, 3),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "TopK": (1,),
    "OneHot": (1,),
    "Clip": (1, 2),
    "CumSum": (1,),
}

#: numpy dtypes a "float32 case" may use (float32 is the only float; TFLite holds all of them).
_CASE_DTYPES: Final = {np.dtype(t) for t in ("float32", "bool", "int8", "uint8", "int16", "int32", "int64")}

Status = Literal["pass", "refused", "fail"]


@dataclass(frozen=True)
class Outcome:
    """The result of one case: ``status`` and a one-line ``detail`` (reason, error, mismatch)."""

    name: str
    op_type: str
    status: Status
    detail: str = ""


def op_type_of(case: Any) -> str:
    """The op type of a single-node case (``""`` for a multi-node model)."""
    nodes = case.model.graph.node
    return str(nodes[0].op_type) if len(nodes) == 1 else ""


@functools.cache
def _all_cases() -> tuple[Any, ...]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # numpy overflow warnings of the case generators
        return tuple(collect_testcases())


def _as_array(x: Any) -> np.ndarray | None:
    """A case datum as an ndarray (``TensorProto``s and numpy scalars too); ``None``: not a tensor."""
    if isinstance(x, onnx.TensorProto):
        try:
            return np.asarray(numpy_helper.to_array(x))
        except Exception:  # a type numpy cannot hold
            return None
    if isinstance(x, np.ndarray | np.generic):
        return np.asarray(x)
    return None


def _data_sets(case: Any) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """The case's (inputs, outputs) as ndarrays; empty when one of them is not a tensor."""
    out = []
    for inputs, outputs in case.data_sets:
        ins = [_as_array(x) for x in inputs]
        outs = [_as_array(x) for x in outputs]
        if any(a is None for a in [*ins, *outs]):
            return []
        out.append(([a for a in ins if a is not None], [a for a in outs if a is not None]))
    return out


def _is_float32_case(case: Any) -> bool:
    sets = _data_sets(case)
    return bool(sets) and all(a.dtype in _CASE_DTYPES for ins, outs in sets for a in [*ins, *outs])


def float32_cases(op_types: Iterable[str]) -> list[Any]:
    """The single-node ONNX cases of ``op_types`` whose data are float32 / int / bool, by name.

    Args:
        op_types: ONNX op types (the single node's ``op_type``; ``_expanded`` models, which have
            several nodes, are not included).

    Returns:
        The cases (``onnx.backend.test.case`` TestCase objects), sorted by name.
    """
    wanted = set(op_types)
    found = [c for c in _all_cases() if op_type_of(c) in wanted and _is_float32_case(c)]
    return sorted(found, key=lambda c: c.name)


def _freeze(
    case: Any, inputs: list[np.ndarray], also: Iterable[int] = ()
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The case's model with its shape-like inputs (and inputs ``also``) as initializers, and
    the remaining feeds."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    frozen = (*CONSTANT_INPUTS.get(op_type_of(case), ()), *also)
    node = graph.node[0]
    const_names = {node.input[i] for i in frozen if i < len(node.input) and node.input[i]}
    feeds: dict[str, np.ndarray] = {}
    keep = []
    for vi, arr in zip(list(graph.input), inputs, strict=False):
        if vi.name in const_names:
            graph.initializer.append(numpy_helper.from_array(arr, vi.name))
        else:
            keep.append(vi)
            feeds[vi.name] = arr
    del graph.input[:]
    graph.input.extend(keep)
    return model, feeds


#: The LiteRT worker: a separate process, since a LiteRT kernel may abort() on a model it does
#: not accept (a CHECK failure kills the process; it must fail one case, not the test session).
_WORKER_SRC: Final = r"""
import os, pickle, struct, sys
proto_out = os.fdopen(os.dup(1), "wb")  # the protocol channel; C++ logging to fd 1 -> stderr
os.dup2(2, 1)
from ai_edge_litert.interpreter import Interpreter, OpResolverType
inp = sys.stdin.buffer
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    data, feeds, resolver = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
    try:
        interp = Interpreter(
            model_content=data, experimental_op_resolver_type=getattr(OpResolverType, resolver)
        )
        runner = interp.get_signature_runner("serving_default")
        res = ("ok", {k: v.copy() for k, v in runner(**feeds).items()})
    except Exception as exc:
        res = ("error", f"{type(exc).__name__}: {exc}")
    blob = pickle.dumps(res)
    proto_out.write(struct.pack("<Q", len(blob)) + blob)
    proto_out.flush()
"""
#: Seconds one LiteRT run may take before the worker is killed (a hang fails the case).
_WORKER_TIMEOUT_S: Final = 60.0


class _LiteRTWorker:
    """A LiteRT process fed (model, feeds, resolver) by pickle; restarted after a crash."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker)
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_SRC],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        return self._proc

    def _read(self, proc: subprocess.Popen[bytes], n: int) -> bytes:
        assert proc.stdout is not None
        buf = b""
        deadline = time.monotonic() + _WORKER_TIMEOUT_S
        fd = proc.stdout.fileno()
        while len(buf) < n:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                proc.kill()
                raise RuntimeError(f"LiteRT did not answer within {_WORKER_TIMEOUT_S:.0f} s (killed)")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                proc.wait()
                self._stderr.seek(0)
                tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"LiteRT crashed (exit {proc.returncode}): {' | '.join(tail)}")
            buf += chunk
        return buf

    def run(self, data: bytes, feeds: dict[str, np.ndarray], resolver: str) -> dict[str, np.ndarray]:
        proc = self._start()
        assert proc.stdin is not None
        blob = pickle.dumps((data, feeds, resolver))
        try:
            proc.stdin.write(struct.pack("<Q", len(blob)) + blob)
            proc.stdin.flush()
        except BrokenPipeError:
            self._proc = None
            raise RuntimeError("LiteRT worker died before the case") from None
        (size,) = struct.unpack("<Q", self._read(proc, 8))
        status, payload = pickle.loads(self._read(proc, size))
        if status != "ok":
            raise RuntimeError(payload)
        return dict(payload)


_WORKER = _LiteRTWorker()


def _run_litert(data: bytes, feeds: dict[str, np.ndarray], resolver: str) -> dict[str, np.ndarray]:
    return _WORKER.run(data, feeds, resolver)


def _compare(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"{name}: shape {list(got.shape)}, expected {list(want.shape)}"
    if want.dtype.kind in "biu":
        if got.dtype.kind not in "biu" or not np.array_equal(got.astype(want.dtype), want):
            return f"{name}: {got.dtype} values differ from the expected {want.dtype} values"
        return None
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        return f"{name}: max abs error {np.nanmax(err) if err.size else 0:.3g} (rtol={rtol}, atol={atol})"
    return None


def run_case(case: Any, constant_inputs: Iterable[int] = ()) -> Outcome:
    """Convert one ONNX node case to TFLite and compare LiteRT's outputs with the expected ones.

    Args:
        case: an ONNX node test case (``.name``, ``.model``, ``.data_sets``, ``.rtol``, ``.atol``).
        constant_inputs: more node input positions to make initializers (weights, as in a hub:
            a MatMul's B, a LayerNorm's scale), besides :data:`CONSTANT_INPUTS`.

    Returns:
        ``pass`` when every data set matches on every resolver in :data:`RESOLVERS`;
        ``refused`` when :func:`check_supported` raises :class:`ExportError` (the detail is its
        message); ``fail`` for anything else, with the first error or mismatch as the detail.
    """
    op = op_type_of(case)
    rtol, atol = max(RTOL, float(case.rtol)), max(ATOL, float(case.atol))
    also = tuple(constant_inputs)
    for inputs, expected in _data_sets(case):
        proto, feeds = _freeze(case, inputs, also)
        try:
            model = ir.from_proto(proto)
        except Exception as exc:  # not our bug, but not a pass either
            return Outcome(case.name, op, "fail", f"onnx_ir cannot read the case: {exc}")
        try:
            check_supported(model.graph)
        except ExportError as exc:
            return Outcome(case.name, op, "refused", str(exc).replace("\n", " "))
        try:
            data = convert_hub(model, {}, "int8", batch=1)
        except Exception as exc:
            return Outcome(case.name, op, "fail", f"lowering raised {type(exc).__name__}: {exc}")
        out_names = [o.name for o in proto.graph.output]
        for resolver in RESOLVERS:
            try:
                got = _run_litert(data, feeds, resolver)
            except Exception as exc:  # a LiteRT error, crash or hang
                return Outcome(case.name, op, "fail", f"LiteRT {resolver}: {exc}")
            for oname, want in zip(out_names, expected, strict=False):
                if oname not in got:
                    return Outcome(case.name, op, "fail", f"LiteRT {resolver}: no output {oname!r}")
                bad = _compare(oname, got[oname], want, rtol, atol)
                if bad:
                    return Outcome(case.name, op, "fail", f"LiteRT {resolver}: {bad}")
    return Outcome(case.name, op, "pass")


def summarize(outcomes: Iterable[Outcome]) -> dict[str, tuple[int, int, int]]:
    """Per-op figures of ``outcomes``.

    Returns:
        op type -> ``(passed, refused, total)``, sorted by op type.
    """
    table: dict[str, list[int]] = {}
    for o in outcomes:
        row = table.setdefault(o.op_type, [0, 0, 0])
        row[0] += o.status == "pass"
        row[1] += o.status == "refused"
        row[2] += 1
    return {op: (r[0], r[1], r[2]) for op, r in sorted(table.items())}


def format_summary(summary: dict[str, tuple[int, int, int]]) -> str:
    """A table of :func:`summarize`'s figures, with the total pass rate."""
    lines = [f"{'op':<22}{'passed':>8}{'refused':>9}{'total':>7}"]
    for op, (p, r, t) in summary.items():
        lines.append(f"{op:<22}{p:>8}{r:>9}{t:>7}")
    passed = sum(v[0] for v in summary.values())
    total = sum(v[2] for v in summary.values())
    lines.append(f"{'all':<22}{passed:>8}{'':>9}{total:>7}  ({100 * passed / max(total, 1):.1f} % pass)")
    return "\n".join(lines)


class Suite:
    """One op-family suite: its float32 cases, the refusals it expects, constant-weight variants.

    Outcomes are memoized (each case runs once on LiteRT per session); the ``check_*`` methods
    are the bodies of the suite's parametrized tests.

    Args:
        op_types: the ONNX op types the suite covers.
        refused: case name -> a phrase of the reason the pre-flight must give for refusing it.
        constant_variants: op type -> input positions to make initializers (one run each).
        constant_fixes: refused cases that pass once their weights are constants.
    """

    def __init__(
        self,
        op_types: Iterable[str],
        refused: dict[str, str],
        constant_variants: dict[str, tuple[tuple[int, ...], ...]],
        constant_fixes: Iterable[str] = (),
    ) -> None:
        fixes = set(constant_fixes)
        self.refused = refused
        self.cases = float32_cases(op_types)
        self.constant_cases = [
            (case, frozen)
            for case in float32_cases(constant_variants)
            for frozen in constant_variants[op_type_of(case)]
            if case.name not in refused or case.name in fixes
        ]
        self._outcomes: dict[tuple[str, tuple[int, ...]], Outcome] = {}

    def outcome(self, case: Any, frozen: tuple[int, ...] = ()) -> Outcome:
        """The (memoized) outcome of ``case`` with the inputs ``frozen`` made constants."""
        key = (case.name, frozen)
        if key not in self._outcomes:
            self._outcomes[key] = run_case(case, frozen)
        return self._outcomes[key]

    def check_case(self, case: Any) -> None:
        """Pass, or (for an expected refusal) be refused by the pre-flight with its reason: xfail."""
        import pytest

        outcome = self.outcome(case)
        if case.name in self.refused:
            assert outcome.status == "refused", f"{case.name} was expected to be refused: {outcome}"
            assert self.refused[case.name] in outcome.detail, outcome.detail
            pytest.xfail(f"refused by the pre-flight: {self.refused[case.name]}")
        assert outcome.status == "pass", outcome.detail

    def check_constant_case(self, case: Any, frozen: tuple[int, ...]) -> None:
        """The constant-weight variant passes."""
        outcome = self.outcome(case, frozen)
        assert outcome.status == "pass", outcome.detail

    def check_pass_rate(self, minimum: float = 0.9) -> None:
        """At least ``minimum`` of the cases pass; prints the per-op figures (``pytest -s``)."""
        outcomes = [self.outcome(c) for c in self.cases]
        summary = summarize(outcomes)
        print()
        print(format_summary(summary))
        for o in outcomes:
            if o.status != "pass":
                print(f"  {o.status}: {o.name}: {o.detail[:200]}")
        passed = sum(v[0] for v in summary.values())
        assert passed >= minimum * len(outcomes), f"{passed}/{len(outcomes)} float32 cases pass"
