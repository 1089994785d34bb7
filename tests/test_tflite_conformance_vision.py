"""ONNX node conformance of the TFLite backend's vision and elementwise families on LiteRT.

Convolutions, pools, batch norm, Pad, Resize (ops/conv, pool, image, resize) and the
elementwise ops (ops/elementwise): every float32 case either passes on both LiteRT resolvers
(reference and optimized builtin kernels), or is refused by the pre-flight with a named reason
(xfail, strict: the refusal must come from ``check_supported`` and name the reason below).
See ``tflite_conformance.py`` for how cases are selected, frozen and compared.
"""

from __future__ import annotations

import numpy as np
import pytest
from tflite_conformance import Suite

pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) is not installed")

#: The op types whose lowerings this file covers.
OP_TYPES = (
    # conv.py, pool.py
    "Conv", "ConvTranspose", "BatchNormalization", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool",
    # image.py, resize.py
    "Pad", "Resize",
    # elementwise.py: activations
    "Relu", "LeakyRelu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Gelu", "Elu",
    "Softplus", "Softsign", "PRelu",
    # elementwise.py: unary math
    "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Sin", "Cos", "Floor", "Ceil", "Round",
    "Sign", "Pow",
    # elementwise.py: broadcasting arithmetic
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean",
)  # fmt: skip

_NO_3D = "over 3-D input has no TFLite builtin"

#: Cases the pre-flight refuses, by name, with (a key phrase of) the reason it gives.
REFUSED: dict[str, str] = {
    # TRANSPOSE_CONV is 2-D (1-D runs as 2-D over [N, 1, L, C]); 3-D pools run as slices
    "test_convtranspose_3d": _NO_3D,
    # training-mode batch norm (batch statistics, running-stat outputs)
    "test_batchnorm_example_training_mode": "training_mode=1",
    "test_batchnorm_epsilon_training_mode": "training_mode=1",
    # POW has float32 and int32 kernels only
    "test_pow_types_int64_int64": "Pow of int64 values",
}

#: The same cases with weights as constants, as they are in a hub (the ONNX cases feed every
#: operand at run time): op type -> input positions made initializers.
CONSTANT_VARIANTS: dict[str, tuple[tuple[int, ...], ...]] = {
    "Conv": ((1, 2),),
    "ConvTranspose": ((1, 2),),
    "BatchNormalization": ((1, 2, 3, 4),),
    "PRelu": ((1,),),
    "Add": ((1,),),
    "Mul": ((1,),),
}

#: Refused cases that pass once their weights are constants.
_CONSTANT_FIXES: set[str] = set()

SUITE = Suite(OP_TYPES, REFUSED, CONSTANT_VARIANTS, constant_fixes=_CONSTANT_FIXES)


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


def test_round_is_half_to_even_on_litert(tmp_path):
    """Round's lowering (no ROUND kernel in the reference resolver) rounds ties to even."""
    import onnx_ir as ir
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from bitnet_export.backends.tflite.convert import convert_hub

    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, 4194304.5, 8388609.0, -3.7], np.float32)
    inp = ir.Value(name="x", shape=ir.Shape([x.size]), type=ir.TensorType(ir.DataType.FLOAT))
    node = ir.Node("", "Round", [inp], num_outputs=1, name="Round")
    node.outputs[0].name, node.outputs[0].shape = "y", ir.Shape([x.size])
    node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([inp], node.outputs, nodes=[node], opset_imports={"": 21})
    data = convert_hub(ir.Model(graph, ir_version=10), {}, "int8", 1)
    for resolver in (OpResolverType.BUILTIN_REF, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
        runner = Interpreter(
            model_content=data, experimental_op_resolver_type=resolver
        ).get_signature_runner()
        np.testing.assert_array_equal(runner(x=x)["y"], np.round(x))
