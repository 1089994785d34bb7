"""Every exported test model on both GPU adapters: ``litert-gpu`` (TFLite) and ``ort-webgpu`` (ONNX).

Models: the seed MLP (``BitNetModel(784, 256, 10)``), ``MixedBlock`` (LayerNorm, GELU, residual
add) and the trained digits MLP; float, dynamic (hybrid TFLite, ONNX ``kernels="float"`` and
MatMulNBits) and static (full-integer TFLite, ONNX ``kernels="float"``), with int8 / INT4 / INT2
weights. One ``verify`` per case gives PyTorch vs each GPU target and each GPU target vs its CPU
twin (litert-reference, ort-cpu), each with the explicit tolerances of ``parity.tolerances``.

Runs on a real GPU or on SwiftShader (``make gpu-env``); measured on SwiftShader: ONNX
float-kernel files 0 vs ORT CPU (bit for bit; 6e-8 on MixedBlock's float ops), full-integer
TFLite 0 LSB vs the reference kernels (<= 1.71 LSB vs PyTorch), hybrid TFLite and MatMulNBits
<= 1.1e-2 (the GPU computes in float).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import bitnet_export as bx
from bitnet_export.zoo.digits import DigitsMLP, load_digits, train
from bitnet_export.zoo.models import BitNetModel, MixedBlock, mlp
from runtimes import make_adapter
from runtimes.gpu.ort_env import BUILD_COMMAND, find_site
from runtimes.gpu.vulkan import unavailable_reason

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
_REASON = unavailable_reason() or (
    None if find_site() else f"onnxruntime-webgpu env missing: {BUILD_COMMAND}"
)
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

#: MixedBlock precisions (embed/up, down, head) that fit each weight storage
PRECISIONS = {"int8": (1.58, 4, 8), "int4": (1.58, 2, 4), "int2": (1.58, 1, 2)}
KINDS = ["float"] + [f"{mode}-{w}" for mode in ("dynamic", "static") for w in ("int8", "int4", "int2")]


@pytest.fixture(scope="module")
def digits_state() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    data = load_digits(seed=0)
    return train(DigitsMLP(bitnet=True), data, seed=0).state_dict(), data.x_train


def _model(name: str, kind: str, digits_state) -> tuple[nn.Module, torch.Tensor]:  # type: ignore[no-untyped-def]
    weights = kind.split("-")[-1] if "-" in kind else "int8"
    torch.manual_seed(0)
    if name == "seed_mlp":
        model: nn.Module = BitNetModel(784, 256, 10)
        calib = torch.randn(256, 784)
    elif name == "mixed":
        model = MixedBlock(precisions=PRECISIONS[weights])
        calib = torch.randn(256, 32)
    else:
        model = DigitsMLP(bitnet=True)
        model.load_state_dict(digits_state[0])
        calib = digits_state[1]
    if kind == "float":
        bx.configure_model(model, enabled=False)
    elif kind.startswith("static"):
        bx.configure_model(model, activation_mode="static")
        bx.calibrate(model, [calib])
    return model.eval(), calib[:16]


@pytest.fixture(scope="module")
def gpus():  # type: ignore[no-untyped-def]
    """One adapter object per GPU target for the whole module (one ort-webgpu worker)."""
    webgpu = make_adapter("ort-webgpu", timeout_s=300)
    yield [webgpu, make_adapter("litert-gpu")]
    webgpu.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["seed_mlp", "mixed", "digits"])
def test_runs_on_both_gpu_adapters(tmp_path: Path, gpus, digits_state, name: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    model, example = _model(name, kind, digits_state)
    weights = kind.split("-")[-1] if "-" in kind else "int8"
    files = [
        bx.export_onnx(model, example, tmp_path / "m.onnx", weights=weights, kernels="float").path,
        bx.export_tflite(model, example, tmp_path / "m.tflite", weights=weights).path,
    ]
    if kind == "dynamic-int4":  # ORT's 2/4-bit contrib op has a WebGPU kernel too
        files.append(bx.export_onnx(model, example, tmp_path / "n.onnx", weights="matmulnbits").path)
    report = bx.verify(model, example, files, targets=gpus, inputs=example * 1.25)
    print(f"\n{name} {kind}\n{report.format_table()}")
    rows = {r.target: r for r in report.results}
    expected = {f"ort-webgpu [{p.name}]" for p in files if p.suffix == ".onnx"} | {"litert-gpu [m.tflite]"}
    assert set(rows) == expected | {f"{t} vs cpu" for t in expected}, sorted(rows)
    for result in report.results:
        assert result.error is None and result.passed, report.format_table()
        assert result.runtime["details"]["device_kind"] in ("software", "hardware")
        assert result.runtime["details"]["device"] not in ("", "unknown")
    assert rows["ort-webgpu [m.onnx]"].runtime["provider"] == "WebGpuExecutionProvider"
    assert rows["litert-gpu [m.tflite]"].runtime["details"]["fully_accelerated"] is True
    if kind.startswith("static"):  # int8 with enforce_f32: within 1 LSB of the CPU kernels
        lsb = rows["litert-gpu [m.tflite] vs cpu"].outputs[0].lsb
        assert lsb is not None and lsb <= 1.0


SPEC = """
import torch
import bitnet_export as bx
from bitnet_export.zoo.models import mlp


def make():
    torch.manual_seed(0)
    model = mlp([32, 64, 10]).eval()
    bx.configure_model(model, activation_mode="static")
    bx.calibrate(model, [torch.randn(256, 32)])
    return model, torch.randn(8, 32)
"""


def test_cli_verify_on_both_gpu_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bitnet-export verify --target litert-gpu --target ort-webgpu``: one report, the device named."""
    from bitnet_export.cli import main

    spec_file = tmp_path / "spec.py"
    spec_file.write_text(SPEC)
    spec = f"{spec_file}:make"
    onnx_path, tfl_path, report = tmp_path / "m.onnx", tmp_path / "m.tflite", tmp_path / "r.json"
    assert main(["export", spec, "--weights", "int2", "--kernels", "float", "--out", str(onnx_path)]) == 0
    assert main(["export", spec, "--format", "tflite", "--weights", "int2", "--out", str(tfl_path)]) == 0
    capsys.readouterr()
    argv = ["verify", str(onnx_path), str(tfl_path), spec, "--target", "litert-gpu", "--target", "ort-webgpu"]
    code = main([*argv, "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    data = json.loads(report.read_text())
    assert [r["target"] for r in data["results"]] == [
        "ort-webgpu [m.onnx]",
        "ort-webgpu [m.onnx] vs cpu",
        "litert-gpu [m.tflite]",
        "litert-gpu [m.tflite] vs cpu",
    ]
    devices = {r["runtime"]["details"]["device"] for r in data["results"]}
    assert len(devices) == 1 and f"device {devices.pop()}" in out  # e.g. SwiftShader Device (Subzero)


@pytest.mark.parametrize(
    "options",
    [
        {"activation_mode": "dynamic", "activation_bits": 4, "granularity": "per_channel"},
        {"activation_mode": "static", "activation_bits": 4},
        {"activation_mode": "static", "symmetric": True, "granularity": "per_tensor"},
    ],
    ids=["dyn-a4-per-channel", "static-a4", "static-sym-per-tensor"],
)
def test_float_kernels_corners_on_webgpu(tmp_path: Path, gpus, options: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """Sub-8-bit activations, symmetric ranges, per-channel scales, biases: on the GPU too."""
    torch.manual_seed(5)
    model = mlp([24, 48, 12], precision=4, bias=True)
    bx.configure_model(model, **options)
    if options["activation_mode"] == "static":
        bx.calibrate(model, [torch.randn(64, 24)])
    x = torch.randn(32, 24) * 2
    path = bx.export_onnx(model.eval(), x[:2], tmp_path / "m.onnx", weights="int4", kernels="float").path
    report = bx.verify(model, x[:2], path, targets=gpus[:1], inputs=x)
    assert report.passed, report.format_table()
    _, vs_cpu = report.results
    assert vs_cpu.target == "ort-webgpu vs cpu" and vs_cpu.outputs[0].max_rel <= 1e-2
