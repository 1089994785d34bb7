"""passes/fold_batchnorm: Conv -> BatchNormalization folded into the conv, checked numerically."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from bitnet_export.passes.fold_batchnorm import FoldBatchNormPass, fold_batchnorm

C_IN, M = 3, 4


def _model(bias: bool = True, twice: bool = False, runtime_stats: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((M, C_IN, 3, 3)).astype(np.float32), "W")]
    conv_in = ["x", "W"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(M).astype(np.float32), "B"))
        conv_in.append("B")
    stats = {
        "scale": rng.uniform(0.5, 1.5, M),
        "beta": rng.uniform(-0.3, 0.3, M),
        "mean": rng.uniform(-0.5, 0.5, M),
        "var": rng.uniform(0.2, 2.0, M),
    }
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_IN, 6, 6])]
    for name, arr in stats.items():
        if runtime_stats and name == "var":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [M]))
        else:
            inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
    nodes = [
        helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["y"], epsilon=1e-3),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, M, 6, 6])]
    if twice:  # the conv's output is also read elsewhere: folding would change that reader
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, M, 6, 6]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(ReferenceEvaluator(proto).run(None, feeds))


def test_folds_conv_bn_and_keeps_the_numbers():
    x = np.random.default_rng(1).standard_normal((1, C_IN, 6, 6)).astype(np.float32)
    for bias in (True, False):
        proto = _model(bias=bias)
        want = _run(proto, {"x": x})[0]
        model = ir.from_proto(proto)
        assert fold_batchnorm(model) is True
        assert [n.op_type for n in model.graph] == ["Conv"]
        assert [v.name for v in model.graph.outputs] == ["y"]  # the graph output keeps its name
        assert {"W", "B", "scale"}.isdisjoint(model.graph.initializers)  # unfolded constants dropped
        got = _run(ir.to_proto(model), {"x": x})[0]
        # float64 fold, one float32 rounding of W and B: a few ulps of the output's magnitude
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        assert fold_batchnorm(model) is False  # nothing left to fold


def test_pass_result_and_unfoldable_pairs():
    model = ir.from_proto(_model())
    result = FoldBatchNormPass()(model)
    assert result.modified is True and result.model is model
    for proto in (_model(twice=True), _model(runtime_stats=True)):
        model = ir.from_proto(proto)
        assert fold_batchnorm(model) is False
        assert "BatchNormalization" in [n.op_type for n in model.graph]
