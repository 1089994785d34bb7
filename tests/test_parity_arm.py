"""ARM parity through the parity engine: the test models' ONNX and TFLite exports on two cores.

cortex-a53 (no dotprod) and neoverse-v1 (SVE, i8mm), each compared with PyTorch and with the x86
run of the same file (``... vs x86`` rows). Skips when the emulated environment is not built
(``make arm-env``); CI builds it.
"""

from __future__ import annotations

import pytest
import torch

import bitnet_export as bx
from bitnet_export.zoo.models import MixedBlock
from runtimes.arm.env import find_env

pytestmark = pytest.mark.skipif(
    find_env() is None, reason="emulated aarch64 environment missing: run `make arm-env`"
)

CORES = ["arm64:cortex-a53", "arm64:neoverse-v1"]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_mixed_block_onnx_and_tflite_on_two_cores(tmp_path, mode):
    torch.manual_seed(0)
    model = MixedBlock(precisions=(1.58, 4, 8))
    if mode == "static":
        bx.configure_model(model, activation_mode="static")
        bx.calibrate(model, [torch.randn(32, 32) for _ in range(4)])
    example = torch.randn(8, 32)
    onnx_path = bx.export_onnx(model, example, tmp_path / "m.onnx").path
    tflite_path = bx.export_tflite(model, example, tmp_path / "m.tflite").path
    report = bx.verify(model, example, [onnx_path, tflite_path], targets=CORES)
    assert report.passed, report.format_table()
    targets = [r.target for r in report.results]
    for core in CORES:
        # ORT on the ONNX file; LiteRT builtin, reference and XNNPACK on the int8 TFLite file
        for runtime, file in (
            ("ort", "m.onnx"),
            ("litert-builtin", "m.tflite"),
            ("litert-reference", "m.tflite"),
            ("litert-xnnpack", "m.tflite"),
        ):
            assert f"{core}:{runtime} [{file}]" in targets
            assert f"{core}:{runtime} [{file}] vs x86" in targets
    for r in report.results:
        if r.target.endswith("vs x86") and ":ort" in r.target:
            # ORT's integer paths are bit-exact with x86; LayerNorm/GELU differ by ulps at most
            assert r.outputs[0].max_rel <= 1e-6
        if not r.target.endswith("vs x86"):
            assert r.runtime["emulated"] is True and r.runtime["arch"] == "aarch64"


@pytest.fixture(scope="module")
def digits():
    from bitnet_export.zoo.digits import DigitsMLP, load_digits, train

    torch.manual_seed(0)
    data = load_digits(seed=0)
    return train(DigitsMLP(bitnet=True), data, seed=0), data


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_digits_onnx_and_tflite_on_two_cores(tmp_path, digits, mode):
    import copy

    trained, data = digits
    model = copy.deepcopy(trained)
    if mode == "static":
        bx.configure_model(model, activation_mode="static")
        bx.calibrate(model, [data.x_train])
    onnx_path = bx.export_onnx(model, data.x_test[:1], tmp_path / "d.onnx", weights="int2").path
    tflite_path = bx.export_tflite(model, data.x_test[:1], tmp_path / "d.tflite").path
    report = bx.verify(model, data.x_test[:1], [onnx_path, tflite_path], targets=CORES, inputs=data.x_test)
    assert report.passed, report.format_table()
    for r in report.results:
        if r.target.endswith("vs x86") and mode == "static" and "litert-builtin" not in r.target:
            assert r.outputs[0].max_abs == 0.0  # integer paths: bit-exact with x86


@pytest.mark.parametrize("weights", ["int2", "int8"])
def test_nbits_kernel_onnx_is_bit_exact_on_arm(tmp_path, digits, weights):
    """The kernels="nbits" file on aarch64 ORT's MatMulNBits kernels (NEON, dotprod on v1):
    the padded blocks keep the codes there too; same bits as x86 and PyTorch."""
    trained, data = digits
    path = bx.export_onnx(
        trained, data.x_test[:1], tmp_path / "n.onnx", weights=weights, kernels="nbits"
    ).path
    report = bx.verify(
        trained, data.x_test[:1], path, targets=[f"{c}:ort" for c in CORES], inputs=data.x_test
    )
    assert report.passed, report.format_table()
    assert len(report.results) == 4 and all(r.outputs[0].max_abs == 0.0 for r in report.results)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_float_kernel_onnx_is_bit_exact_on_arm(tmp_path, digits, mode):
    """The kernels="float" file (written for WebGPU) on aarch64 ORT: same bits as x86 and PyTorch."""
    import copy

    trained, data = digits
    model = copy.deepcopy(trained)
    if mode == "static":
        bx.configure_model(model, activation_mode="static")
        bx.calibrate(model, [data.x_train])
    path = bx.export_onnx(model, data.x_test[:1], tmp_path / "f.onnx", weights="int2", kernels="float").path
    report = bx.verify(model, data.x_test[:1], path, targets=[f"{c}:ort" for c in CORES], inputs=data.x_test)
    assert report.passed, report.format_table()
    assert len(report.results) == 4 and all(r.outputs[0].max_abs == 0.0 for r in report.results)
