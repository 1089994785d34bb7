"""ONNX node conformance of the TFLite backend (shape, logic, reduce, matmul, norm families) on LiteRT.

Every float32 case of these op types either passes on both LiteRT resolvers, or is refused by the
pre-flight with a named reason (xfail, strict: a refusal must come from ``check_supported``).
See ``tflite_conformance.py`` for how cases are selected, frozen and compared.
"""

from __future__ import annotations

import pytest
from tflite_conformance import Suite

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

SUITE = Suite(OP_TYPES, REFUSED, CONSTANT_VARIANTS)


@pytest.mark.parametrize("case", SUITE.cases, ids=[c.name for c in SUITE.cases])
def test_case(case):
    SUITE.check_case(case)


@pytest.mark.parametrize(
    ("case", "frozen"),
    SUITE.constant_cases,
    ids=[f"{c.name}-const{''.join(map(str, f))}" for c, f in SUITE.constant_cases],
)
def test_case_with_constant_weights(case, frozen):
    SUITE.check_constant_case(case, frozen)


def test_pass_rate():
    SUITE.check_pass_rate(0.9)
