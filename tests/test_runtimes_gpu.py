"""LiteRT on the GPU (WebGPU -> Vulkan) against LiteRT's reference CPU kernels.

Runs on a real GPU or, without one, on SwiftShader (``python -m runtimes.gpu.vulkan build``);
skipped only when no Vulkan device can exist. Bounds (FIELD_NOTES, and measured on SwiftShader):
full-integer int8 <= 1 LSB of the output scale (0 measured), float <= 1e-5 relative (0
measured), hybrid: the CPU quantizes activations, the GPU computes in float (2.85e-3 abs measured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")

import bitnet_export
from bitnet_export.backends.tflite.flatbuffer import read_model
from bitnet_export.zoo.models import mlp
from runtimes import make_adapter
from runtimes.gpu.vulkan import ICD_ENV, unavailable_reason
from runtimes.protocol import RuntimeAdapterError

ROOT = Path(__file__).resolve().parents[1]
#: Hybrid: max abs difference GPU vs CPU reference kernels (measured 2.85e-3 on SwiftShader, ~3e-3
#: on an H200 per FIELD_NOTES), with 2x margin.
HYBRID_ABS = 6e-3


_REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = mlp([32, 64, 10]).eval()
    if kind == "float":
        bitnet_export.configure_model(m, enabled=False)
    elif kind == "int8":
        bitnet_export.configure_model(m, activation_mode="static")
        bitnet_export.calibrate(m, [torch.randn(16, 32)])
    return m


@pytest.fixture(scope="module")
def example() -> torch.Tensor:
    return torch.randn(16, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, example: torch.Tensor) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gpu_models")
    paths = {}
    for kind in ("float", "hybrid", "int8"):
        paths[kind] = out / f"{kind}.tflite"
        bitnet_export.export_tflite(_model(kind), example, paths[kind])
    return paths


def _pair(path: Path, x: torch.Tensor, target: str = "litert-gpu") -> tuple[np.ndarray, np.ndarray]:
    cpu = make_adapter("litert-reference")
    cpu.load(path)
    gpu = make_adapter(target)
    gpu.load(path)
    feed = {cpu.input_specs()[0][0]: x.numpy()}  # type: ignore[attr-defined]
    (ref,) = cpu.run(feed).values()
    (got,) = gpu.run(feed).values()
    assert got.dtype == ref.dtype and got.shape == ref.shape
    return ref.astype(np.float64), got.astype(np.float64)


@pytest.mark.parametrize("target", ["litert-gpu", "litert-gpu-fp16"])
def test_full_integer_within_one_lsb(models: dict[str, Path], example: torch.Tensor, target: str) -> None:
    meta = read_model(models["int8"].read_bytes()).metadata["bitnet_export.output_scales"]
    (scale,) = json.loads(meta).values()
    ref, got = _pair(models["int8"], example, target)
    lsb = np.abs(got - ref).max() / np.asarray(scale, dtype=np.float64).max()
    print(f"{target} int8: max {lsb:.3g} LSB (scale {scale})")
    assert lsb <= 1.0 + 1e-3


def test_float_exact(models: dict[str, Path], example: torch.Tensor) -> None:
    ref, got = _pair(models["float"], example)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"litert-gpu float: max relative {rel:.3g}")
    assert rel <= 1e-5


def test_hybrid_within_activation_quantization(models: dict[str, Path], example: torch.Tensor) -> None:
    ref, got = _pair(models["hybrid"], example)
    diff = np.abs(got - ref).max()
    print(f"litert-gpu hybrid: max abs {diff:.3g} (bound {HYBRID_ABS})")
    assert 0 < diff <= HYBRID_ABS  # > 0: the GPU does not quantize activations like the CPU


def test_info_names_the_vulkan_adapter(models: dict[str, Path]) -> None:
    gpu = make_adapter("litert-gpu-fp16")
    gpu.load(models["float"])
    info = gpu.info()
    assert (info.runtime, info.provider) == ("litert", "gpu (webgpu/vulkan)")
    assert info.details["precision_requested"] == "fp16" and info.details["fully_accelerated"] is True
    # what ran: fp16 only where the device offers WebGPU shader-f16 (read from Vulkan)
    f16 = info.details["shader_f16"]
    assert f16 in (True, False)
    assert info.details["precision"] == (
        "fp16" if f16 else "fp32 (fp16 requested; the device has no shader-f16)"
    )
    assert info.details["device"] not in ("", "unknown")
    assert info.details["device_kind"] in ("software", "hardware")
    if info.details["device_kind"] == "software":
        assert "SwiftShader" in info.details["device"]
        assert f16 is False  # SwiftShader: no shaderFloat16, and fp16 results equal fp32 ones


def test_verify_reports_the_adapter(models: dict[str, Path], example: torch.Tensor) -> None:
    report = bitnet_export.verify(_model("int8"), example, models["int8"], targets=["litert-gpu"])
    result, vs_cpu = report.results  # against PyTorch, and against the CPU twin
    assert vs_cpu.target == "litert-gpu vs cpu" and vs_cpu.passed, report.format_table()
    assert result.error is None, result.error
    assert result.passed, report.as_dict()
    assert result.runtime["provider"] == "gpu (webgpu/vulkan)"
    assert result.runtime["details"]["device"] not in ("", "unknown")


def test_missing_icd_is_an_error(models: dict[str, Path], tmp_path: Path) -> None:
    gpu = make_adapter("litert-gpu", icd=tmp_path / "nope.json")
    with pytest.raises(RuntimeAdapterError, match=r"Vulkan ICD manifest .*nope\.json does not exist"):
        gpu.load(models["float"])


def test_another_icd_after_first_use_is_an_error(models: dict[str, Path], tmp_path: Path) -> None:
    make_adapter("litert-gpu").load(models["float"])  # pins this process's ICD
    other = tmp_path / "other_icd.json"
    other.write_text('{"file_format_version": "1.0.0", "ICD": {"library_path": "/nonexistent.so"}}')
    with pytest.raises(RuntimeAdapterError, match="already uses the GPU through"):
        make_adapter("litert-gpu", icd=other).load(models["float"])


def test_no_vulkan_device_fails_with_litert_reason(models: dict[str, Path]) -> None:
    """A fresh process whose only ICD is broken: LiteRT's stderr reason, no CPU fallback."""
    script = (
        "import sys\nfrom runtimes import make_adapter\nfrom runtimes.protocol import RuntimeAdapterError\n"
        "a = make_adapter('litert-gpu')\n"
        "try:\n    a.load(sys.argv[1]); a.run({})\n"
        "except RuntimeAdapterError as e:\n    print('ERROR', e); sys.exit(3)\n"
        "print('RAN', a.info())\n"
    )
    env = {**os.environ, ICD_ENV: "/nonexistent/vk_icd.json", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(models["float"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot compile" in proc.stdout and "for the GPU" in proc.stdout
    assert "No adapters found" in proc.stdout  # LiteRT's reason, read from its stderr
    assert "/nonexistent/vk_icd.json" in proc.stdout


@pytest.mark.skipif(
    __import__("runtimes.gpu.ort_env", fromlist=["find_site"]).find_site() is None,
    reason="onnxruntime-webgpu env missing: make gpu-env",
)
def test_one_report_over_both_gpu_adapters_names_the_device(tmp_path: Path) -> None:
    """`verify --target litert-gpu --target ort-webgpu`: ONNX (MatMulNBits) and TFLite (int8
    full-integer) of one model, one report, the Vulkan adapter named for each GPU row."""
    torch.manual_seed(0)
    model = mlp([32, 64, 10])
    example = torch.randn(8, 32)
    onnx_path = bitnet_export.export_onnx(model, example, tmp_path / "m.onnx", weights="matmulnbits").path
    webgpu = bitnet_export.verify(model, example, onnx_path, targets=["ort-webgpu"])
    assert webgpu.passed, webgpu.format_table()
    assert "device " in webgpu.format_table()
    bitnet_export.configure_model(model, activation_mode="static")
    bitnet_export.calibrate(model, [torch.randn(64, 32)])
    static_onnx = bitnet_export.export_onnx(model, example, tmp_path / "s.onnx").path
    tflite_path = bitnet_export.export_tflite(model, example, tmp_path / "m.tflite").path
    report = bitnet_export.verify(model, example, [tflite_path], targets=["litert-gpu"])
    assert report.passed, report.format_table()
    assert report.results[0].outputs[0].lsb is not None and report.results[0].outputs[0].lsb <= 3.0
    # the same file on the CPU twin (litert-reference): int8 with enforce_f32 within 1 LSB
    vs_cpu = report.results[1]
    assert vs_cpu.target == "litert-gpu vs cpu" and vs_cpu.outputs[0].lsb is not None
    assert vs_cpu.outputs[0].lsb <= 1.0
    table = report.format_table()
    assert "device " in table and "precision fp32" in table
    # the int8 QDQ ONNX graph has no WebGPU kernels: a failed target naming the ops, not a CPU run
    failed = bitnet_export.verify(model, example, static_onnx, targets=["ort-webgpu"])
    assert not failed.passed and "QuantizeLinear" in (failed.results[0].error or "")


def test_reported_precision_is_what_ran(models: dict[str, Path], example: torch.Tensor) -> None:
    """fp16 asked: the outputs differ from fp32 exactly when the device has shader-f16."""
    fp16 = make_adapter("litert-gpu-fp16")
    fp16.load(models["float"])
    _, got16 = _pair(models["float"], example, "litert-gpu-fp16")
    _, got32 = _pair(models["float"], example, "litert-gpu")
    f16 = fp16.info().details["shader_f16"]
    assert np.array_equal(got16, got32) is (not f16), (f16, np.abs(got16 - got32).max())


def test_other_batch_than_compiled_is_a_clear_error(models: dict[str, Path], example: torch.Tensor) -> None:
    """LiteRT's GPU accelerator cannot resize (it would hand ops to CPU kernels): say so, run nothing."""
    gpu = make_adapter("litert-gpu")
    gpu.load(models["int8"])  # exported with a batch of 16
    name = gpu.input_specs()[0][0]  # type: ignore[attr-defined]
    with pytest.raises(RuntimeAdapterError, match=r"shape \[5, 32\].*shape \[16, 32\].*Run batches of 16"):
        gpu.run({name: example[:5].numpy()})
    (out,) = gpu.run({name: example.numpy()}).values()  # the compiled batch still runs
    assert out.shape == (16, 10)
