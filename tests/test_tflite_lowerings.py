"""TFLite lowerings the ONNX node cases do not reach: Cast, old-opset Softmax, a symbolic batch,
and the pre-flight refusals of run-time shape operands (all listed in one error)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from tflite_conformance import RESOLVERS, run_case

from bitnet_export.backends.tflite.convert import check_supported, convert_hub
from bitnet_export.errors import ExportError

pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) is not installed")

_NP = {
    TensorProto.FLOAT: np.float32,
    TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64,
    TensorProto.BOOL: np.bool_,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT8: np.int8,
}


def _case(name: str, nodes, inputs, outputs, feeds, expected, opset: int = 21, inits=()):  # type: ignore[no-untyped-def]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return SimpleNamespace(name=name, model=model, data_sets=[(feeds, expected)], rtol=1e-3, atol=1e-7)


#: Cast: (source type, target type, input values); the expected values are numpy's ``astype``
#: (C truncation toward zero for float -> int, ``x != 0`` for -> bool), which ONNX specifies.
CASTS = [
    (TensorProto.FLOAT, TensorProto.INT32, [-2.7, -0.5, 0.0, 0.5, 1.5, 2.7, 100.9]),
    (TensorProto.FLOAT, TensorProto.INT64, [-2.7, -0.5, 0.0, 0.5, 1.5, 2.7, 1e9]),
    (TensorProto.FLOAT, TensorProto.BOOL, [-1.0, 0.0, 0.25, 3.0, -0.0, 1e-30, 7.0]),
    (TensorProto.BOOL, TensorProto.FLOAT, [True, False, True, True, False, False, True]),
    (TensorProto.INT64, TensorProto.FLOAT, [-3, 0, 7, 1 << 20, 5, -(1 << 24), 9]),
    (TensorProto.INT32, TensorProto.INT64, [-3, 0, 7, 1 << 30, 5, -(1 << 31), 9]),
    (TensorProto.INT64, TensorProto.INT32, [-3, 0, 7, 1 << 30, 5, -(1 << 31), 9]),
    (TensorProto.UINT8, TensorProto.FLOAT, [0, 1, 127, 128, 255, 3, 9]),
    (TensorProto.FLOAT, TensorProto.FLOAT, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),  # no op
]


@pytest.mark.parametrize(
    ("src", "dst", "values"),
    CASTS,
    ids=[f"{TensorProto.DataType.Name(s)}_to_{TensorProto.DataType.Name(d)}" for s, d, _ in CASTS],
)
def test_cast(src, dst, values):
    x = np.array(values, dtype=_NP[src]).reshape(7, 1)
    case = _case(
        "cast",
        [helper.make_node("Cast", ["x"], ["y"], to=dst)],
        [helper.make_tensor_value_info("x", src, [7, 1])],
        [helper.make_tensor_value_info("y", dst, [7, 1])],
        [x],
        [x.astype(_NP[dst])],
    )
    outcome = run_case(case)
    assert outcome.status == "pass", outcome.detail


@pytest.mark.parametrize("kind", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_opset11_flattens_trailing_dims(kind, axis):
    """Before opset 13, (Log)Softmax normalizes the flattened dims ``[axis, rank)``."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    sm = e / e.sum(axis=1, keepdims=True)
    want = (sm if kind == "Softmax" else np.log(sm)).reshape(x.shape).astype(np.float32)
    case = _case(
        f"{kind}_opset11_axis{axis}",
        [helper.make_node(kind, ["x"], ["y"], axis=axis)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
        [x],
        [want],
        opset=11,
    )
    outcome = run_case(case)
    assert outcome.status == "pass", outcome.detail


def _mlp_with_symbolic_batch() -> onnx.ModelProto:
    """Flatten -> Gemm (constant B, C) -> Softmax -> Reshape(0, -1), batch dim ``N``."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((12, 5)).astype(np.float32)
    c = rng.standard_normal((5,)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "c"], ["g"], alpha=0.5, beta=2.0),
        helper.make_node("Softmax", ["g"], ["s"], axis=-1),
        helper.make_node("Reshape", ["s", "shape"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(c, "c"),
        numpy_helper.from_array(np.array([0, -1, 1], dtype=np.int64), "shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 1])],
        initializer=inits,
        value_info=[
            helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 12]),
            helper.make_tensor_value_info("g", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 5]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_symbolic_batch_kept_and_resizable(resolver):
    """A graph with a symbolic batch keeps signature -1 and runs at another batch size."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    proto = _mlp_with_symbolic_batch()
    data = convert_hub(ir.from_proto(proto), {}, "int8", batch=2)
    w = numpy_helper.to_array(proto.graph.initializer[0])
    c = numpy_helper.to_array(proto.graph.initializer[1])
    interp = Interpreter(model_content=data, experimental_op_resolver_type=getattr(OpResolverType, resolver))
    assert list(interp.get_input_details()[0]["shape_signature"]) == [-1, 3, 4]
    runner = interp.get_signature_runner("serving_default")
    for batch in (2, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4)).astype(np.float32)
        g = 0.5 * (x.reshape(batch, 12) @ w) + 2.0 * c
        e = np.exp(g - g.max(axis=1, keepdims=True))
        want = (e / e.sum(axis=1, keepdims=True)).reshape(batch, 5, 1)
        got = runner(x=x)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_runtime_shape_operands_refused_at_once():
    """Run-time shape operands are refused by the pre-flight, every node in one error."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Slice", ["x", "starts", "ends"], ["s"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["m"]),
        helper.make_node("Tile", ["x", "reps"], ["t"]),
    ]
    i64 = TensorProto.INT64
    graph = helper.make_graph(
        nodes,
        "runtime_shapes",
        [helper.make_tensor_value_info("x", f, [2, 6])]
        + [helper.make_tensor_value_info(n, i64, [k]) for n, k in [("shape", 2), ("starts", 1), ("ends", 1)]]
        + [helper.make_tensor_value_info("axes", i64, [1]), helper.make_tensor_value_info("reps", i64, [2])],
        [
            helper.make_tensor_value_info("r", f, [None, None]),
            helper.make_tensor_value_info("s", f, [2, None]),
            helper.make_tensor_value_info("m", f, [None, None]),
            helper.make_tensor_value_info("t", f, [None, None]),
        ],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    with pytest.raises(ExportError) as err:
        check_supported(model.graph)
    msg = str(err.value)
    for op in ("Reshape", "Slice", "ReduceSum", "Tile"):
        assert f"ONNX {op}: " in msg and "fold" in msg, msg


# ---------------------------------------------------------------------------- integer and bool data


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


#: (op, attributes, constant operands, numpy reference, output type or None for the input's)
_DATA_OPS = {
    "Transpose": ({"perm": [2, 0, 1]}, [], lambda a: a.transpose(2, 0, 1), None),
    "Slice": (
        {},
        [_i64("st", [-1, 1]), _i64("en", [-100, 3]), _i64("ax", [1, 2]), _i64("sp", [-1, 1])],
        lambda a: a[:, ::-1, 1:3],
        None,
    ),
    "Gather": ({"axis": 1}, [_i64("idx", [2, -1, 0])], lambda a: a[:, [2, -1, 0]], None),
    "Tile": ({}, [_i64("reps", [1, 2, 1])], lambda a: np.tile(a, (1, 2, 1)), None),
    "Reshape": ({}, [_i64("shape", [6, -1])], lambda a: a.reshape(6, 4), None),
    "Unsqueeze": ({}, [_i64("axes", [0])], lambda a: a[None], None),
    "ReduceSum": ({}, [_i64("axes", [1])], lambda a: a.sum(1, keepdims=True, dtype=a.dtype), None),
    "ReduceMax": ({"keepdims": 0}, [_i64("axes", [1])], lambda a: a.max(1), None),
    "ReduceProd": ({}, [_i64("axes", [2])], lambda a: a.prod(2, keepdims=True, dtype=a.dtype), None),
    "ArgMax": ({"axis": 1}, [], lambda a: a.argmax(1)[:, None].astype(np.int64), TensorProto.INT64),
    "Cast": ({"to": TensorProto.FLOAT}, [], lambda a: a.astype(np.float32), TensorProto.FLOAT),
}
#: (op, type) pairs the pre-flight must refuse: the TFLite kernel rejects that type.
_REFUSED_DATA = {
    ("ArgMax", TensorProto.INT64): "ARG_MAX",  # LiteRT 2.3: "Unknown input type" at prepare
    ("ReduceSum", TensorProto.INT8): "reductions",  # int8 is a quantized type to SUM
    ("ReduceSum", TensorProto.UINT8): "reductions",
    ("ReduceProd", TensorProto.INT8): "reductions",
    ("ReduceProd", TensorProto.UINT8): "reductions",
}
_DATA_TYPES = [TensorProto.INT32, TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL]
_NO_BOOL = {"ReduceSum", "ReduceProd", "ArgMax", "Cast"}  # not defined on bool in ONNX
DATA_CASES = [
    (op, t) for op in _DATA_OPS for t in _DATA_TYPES if not (t == TensorProto.BOOL and op in _NO_BOOL)
]


@pytest.mark.parametrize(
    ("op", "dtype"), DATA_CASES, ids=[f"{op}_{TensorProto.DataType.Name(t)}" for op, t in DATA_CASES]
)
def test_integer_and_bool_data(op, dtype):
    """Data-movement ops, reductions and casts on int/bool tensors: exact, or refused up front."""
    attrs, inits, ref, out_type = _DATA_OPS[op]
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (2, 3, 4)) if dtype == TensorProto.BOOL else rng.integers(-5, 6, (2, 3, 4))
    x = x.astype(_NP[dtype])
    y = np.asarray(ref(x))
    case = _case(
        f"{op}_{dtype}",
        [helper.make_node(op, ["x", *(i.name for i in inits)], ["y"], **attrs)],
        [helper.make_tensor_value_info("x", dtype, list(x.shape))],
        [helper.make_tensor_value_info("y", out_type or dtype, list(y.shape))],
        [x],
        [y],
        inits=inits,
    )
    outcome = run_case(case)
    if (op, dtype) in _REFUSED_DATA:
        assert outcome.status == "refused" and _REFUSED_DATA[(op, dtype)] in outcome.detail, outcome
    else:
        assert outcome.status == "pass", outcome.detail


# ---------------------------------------------------------------------------- rank limits


def _rank_case(op: str, r: int, n_inputs: int, attrs: dict[str, object]) -> SimpleNamespace:
    """``op`` on ``n_inputs`` float tensors of rank ``r`` that broadcast; numpy reference."""
    rng = np.random.default_rng(r)
    a = rng.standard_normal([2, 1] * (r // 2) + [2] * (r % 2)).astype(np.float32)
    b = rng.standard_normal([1, 2] * (r // 2) + [1] * (r % 2)).astype(np.float32)
    xs = [a, b][:n_inputs] if op != "Where" else [a > 0, b, a]
    refs = {
        "Transpose": lambda: a.transpose(*range(r)[::-1]),
        "Less": lambda: a < b,
        "Where": lambda: np.where(a > 0, b, a),
        "Softmax": lambda: np.exp(a - a.max(0)) / np.exp(a - a.max(0)).sum(0, keepdims=True),
        "MatMul": lambda: xs[0] @ xs[1],
    }
    if op == "MatMul":  # broadcasting batch dims, [3, 4] @ [4, 2]
        xs = [
            rng.standard_normal([*a.shape[: r - 2], 3, 4]).astype(np.float32),
            rng.standard_normal([*b.shape[: r - 2], 4, 2]).astype(np.float32),
        ]
    y = np.asarray(refs[op]())
    types = {np.dtype(bool): TensorProto.BOOL, np.dtype(np.float32): TensorProto.FLOAT}
    names = [f"x{i}" for i in range(len(xs))]
    return _case(
        f"{op}_rank{r}",
        [helper.make_node(op, names, ["y"], **attrs)],
        [
            helper.make_tensor_value_info(n, types[x.dtype], list(x.shape))
            for n, x in zip(names, xs, strict=True)
        ],
        [helper.make_tensor_value_info("y", types[y.dtype], list(y.shape))],
        xs,
        [y],
    )


#: (op, inputs, attributes, highest rank that runs): 8 for the kernels of MAX_RANK, 5 for BATCH_MATMUL
RANKS = [
    ("Transpose", 1, {}, 8),
    ("Less", 2, {}, 8),
    ("Where", 3, {}, 8),
    ("Softmax", 1, {"axis": 0}, 8),  # axis swapped last by TRANSPOSE
    ("MatMul", 2, {}, 5),
]


@pytest.mark.parametrize(("op", "n", "attrs", "top"), RANKS, ids=[r[0] for r in RANKS])
def test_rank_limits(op, n, attrs, top):
    """The highest rank a kernel takes runs; one more is refused by the pre-flight (LiteRT would
    reject it at prepare time, or abort the process)."""
    outcome = run_case(_rank_case(op, top, n, attrs))
    assert outcome.status == "pass", outcome.detail
    over = run_case(_rank_case(op, top + 1, n, attrs))
    assert over.status == "refused" and "dims" in over.detail, over
