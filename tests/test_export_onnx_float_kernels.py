"""ONNX export with ``kernels="float"``: BitNet's integer maths written with float ops only.

The WebGPU EP has no integer kernels; this lowering must compute the same numbers as the
integer one. References: PyTorch's inference form (integer maths, ``torch.round`` half to even),
the ``kernels="integer"`` file on ORT CPU, and ONNX's reference evaluator.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import pytest
import torch
from torch import nn

import bitnet_export as bx
from bitnet_export.api import export_onnx, verify
from bitnet_export.errors import ExportError
from bitnet_export.quant.functional import activation_rounding
from bitnet_export.zoo.digits import DigitsMLP, load_digits, train
from bitnet_export.zoo.models import BitNetModel, MixedBlock, mlp
from runtimes.ort_cpu import OrtCpuAdapter

PRECISIONS = {"int8": (1.58, 4, 8), "int4": (1.58, 2, 4), "int2": (1.58, 1, 2)}
CASES = [(w, m) for w in ("int8", "int4", "int2") for m in ("dynamic", "static")]
#: ops a float-kernels graph of these models may contain (no integer op of the default lowering)
FLOAT_OPS = {
    "Abs", "ReduceMax", "Clip", "Div", "Mul", "Add", "Sub", "MatMul", "Cast", "Relu",
    "LayerNormalization", "Gelu", "Erf", "Sqrt", "Pow", "ReduceMean", "Tanh",
}  # fmt: skip
INTEGER_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "Max", "Round", "MatMulNBits"}


def _model(kind: str, weights: str, mode: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = BitNetModel(784, 256, 10) if kind == "seed_mlp" else MixedBlock(precisions=PRECISIONS[weights])
    dim = 784 if kind == "seed_mlp" else 32
    if mode == "static":
        bx.configure_model(model, activation_mode="static")
        gen = torch.Generator().manual_seed(1)
        bx.calibrate(model, [torch.randn(32, dim, generator=gen) for _ in range(4)])
    return model.eval(), torch.randn(4, dim)


def _run(path, x: np.ndarray) -> np.ndarray:
    ort = OrtCpuAdapter()
    ort.load(path)
    (y,) = ort.run({ort.input_specs()[0][0]: x}).values()
    return y


@pytest.mark.parametrize(("weights", "mode"), CASES)
@pytest.mark.parametrize("kind", ["seed_mlp", "mixed"])
def test_same_numbers_as_the_integer_lowering(tmp_path, kind, weights, mode):
    model, example = _model(kind, weights, mode)
    flt = export_onnx(model, example, tmp_path / "f.onnx", weights=weights, kernels="float")
    itg = export_onnx(model, example, tmp_path / "i.onnx", weights=weights)
    onnx.checker.check_model(str(flt.path), full_check=True)
    proto = onnx.load(str(flt.path))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & INTEGER_OPS and ops <= FLOAT_OPS, ops
    assert json_meta(proto)["bitnet_export.kernels"] == '"float"'
    assert all(layer["float_sum_exact"] for layer in flt.layers)
    # the weights stay packed in the file (INT4 / INT2 initializers, same bytes as integer)
    dtype = {"int8": onnx.TensorProto.INT8, "int4": onnx.TensorProto.INT4, "int2": onnx.TensorProto.INT2}
    weights_q = [t for t in proto.graph.initializer if t.name.endswith(".weight_q")]
    assert weights_q and all(t.data_type == dtype[weights] for t in weights_q)
    assert [la["weight_bytes"] for la in flt.layers] == [la["weight_bytes"] for la in itg.layers]

    x = (torch.randn(64, example.shape[1], generator=torch.Generator().manual_seed(2)) * 1.5).numpy()
    y_float, y_int = _run(flt.path, x), _run(itg.path, x)
    np.testing.assert_array_equal(y_float, y_int)  # two lowerings, one result, bit for bit
    if kind == "seed_mlp":  # BitNet layers and ReLU only: PyTorch's integer form, bit for bit
        with torch.no_grad():
            np.testing.assert_array_equal(y_float, model(torch.from_numpy(x)).numpy())
    report = verify(model, example, flt.path, inputs=torch.from_numpy(x))
    assert report.passed and report.results[0].outputs[0].max_rel <= 1e-5, report.format_table()
    (y_ref,) = onnx.reference.ReferenceEvaluator(str(flt.path)).run(None, {flt.input_names[0]: x})
    np.testing.assert_allclose(y_ref, y_float, rtol=1e-5, atol=1e-5 * np.abs(y_float).max())


def json_meta(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def test_ties_round_half_to_even(tmp_path):
    """Rows whose absmax is qmax make gamma 1: x * gamma hits exact .5 ties, which the float
    rounding must send to the even code like torch.round (and QuantizeLinear)."""
    torch.manual_seed(0)
    model = mlp([8, 4], precision=1.58).eval()
    ties = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5])
    x = torch.stack([ties, -ties, ties.roll(3), torch.tensor([127.0, 3.5, -3.5, 4.5, 0, 0, 0, 0])])
    flt = export_onnx(model, x, tmp_path / "f.onnx", kernels="float")
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_array_equal(_run(flt.path, x.numpy()), expected)
    # and the ties matter: rounding half away from zero gives other outputs
    with torch.no_grad(), activation_rounding("half_away"):
        assert not np.array_equal(model(x).numpy(), expected)


def test_digits_top1_and_exact(tmp_path):
    torch.manual_seed(0)
    data = load_digits(seed=0)
    model = train(DigitsMLP(bitnet=True), data, seed=0).eval()
    res = export_onnx(model, data.x_test[:4], tmp_path / "d.onnx", weights="int2", kernels="float")
    report = verify(model, data.x_test[:4], res.path, inputs=data.x_test)
    out = report.results[0].outputs[0]
    assert out.top1_agreement == 1.0 and out.max_abs == 0.0, report.format_table()


def test_float_sum_exactness_is_reported(tmp_path):
    """K * qmax_x * max|q_w| >= 2^24: the float32 MatMul may round partial sums; the export says so."""
    torch.manual_seed(0)
    model = nn.Sequential(bx.BitNetLayer(2048, 8, precision=8), nn.ReLU(), bx.BitNetLayer(8, 4)).eval()
    res = export_onnx(model, torch.randn(2, 2048), tmp_path / "m.onnx", kernels="float")
    assert [layer["float_sum_exact"] for layer in res.layers] == [False, True]
    # 2048 * 127 * 127 = 3.3e7 is a worst-case bound: the result still matches to float32 rounding
    report = verify(model, torch.randn(2, 2048), res.path)
    assert report.passed, report.format_table()


def test_matmulnbits_is_the_same_either_way(tmp_path):
    model, example = _model("mixed", "int4", "dynamic")
    a = export_onnx(model, example, tmp_path / "a.onnx", weights="matmulnbits", kernels="float")
    b = export_onnx(model, example, tmp_path / "b.onnx", weights="matmulnbits")
    ops = [n.op_type for n in onnx.load(str(a.path)).graph.node]
    assert ops == [n.op_type for n in onnx.load(str(b.path)).graph.node] and "MatMulNBits" in ops
    assert "float_sum_exact" not in a.layers[0]


def test_unknown_kernels_is_an_error(tmp_path):
    model, example = _model("mixed", "int8", "dynamic")
    with pytest.raises(ExportError, match=r"kernels='fp16'; choose one of integer, float"):
        export_onnx(model, example, tmp_path / "m.onnx", kernels="fp16")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "options",
    [
        {"activation_mode": "dynamic", "activation_bits": 4},
        {"activation_mode": "static", "activation_bits": 4},
        {"activation_mode": "static", "symmetric": True},
        {"activation_mode": "dynamic", "granularity": "per_channel"},
        {"activation_mode": "static", "granularity": "per_tensor"},
    ],
    ids=["dyn-a4", "static-a4", "static-sym", "dyn-per-channel", "static-per-tensor"],
)
def test_configuration_corners_match_the_integer_lowering(tmp_path, options):
    """Sub-8-bit activations, symmetric ranges, per-channel/per-tensor scales, biases: same bits."""
    torch.manual_seed(5)
    model = mlp([24, 48, 12], precision=4, bias=True)
    bx.configure_model(model, **options)
    if options["activation_mode"] == "static":
        bx.calibrate(model, [torch.randn(64, 24)])
    model.eval()
    x = torch.randn(32, 24) * 2  # beyond the calibrated range: saturating codes too
    flt = export_onnx(model, x[:2], tmp_path / "f.onnx", weights="int4", kernels="float")
    itg = export_onnx(model, x[:2], tmp_path / "i.onnx", weights="int4")
    y_float = _run(flt.path, x.numpy())
    np.testing.assert_array_equal(y_float, _run(itg.path, x.numpy()))
    with torch.no_grad():
        np.testing.assert_array_equal(y_float, model(x).numpy())
