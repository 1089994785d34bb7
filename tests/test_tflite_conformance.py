"""ONNX node conformance of the TFLite backend (shape, logic, reduce, matmul, norm families) on LiteRT.

Every float32 case of these op types either passes on both LiteRT resolvers, or is refused by the
pre-flight with a named reason (xfail, strict: a refusal must come from ``check_supported``).
See ``tflite_conformance.py`` for how cases are selected, frozen and compared.
"""

from __future__ import annotations

from typing import Any

import pytest
from tflite_conformance import Outcome, float32_cases, format_summary, op_type_of, run_case, summarize

pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) is not installed")

#: The op types whose lowerings this file covers (ops/shape, logic, reduce, matmul, norm).
OP_TYPES = (
    # shape.py
    "Reshape", "Flatten", "Transpose", "Concat", "Slice", "Split", "Gather", "GatherElements",
    "Squeeze", "Unsqueeze", "Expand", "Tile", "Identity", "Shape", "Size", "ConstantOfShape",
    "Range", "Cast", "Where", "Constant",
    # logic.py
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "IsNaN", "IsInf",
    # reduce.py
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
    "ReduceSumSquare", "ReduceL1", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin",
    # matmul.py
    "MatMul", "Gemm",
    # norm.py
    "Softmax", "LogSoftmax", "LayerNormalization", "RMSNormalization",
)  # fmt: skip

#: Cases the pre-flight refuses, by name, with (a part of) the reason it gives: the cases a TFLite
#: builtin cannot express. The test asserts the refusal comes from the pre-flight with that reason.
#: Empty today: every float32 case of these ops passes on LiteRT 2.3. (Cast has no float32 case
#: in ONNX's suite, whose casts involve float16/bfloat16/float8/int4/double: see the Cast table
#: in test_tflite_lowerings.py.)
REFUSED: dict[str, str] = {}

#: The same cases again with weights as constants, as they are in a hub (the ONNX cases feed
#: every operand at run time, which misses the FULLY_CONNECTED and constant-folding paths):
#: op type -> input positions made initializers.
CONSTANT_VARIANTS: dict[str, tuple[tuple[int, ...], ...]] = {
    "MatMul": ((1,),),  # constant 2-D B: FULLY_CONNECTED
    "Gemm": ((1,), (1, 2)),  # constant B (alpha folded), constant C (bias or ADD)
    "LayerNormalization": ((1, 2),),
    "RMSNormalization": ((1,),),
    "Gather": ((0,), (1,)),  # an embedding table; constant (negative) indices
    "GatherElements": ((1,),),
    "Where": ((1, 2),),
    "Concat": ((1,),),
    "Equal": ((1,),),
    "Less": ((1,),),
}

CASES = float32_cases(OP_TYPES)
CONSTANT_CASES = [
    (case, frozen)
    for case in float32_cases(CONSTANT_VARIANTS)
    for frozen in CONSTANT_VARIANTS[op_type_of(case)]
]
_OUTCOMES: dict[tuple[str, tuple[int, ...]], Outcome] = {}


def _outcome(case: Any, frozen: tuple[int, ...] = ()) -> Outcome:
    key = (case.name, frozen)
    if key not in _OUTCOMES:
        _OUTCOMES[key] = run_case(case, frozen)
    return _OUTCOMES[key]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case):
    outcome = _outcome(case)
    if case.name in REFUSED:
        assert outcome.status == "refused", f"{case.name} was expected to be refused: {outcome}"
        assert REFUSED[case.name] in outcome.detail, outcome.detail
        pytest.xfail(f"refused by the pre-flight: {REFUSED[case.name]}")
    assert outcome.status == "pass", outcome.detail


@pytest.mark.parametrize(
    ("case", "frozen"),
    CONSTANT_CASES,
    ids=[f"{c.name}-const{''.join(map(str, f))}" for c, f in CONSTANT_CASES],
)
def test_case_with_constant_weights(case, frozen):
    outcome = _outcome(case, frozen)
    assert outcome.status == "pass", outcome.detail


def test_pass_rate():
    outcomes = [_outcome(c) for c in CASES]
    summary = summarize(outcomes)
    print()
    print(format_summary(summary))
    for o in outcomes:
        if o.status != "pass":
            print(f"  {o.status}: {o.name}: {o.detail[:200]}")
    passed = sum(v[0] for v in summary.values())
    assert passed >= 0.9 * len(outcomes), f"{passed}/{len(outcomes)} float32 cases pass"
