"""TFLite export end to end: file contents read back, LiteRT parity, integer references, errors."""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import numpy_tflite
from torch import nn

import bitnet_export as bx
from bitnet_export.backends.tflite.flatbuffer import TflModelBuilder, read_model
from bitnet_export.errors import ExportError
from bitnet_export.parity import reference_outputs
from bitnet_export.zoo.digits import DigitsMLP, load_digits, train
from bitnet_export.zoo.models import BitNetModel, MixedBlock, mlp
from runtimes import make_adapter

PRECISIONS = {"int8": (1.58, 4, 8), "int4": (1.58, 2, 4), "int2": (1.58, 1, 2)}
LITERT = ["litert-builtin", "litert-reference"]


def _static(model: nn.Module, shape: tuple[int, ...]) -> None:
    bx.configure_model(model, activation_mode="static")
    gen = torch.Generator().manual_seed(1)
    bx.calibrate(model, [torch.randn(shape, generator=gen) for _ in range(4)])


def _seed_mlp(weights: str, mode: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = BitNetModel(784, 256, 10)
    if mode == "static":
        _static(model, (32, 784))
    return model, torch.randn(4, 784)


def _mixed(weights: str, mode: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = MixedBlock(precisions=PRECISIONS[weights])
    if mode == "static":
        _static(model, (32, 32))
    return model, torch.randn(4, 32)


def _tensors(path):
    parsed = read_model(path.read_bytes())
    return parsed, {t.name: t for t in parsed.tensors}


@pytest.mark.parametrize("weights", ["int8", "int4", "int2"])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("make", [_seed_mlp, _mixed], ids=["seed_mlp", "mixed"])
def test_export_types_and_parity(tmp_path, make, mode, weights):
    model, example = make(weights, mode)
    res = bx.export_tflite(model, example, tmp_path / "m.tflite", weights=weights)
    assert res.format == "tflite" and res.size_bytes == res.path.stat().st_size
    parsed, _ = _tensors(res.path)
    fcs = [op for op in parsed.operators if op[0] == "FULLY_CONNECTED"]
    assert len(fcs) == len(res.layers)
    for _, ins, outs, opts in fcs:
        x, w, b = (parsed.tensors[i] if i >= 0 else None for i in ins)
        y = parsed.tensors[outs[0]]
        assert w.dtype == weights  # int8 / INT4 / INT2 weights read back from the file
        assert (
            w.data is not None
            and len(w.data) == w.shape[0] * w.shape[1] * {"int8": 8, "int4": 4, "int2": 2}[weights] // 8
        )
        assert set(w.zero_point) == {0}
        if mode == "static":  # full integer: int8 in/out, int32 bias at s_in * s_w
            assert (x.dtype, y.dtype) == ("int8", "int8")
            if b is not None:
                assert b.dtype == "int32"
                np.testing.assert_allclose(b.scale[0], x.scale[0] * w.scale[0], rtol=1e-6)
        else:  # hybrid: float in/out, rows quantized symmetrically by the kernel
            assert (x.dtype, y.dtype) == ("float32", "float32")
            assert opts["asymmetricQuantizeInputs"] is False
    report = bx.verify(model, (torch.randn(64, example.shape[1]),), res.path, targets=LITERT)
    assert report.passed, report.format_table()
    if mode == "dynamic":
        assert all(r.outputs[0].max_rel <= 1e-5 for r in report.results)


def test_static_mlp_stays_int8_between_layers(tmp_path):
    model, example = _seed_mlp("int8", "static")
    res = bx.export_tflite(model, example, tmp_path / "m.tflite")
    parsed, _ = _tensors(res.path)
    kinds = [op[0] for op in parsed.operators]
    assert kinds == ["QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "DEQUANTIZE"]
    fc1 = parsed.operators[1]
    assert fc1[3]["fusedActivationFunction"] == 1  # the ReLU, fused: the int8 chain is unbroken
    assert parsed.tensors[fc1[2][0]].dtype == "int8"


def _interp_outputs(path, x, kernel):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {
        "reference": OpResolverType.BUILTIN_REF,
        "xnnpack": OpResolverType.AUTO,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    }[kernel]
    it = Interpreter(
        model_path=str(path), experimental_op_resolver_type=resolver, experimental_preserve_all_tensors=True
    )
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    out = {}
    for t in it.get_tensor_details():
        with contextlib.suppress(ValueError):  # inside the XNNPACK delegate: not observable
            out[t["name"]] = it.get_tensor(t["index"])
    return out


@pytest.fixture(scope="module")
def int8_chain(tmp_path_factory):
    torch.manual_seed(3)
    model = mlp([48, 64, 64, 10], precision=4, bias=True)
    _static(model, (64, 48))
    x = (torch.randn(512, 48) * 1.5).numpy()  # beyond the calibrated range: saturation too
    path = tmp_path_factory.mktemp("chain") / "c.tflite"
    bx.export_tflite(model, torch.from_numpy(x[:4]), path)
    params = [m.quant_params() for m in model if isinstance(m, bx.BitNetLayer)]
    return model, x, path, params


def _chain_reference(x, params):
    q = numpy_tflite.quantize(x, params[0].input.scale, params[0].input.zero_point)
    outs = []
    for i, p in enumerate(params):
        nxt = params[i + 1].input if i + 1 < len(params) else p.output
        q = numpy_tflite.fc_int8(q, p, nxt.scale, nxt.zero_point)
        if i + 1 < len(params):
            q = np.maximum(q, nxt.zero_point)  # ReLU in the int8 domain
        outs.append(q)
    return outs


@pytest.mark.parametrize("kernel", ["reference", "xnnpack"])
def test_full_integer_is_0_lsb_on_reference_and_xnnpack(int8_chain, kernel):
    _, x, path, params = int8_chain
    got = _interp_outputs(path, x, kernel)
    ref = _chain_reference(x, params)
    final = got["4/output_int8"].astype(np.int64)
    np.testing.assert_array_equal(final, ref[-1])
    q_in = numpy_tflite.quantize(x, params[0].input.scale, params[0].input.zero_point)
    assert ((q_in == 127) | (q_in == -128)).any()  # the data really exercises input saturation
    if kernel == "reference":  # every intermediate int8 tensor too
        for name, r in zip(["0/output_int8", "2/output_int8"], ref, strict=False):
            np.testing.assert_array_equal(got[name].astype(np.int64), r)


def test_full_integer_builtin_is_within_1_lsb_per_layer(int8_chain):
    _, x, path, params = int8_chain
    got = _interp_outputs(path, x, "builtin")
    q = got["0/quantized_input"].astype(np.int64)
    np.testing.assert_array_equal(
        q, numpy_tflite.quantize(x, params[0].input.scale, params[0].input.zero_point)
    )
    off_by_one = 0
    for i, name in enumerate(["0/output_int8", "2/output_int8", "4/output_int8"]):
        p = params[i]
        nxt = params[i + 1].input if i + 1 < len(params) else p.output
        ref = numpy_tflite.fc_int8(q, p, nxt.scale, nxt.zero_point)  # fed the kernel's own input
        out = got[name].astype(np.int64)
        assert np.abs(out - ref).max() <= 1
        off_by_one += int((out != ref).sum())
        q = out  # the ReLU is fused into the FC: its int8 output feeds the next layer
    assert off_by_one > 0  # the optimized kernel really is not bit-exact: the bound is needed


def test_hybrid_kernel_choice_matters(tmp_path):
    model, example = _mixed("int8", "dynamic")
    res = bx.export_tflite(model, example, tmp_path / "h.tflite")
    x = torch.randn(32, 32)
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    out = {}
    for target in ("litert-builtin", "litert-reference", "litert-xnnpack"):
        adapter = make_adapter(target)
        adapter.load(res.path)
        out[target] = next(iter(adapter.run({res.input_names[0]: x.numpy()}).values()))
    scale = np.abs(ref).max()
    assert np.abs(out["litert-builtin"] - ref).max() <= 1e-5 * scale
    assert np.abs(out["litert-reference"] - ref).max() <= 1e-5 * scale
    assert np.abs(out["litert-xnnpack"] - ref).max() > 1e-3 * scale  # asymmetric rows: not BitNet


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    data = load_digits(seed=0)
    return train(DigitsMLP(bitnet=True), data, seed=0), data


@pytest.mark.parametrize("weights", ["int8", "int2"])
def test_digits_hybrid_top1_total_and_onnx_agrees(tmp_path, digits, weights):
    model, data = digits
    tfl = bx.export_tflite(model, data.x_test[:1], tmp_path / "d.tflite", weights=weights)
    onx = bx.export_onnx(model, data.x_test[:1], tmp_path / "d.onnx", weights=weights)
    report = bx.verify(model, data.x_test[:1], tfl.path, targets=LITERT, inputs=data.x_test)
    assert report.passed, report.format_table()
    assert all(r.outputs[0].top1_agreement == 1.0 for r in report.results)
    lite, ort = make_adapter("litert-builtin"), make_adapter("ort-cpu")
    lite.load(tfl.path)
    ort.load(onx.path)
    y_tfl = next(iter(lite.run({tfl.input_names[0]: data.x_test.numpy()}).values()))
    y_onx = next(iter(ort.run({onx.input_names[0]: data.x_test.numpy()}).values()))
    # ONNX rounds activation ties half to even (torch.round), TFLite half away from zero
    # (std::round); each matches PyTorch under its own rule, and they differ only on tie rows
    ref_even = reference_outputs(model, (data.x_test,), "half_even")[0]
    ref_away = reference_outputs(model, (data.x_test,), "half_away")[0]
    np.testing.assert_array_equal(y_onx, ref_even)
    assert np.abs(y_tfl - ref_away).max() <= 1e-5 * np.abs(ref_away).max()
    tie_rows = (ref_even != ref_away).any(axis=-1)
    differ = np.abs(y_tfl - y_onx).max(axis=-1) > 1e-5 * np.abs(y_onx).max()
    assert not (differ & ~tie_rows).any() and tie_rows.mean() <= 0.01


def test_digits_full_integer_flips_only_within_output_resolution(tmp_path, digits):
    trained, data = digits
    model = DigitsMLP(bitnet=True)
    model.load_state_dict(trained.state_dict())
    bx.configure_model(model, activation_mode="static")
    bx.calibrate(model, [data.x_train])
    tfl = bx.export_tflite(model, data.x_test[:1], tmp_path / "d.tflite")
    onx = bx.export_onnx(model, data.x_test[:1], tmp_path / "d.onnx")
    report = bx.verify(model, data.x_test[:1], tfl.path, targets=LITERT, inputs=data.x_test)
    assert report.passed, report.format_table()
    with torch.no_grad():
        ref = model.eval()(data.x_test).numpy()
    scale = json.loads(read_model(tfl.path.read_bytes()).metadata["bitnet_export.output_scales"])
    s_out = next(iter(scale.values()))[0]
    lite = make_adapter("litert-reference")
    lite.load(tfl.path)
    y = next(iter(lite.run({tfl.input_names[0]: data.x_test.numpy()}).values()))
    top2 = np.sort(ref, axis=-1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / s_out
    flips = y.argmax(-1) != ref.argmax(-1)
    # the int8 logits cannot order two classes closer than one output step; all others agree
    assert not flips[margin >= 1.0].any()
    assert flips.mean() <= 0.01
    # ONNX (exact integer maths) and TFLite (int8 output) of the same checkpoint: the same bound
    ort = make_adapter("ort-cpu")
    ort.load(onx.path)
    y_onx = next(iter(ort.run({onx.input_names[0]: data.x_test.numpy()}).values()))
    lo, hi = json.loads(read_model(tfl.path.read_bytes()).metadata["bitnet_export.output_ranges"])["output"]
    assert np.abs(y - np.clip(y_onx, lo, hi)).max() / s_out <= 3.0


def test_signature_metadata_and_description(tmp_path):
    model, example = _mixed("int4", "static")
    res = bx.export_tflite(
        model,
        example,
        tmp_path / "m.tflite",
        weights="int4",
        input_names=["features"],
        output_names=["logits"],
    )
    parsed, _ = _tensors(res.path)
    assert parsed.signature_inputs == ("features",) and parsed.signature_outputs == ("logits",)
    assert parsed.description == f"bitnet_export {bx.__version__}"
    meta = {k: json.loads(v) for k, v in parsed.metadata.items()}
    assert meta["bitnet_export.version"] == bx.__version__ and meta["bitnet_export.weights"] == "int4"
    layers = {entry["module_path"]: entry for entry in meta["bitnet_export.layers"]}
    assert layers["down"] == model.down.quant_params().describe()
    assert "logits" in meta["bitnet_export.output_scales"]


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = bx.BitNetLayer(8, 8)
        self.fc2 = bx.BitNetLayer(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ONNX Det (twice) and GridSample: ops without a TFLite builtin
        h = torch.linalg.det(self.fc(x).reshape(2, 2, 2, 2)).repeat(1, 4)
        grid = x.reshape(2, 2, 2, 2).tanh()
        g = F.grid_sample(h.reshape(2, 1, 2, 4), grid, align_corners=False)
        return torch.linalg.det(self.fc2(h).reshape(2, 2, 2, 2)) + g.reshape(2, 4)[:, :2]


def test_unsupported_ops_listed_at_once(tmp_path):
    with pytest.raises(ExportError) as err:
        bx.export_tflite(Unsupported(), torch.randn(2, 8), tmp_path / "u.tflite")
    msg = str(err.value)
    assert "ONNX Det: 2 use(s)" in msg and "ONNX GridSample: 1 use(s)" in msg
    assert "pre-flight op analysis for tflite" in msg and "Nothing was written" in msg
    assert list(tmp_path.iterdir()) == []


def test_storage_too_small_and_bad_weights_mode(tmp_path):
    model, example = _mixed("int8", "dynamic")
    with pytest.raises(ExportError, match=r"layer 'down'.*int2 storage \(-2..1\) cannot hold"):
        bx.export_tflite(model, example, tmp_path / "m.tflite", weights="int2")
    with pytest.raises(ExportError, match="matmulnbits"):
        bx.export_tflite(model, example, tmp_path / "m.tflite", weights="matmulnbits")
    assert list(tmp_path.iterdir()) == []


def test_bad_packing_and_truncated_files_are_clear_errors(tmp_path):
    model, example = _mixed("int4", "dynamic")
    res = bx.export_tflite(model, example, tmp_path / "m.tflite", weights="int4")
    data = res.path.read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ExportError, match="tflite reader"):
        bx.verify(model, example, truncated, targets=LITERT)
    # a hand-built INT4 tensor whose buffer holds one byte per value (unpacked)
    b = TflModelBuilder()
    x = b.add_tensor("x", [1, 4])
    w = b.add_constant("w", np.zeros((2, 4), np.int8), dtype="int8")
    b.tensors[w].dtype = "int4"  # claims INT4 but the buffer is 8 bytes, not 4
    y = b.add_tensor("y", [1, 2])
    b.add_op("FULLY_CONNECTED", [x, w, -1], [y])
    b.inputs, b.outputs, b.input_names, b.output_names = [x], [y], ["x"], ["y"]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b.to_bytes())
    with pytest.raises(ExportError, match=r"w \(int4\[2, 4\]\): 8 bytes, expected 4"):
        read_model(bad.read_bytes())
    with pytest.raises(ExportError, match="wrong size"):
        bx.verify(model, example, bad, targets=LITERT)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_weights_after_the_flatbuffer(tmp_path, mode):
    """The >2 GiB layout (Buffer.offset/size), forced on a small model: same model, same outputs."""
    model, example = _mixed("int4", mode)
    inline = bx.export_tflite(model, example, tmp_path / "in.tflite", weights="int4")
    after = bx.export_tflite(model, example, tmp_path / "after.tflite", weights="int4", weights_after=True)
    from ai_edge_litert import schema_py_generated as schema

    raw = after.path.read_bytes()
    fb = schema.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    external = [b for b in fb.buffers if b.offset]
    assert external and all(b.data is None and b.offset % 64 == 0 for b in external)
    assert all(b.offset + b.size <= len(raw) for b in external)
    assert [t.data for t in read_model(inline.path.read_bytes()).tensors] == [
        t.data for t in read_model(raw).tensors
    ]
    x = torch.randn(16, 32).numpy()
    for target in ("litert-reference", "litert-xnnpack", "litert-builtin"):
        a, b = make_adapter(target), make_adapter(target)
        a.load(inline.path)
        b.load(after.path)
        np.testing.assert_array_equal(
            next(iter(a.run({"x": x}).values())), next(iter(b.run({"x": x}).values()))
        )


def test_written_files_get_normal_permissions(tmp_path):
    """Atomic writes go through an owner-only temporary file; the result must not stay 0600."""
    torch.manual_seed(0)
    model = mlp([16, 8])
    x = torch.randn(4, 16)
    old = os.umask(0o022)
    try:
        res = bx.export_tflite(model, x, tmp_path / "m.tflite")
        report = bx.verify(model, x, res.path, targets=["litert-reference"])
        report.to_json(tmp_path / "r.json")
    finally:
        os.umask(old)
    assert (res.path.stat().st_mode & 0o777) == 0o644
    assert ((tmp_path / "r.json").stat().st_mode & 0o777) == 0o644
