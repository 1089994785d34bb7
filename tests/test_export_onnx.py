"""ONNX export end to end: checker, ORT kernels, integer references, reference evaluator, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx.reference
import pytest
import torch
from reference import numpy_graph
from torch import nn

import bitnet_export as bx
from bitnet_export.api import export_onnx, verify
from bitnet_export.errors import ExportError
from bitnet_export.parity import run_parity
from bitnet_export.zoo.digits import DigitsMLP, load_digits, train
from bitnet_export.zoo.models import BitNetModel, MixedBlock, mlp
from runtimes.ort_cpu import OrtCpuAdapter, RuntimeAdapterError

# precisions that fit each weight storage: (embed/up, down, head) for MixedBlock
PRECISIONS = {
    "int8": (1.58, 4, 8),
    "int4": (1.58, 2, 4),
    "int2": (1.58, 1, 2),
    "matmulnbits": (1.58, 2, 4),
}


def _calibrate_if_static(model: nn.Module, mode: str, shape: tuple[int, ...]) -> None:
    if mode == "static":
        bx.configure_model(model, activation_mode="static")
        gen = torch.Generator().manual_seed(1)
        bx.calibrate(model, [torch.randn(shape, generator=gen) for _ in range(4)])


def _seed_mlp(weights: str, mode: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = BitNetModel(784, 256, 10)
    _calibrate_if_static(model, mode, (32, 784))
    return model, torch.randn(4, 784)


def _mixed(weights: str, mode: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = MixedBlock(precisions=PRECISIONS[weights])
    _calibrate_if_static(model, mode, (32, 32))
    return model, torch.randn(4, 32)


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    data = load_digits(seed=0)
    return train(DigitsMLP(bitnet=True), data, seed=0), data


CASES = [
    (w, m)
    for w in ("int8", "int4", "int2", "matmulnbits")
    for m in ("dynamic", "static")
    if not (w == "matmulnbits" and m == "static")
]


@pytest.mark.parametrize(("weights", "mode"), CASES)
@pytest.mark.parametrize("make", [_seed_mlp, _mixed], ids=["seed_mlp", "mixed"])
def test_export_check_and_parity(tmp_path, make, weights, mode):
    model, example = make(weights, mode)
    res = export_onnx(model, example, tmp_path / "m.onnx", weights=weights)
    onnx.checker.check_model(str(res.path), full_check=True)
    assert res.size_bytes == res.path.stat().st_size
    report = verify(model, (torch.randn(64, example.shape[1]),), res.path)
    result = report.results[0]
    assert report.passed, report.format_table()
    assert result.runtime["provider"] == "CPUExecutionProvider"
    bound = 1e-5 if weights != "matmulnbits" else 3e-2
    assert result.outputs[0].max_rel <= bound


@pytest.mark.parametrize("weights", ["int8", "int4", "int2"])
def test_static_mode_runs_on_integer_kernels(tmp_path, weights):
    model, example = _mixed(weights, "static")
    res = export_onnx(model, example, tmp_path / "m.onnx", weights=weights)
    ort = OrtCpuAdapter()
    ort.load(res.path)
    ops = [n.op_type for n in ort.optimized_graph().graph.node]
    assert "MatMul" not in ops and "Gemm" not in ops, ops
    # up (no bias, feeds Gelu): the QDQ form, fused by ORT; embed/head (bias) and down (feeds
    # the residual Add, which ORT would fuse into a float Gemm): explicit integer maths
    assert ops.count("MatMulIntegerToFloat") == 1 and ops.count("MatMulInteger") == 3, ops


def test_dynamic_mode_uses_u8_matmulinteger(tmp_path):
    model, example = _mixed("int4", "dynamic")
    res = export_onnx(model, example, tmp_path / "m.onnx", weights="int4")
    ort = OrtCpuAdapter()
    ort.load(res.path)
    graph = ort.optimized_graph().graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulInteger") == 4 and "MatMul" not in ops
    # the Cast(INT4 -> INT8) of the packed weight was folded into an int8 initializer
    assert not any(n.op_type == "Cast" and "weight" in n.input[0] for n in graph.node)


def _chain(model: nn.Sequential) -> list:
    return [m.quant_params() for m in model if isinstance(m, bx.BitNetLayer)]


@pytest.mark.parametrize("weights", ["int8", "int4", "int2"])
def test_static_equals_integer_reference_to_0_lsb(tmp_path, weights):
    torch.manual_seed(3)
    model = mlp([48, 64, 64, 10], precision=1.58 if weights == "int2" else 4, bias=True)
    _calibrate_if_static(model, "static", (64, 48))
    x = (torch.randn(128, 48) * 1.5).numpy()  # beyond the calibrated range: saturation too
    res = export_onnx(model, torch.from_numpy(x[:4]), tmp_path / "m.onnx", weights=weights)
    ort = OrtCpuAdapter()
    ort.load(res.path)
    y_ort = next(iter(ort.run({res.input_names[0]: x}).values()))

    h = x
    params = _chain(model)
    for i, p in enumerate(params):
        y, acc, lsb = numpy_graph.static_layer(h, p)
        h = np.maximum(y, 0) if i < len(params) - 1 else y
    ref_acc = acc
    got_acc = (y_ort - params[-1].bias) / lsb
    assert np.abs(got_acc - ref_acc).max() < 0.5  # 0 LSB: the exact integer accumulator
    np.testing.assert_array_equal(np.rint(got_acc).astype(np.int64), ref_acc)
    # the report measures the same thing in LSBs of the output's accumulator scale
    report = verify(model, torch.from_numpy(x[:4]), res.path, inputs=torch.from_numpy(x))
    assert report.results[0].outputs[0].lsb < 0.5


@pytest.mark.parametrize("weights", ["int8", "int2"])
def test_dynamic_equals_integer_reference(tmp_path, weights):
    torch.manual_seed(4)
    model = mlp([40, 64, 10], precision=1.58, bias=True)
    x = (torch.randn(64, 40) * 2).numpy()
    res = export_onnx(model, torch.from_numpy(x[:2]), tmp_path / "m.onnx", weights=weights)
    ort = OrtCpuAdapter()
    ort.load(res.path)
    y_ort = next(iter(ort.run({res.input_names[0]: x}).values()))
    p1, p2 = _chain(model)
    h, _, _ = numpy_graph.dynamic_layer(x, p1)
    y, _acc, _gamma = numpy_graph.dynamic_layer(np.maximum(h, 0), p2)
    np.testing.assert_allclose(y_ort, y, rtol=1e-5, atol=1e-6 * np.abs(y).max())
    with torch.no_grad():
        y_torch = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y_torch, y, rtol=1e-5, atol=1e-6 * np.abs(y).max())
    # same float ops in the same order: PyTorch's inference form and ORT agree bit for bit
    np.testing.assert_array_equal(y_torch, y_ort)


@pytest.mark.parametrize(("weights", "mode"), [c for c in CASES if c[0] != "matmulnbits"])
def test_reference_evaluator_agrees_with_ort(tmp_path, weights, mode):
    model, example = _mixed(weights, mode)
    res = export_onnx(model, example, tmp_path / "m.onnx", weights=weights)
    x = torch.randn(16, 32).numpy()
    ort = OrtCpuAdapter()
    ort.load(res.path)
    y_ort = next(iter(ort.run({res.input_names[0]: x}).values()))
    (y_ref,) = onnx.reference.ReferenceEvaluator(str(res.path)).run(None, {res.input_names[0]: x})
    np.testing.assert_allclose(y_ref, y_ort, rtol=1e-5, atol=1e-5 * np.abs(y_ort).max())


@pytest.mark.parametrize(("weights", "mode"), CASES)  # matmulnbits + static is an error, tested below
def test_digits_top1_agreement_is_total(tmp_path, digits, weights, mode):
    trained, data = digits
    model = DigitsMLP(bitnet=True)
    model.load_state_dict(trained.state_dict())
    if mode == "static":
        bx.configure_model(model, activation_mode="static")
        bx.calibrate(model, [data.x_train])
    res = bx.export_onnx(model, data.x_test[:4], tmp_path / "d.onnx", weights=weights)
    onnx.checker.check_model(str(res.path), full_check=True)
    report = bx.verify(model, data.x_test[:4], res.path, inputs=data.x_test)
    out = report.results[0].outputs[0]
    assert out.top1_agreement == 1.0, report.format_table()
    assert report.passed


def _unpack(raw: bytes, bits: int, count: int) -> np.ndarray:
    """Independent unpacking: element i in bits (i*bits % 8) of byte i*bits // 8, sign-extended."""
    data = np.frombuffer(raw, dtype=np.uint8)
    per = 8 // bits
    vals = np.stack([(data >> (bits * i)) & ((1 << bits) - 1) for i in range(per)], axis=1).reshape(-1)
    vals = vals[:count].astype(np.int16)
    return np.where(vals >= (1 << (bits - 1)), vals - (1 << bits), vals)


@pytest.mark.parametrize(
    ("weights", "bits", "dtype"), [("int4", 4, onnx.TensorProto.INT4), ("int2", 2, onnx.TensorProto.INT2)]
)
def test_packed_weights_low_bits_first(tmp_path, weights, bits, dtype):
    model, example = _mixed(weights, "dynamic")
    res = export_onnx(model, example, tmp_path / "m.onnx", weights=weights)
    proto = onnx.load(str(res.path))
    inits = {t.name: t for t in proto.graph.initializer}
    t = inits["up.weight_q"]
    assert t.data_type == dtype and list(t.dims) == [32, 64]  # transposed [K, N]
    assert len(t.raw_data) == 32 * 64 * bits // 8  # really packed
    codes = _unpack(t.raw_data, bits, 32 * 64).reshape(32, 64)
    np.testing.assert_array_equal(codes, model.up.quant_params().weight.values.T)
    assert onnx.numpy_helper.to_array(t).dtype in (ml_dtypes.int4, ml_dtypes.int2)


def test_names_and_metadata(tmp_path):
    model, example = _mixed("int8", "static")
    res = export_onnx(model, example, tmp_path / "m.onnx", input_names=["features"], output_names=["logits"])
    proto = onnx.load(str(res.path))
    inits = {t.name for t in proto.graph.initializer}
    assert {"embed.weight_q", "embed.output_scale", "embed.bias", "up.weight_q", "up.weight_scale"} <= inits
    assert {"head.input_scale", "head.input_zero_point"} <= inits
    assert any(n.name == "up/QuantizeInput" for n in proto.graph.node)
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.producer_name == "bitnet_export" and proto.producer_version == bx.__version__
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["bitnet_export.version"] == bx.__version__
    layers = {entry["module_path"]: entry for entry in json.loads(meta["bitnet_export.layers"])}
    assert layers["head"] == model.head.quant_params().describe()
    assert json.loads(meta["bitnet_export.weights"]) == "int8"
    assert "logits" in json.loads(meta["bitnet_export.output_scales"])


def test_external_data(tmp_path):
    model, example = _seed_mlp("int8", "dynamic")
    res = export_onnx(model, example, tmp_path / "big.onnx", external_data=True)
    # named by content digest: a new export never overwrites the data an old model still names
    assert re.fullmatch(r"big\.onnx\.[0-9a-f]{16}\.data", res.external_data.name)
    assert res.external_data.parent == tmp_path
    assert res.external_data.stat().st_size > 784 * 256  # the weights live there
    assert res.path.stat().st_size < 50_000
    onnx.checker.check_model(str(res.path), full_check=True)
    assert verify(model, example, res.path).passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", res.external_data.name]


def test_float_layers_export_as_float(tmp_path):
    model, example = _mixed("int8", "dynamic")
    bx.configure_model(model, enabled=False)
    res = export_onnx(model, example, tmp_path / "f.onnx")
    assert res.layers == ()
    assert verify(model, example, res.path).passed


# ----------------------------------------------------------------------------- errors


def _assert_nothing_written(folder: Path) -> None:
    assert list(folder.iterdir()) == [], list(folder.iterdir())


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = bx.BitNetLayer(8, 8)
        self.fc2 = bx.BitNetLayer(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.special.i0(self.fc(x))
        h = torch.special.i0(h) + torch.lgamma(self.fc2(h).abs() + 1)
        return h


def test_unsupported_ops_listed_at_once(tmp_path):
    with pytest.raises(ExportError) as err:
        export_onnx(Unsupported(), torch.randn(2, 8), tmp_path / "u.onnx")
    msg = str(err.value)
    assert "aten.i0.default (decomposes to prims.bessel_i0.default): 2 use(s)" in msg
    assert "aten.lgamma.default (decomposes to prims.lgamma.default): 1 use(s)" in msg
    assert "pre-flight op analysis" in msg and "Unsupported" in msg
    _assert_nothing_written(tmp_path)


def test_nan_weights_named(tmp_path):
    model, example = _mixed("int8", "dynamic")
    with torch.no_grad():
        model.down.weight[0, 0] = float("nan")
        model.norm.bias[1] = float("inf")
    with pytest.raises(ExportError, match=r"down.weight \(BitNetLayer\): 1 NaN/Inf") as err:
        export_onnx(model, example, tmp_path / "n.onnx")
    assert "norm.bias (LayerNorm)" in str(err.value)
    _assert_nothing_written(tmp_path)


def test_uncalibrated_static_layer_named(tmp_path):
    model, example = _mixed("int8", "dynamic")
    model.up.configure_quantization(activation_mode="static")
    with pytest.raises(
        ExportError, match=r"up \(BitNetLayer\): activation_mode='static' but the layer was never calibrated"
    ):
        export_onnx(model, example, tmp_path / "c.onnx")
    _assert_nothing_written(tmp_path)


def test_wrong_input_shape_named(tmp_path):
    model, _ = _mixed("int8", "dynamic")
    with pytest.raises(ExportError, match=r"BitNetLayer 'embed'.*input_dim=32"):
        export_onnx(model, torch.randn(2, 31), tmp_path / "s.onnx")
    _assert_nothing_written(tmp_path)


def test_storage_that_cannot_hold_the_codes(tmp_path):
    model, example = _mixed("int8", "dynamic")  # head has 8-bit weights
    with pytest.raises(ExportError, match=r"layer 'head'.*int4 storage \(-8..7\) cannot hold"):
        export_onnx(model, example, tmp_path / "w.onnx", weights="int4")
    model, example = _mixed("matmulnbits", "static")
    with pytest.raises(ExportError, match=r"matmulnbits.*activation_mode='static'"):
        export_onnx(model, example, tmp_path / "w.onnx", weights="matmulnbits")
    with pytest.raises(ExportError, match="weights='int3'"):
        export_onnx(model, example, tmp_path / "w.onnx", weights="int3")
    _assert_nothing_written(tmp_path)


def test_unfinished_blend_named(tmp_path):
    model, example = _mixed("int8", "dynamic")
    model.up.configure_quantization(blend=0.5)
    with pytest.raises(ExportError, match=r"up \(BitNetLayer\): blend=0.5"):
        export_onnx(model, example, tmp_path / "b.onnx")


def test_runtime_input_checks(tmp_path):
    model, example = _mixed("int8", "dynamic")
    res = export_onnx(model, example, tmp_path / "m.onnx")
    ort = OrtCpuAdapter()
    ort.load(res.path)
    name = res.input_names[0]
    with pytest.raises(RuntimeAdapterError, match=rf"input '{name}' has shape \[3, 31\].*\[.*32\]"):
        ort.run({name: np.zeros((3, 31), np.float32)})
    with pytest.raises(RuntimeAdapterError, match="dtype float64"):
        ort.run({name: np.zeros((3, 32))})
    with pytest.raises(RuntimeAdapterError, match="do not match the model's inputs"):
        ort.run({"nope": np.zeros((3, 32), np.float32)})
    # a file that is not a model is this target's failure in the report, not a crash
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(res.path.read_bytes()[:100])
    report = run_parity(model, res.path, (example,), [BrokenPathAdapter(bad)])
    assert not report.passed and "cannot load" in report.results[0].error


class BrokenPathAdapter(OrtCpuAdapter):
    """ORT pointed at a truncated file (the path argument is ignored on purpose)."""

    def __init__(self, broken: Path) -> None:
        super().__init__()
        self.broken = broken

    def load(self, path: Path) -> None:
        super().load(self.broken)


def test_verify_rejects_mismatched_model(tmp_path):
    model, example = _mixed("int8", "dynamic")
    res = export_onnx(model, example, tmp_path / "m.onnx")
    other, _ = _mixed("int8", "dynamic")
    with torch.no_grad():
        other.head.weight.mul_(-1)
    report = verify(other, example, res.path)
    assert not report.passed
    assert "max_rel" in "\n".join(report.results[0].violations)
