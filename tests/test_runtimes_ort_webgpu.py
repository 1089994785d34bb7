"""The ``ort-webgpu`` target: ONNX Runtime's WebGPU EP (Dawn -> Vulkan) vs ``ort-cpu``.

Needs ``python -m runtimes.gpu.ort_env build`` and a Vulkan device: a GPU ICD, or SwiftShader
(``python -m runtimes.gpu.vulkan build``). Measured on SwiftShader (onnxruntime-webgpu 1.27.0),
max |webgpu - cpu| / max |cpu|: float 1.3e-7; matmulnbits 8.2e-3 against ORT CPU as exported
(``accuracy_level=4``: the CPU quantizes activations to int8, the GPU computes in float) and
1.7e-7 against ORT CPU with ``accuracy_level=0``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import bitnet_export
from bitnet_export.zoo import models
from runtimes import make_adapter
from runtimes.gpu.ort_env import BUILD_COMMAND, find_site
from runtimes.gpu.vulkan import unavailable_reason
from runtimes.protocol import RuntimeAdapterError

torch = pytest.importorskip("torch")


pytestmark = [
    pytest.mark.skipif(find_site() is None, reason=f"onnxruntime-webgpu env missing: {BUILD_COMMAND}"),
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

#: Bounds on max |webgpu - cpu| / max |cpu| (measured values in the module docstring).
REL_BOUND = {"float": 1e-5, "matmulnbits": 3e-2, "matmulnbits_acc0": 1e-5}


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ort_webgpu")
    torch.manual_seed(0)
    example = torch.randn(4, 32)
    files = {}
    for kind in ("float", "matmulnbits", "int8"):
        model = models.mlp([32, 64, 10]).eval()
        if kind == "float":
            bitnet_export.configure_model(model, enabled=False)
        path = out / f"mlp_{kind}.onnx"
        bitnet_export.export_onnx(model, example, path, weights="int8" if kind == "float" else kind)
        files[kind] = path
    # The same MatMulNBits graph with accuracy_level=0: ORT CPU then computes in float too.
    proto = onnx.load(str(files["matmulnbits"]))
    for node in proto.graph.node:
        for attr in node.attribute:
            if node.op_type == "MatMulNBits" and attr.name == "accuracy_level":
                attr.i = 0
    files["matmulnbits_acc0"] = out / "mlp_matmulnbits_acc0.onnx"
    onnx.save(proto, str(files["matmulnbits_acc0"]))
    return files


@pytest.fixture(scope="module")
def webgpu():  # type: ignore[no-untyped-def]
    adapter = make_adapter("ort-webgpu", timeout_s=120)
    yield adapter
    adapter.close()


def _inputs(batch: int = 5) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(1).standard_normal((batch, 32)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["float", "matmulnbits", "matmulnbits_acc0"])
def test_matches_ort_cpu(kind: str, onnx_files: dict[str, Path], webgpu) -> None:  # type: ignore[no-untyped-def]
    cpu = make_adapter("ort-cpu")
    cpu.load(onnx_files[kind])
    webgpu.load(onnx_files[kind])
    assert webgpu.input_specs() == cpu.input_specs()  # type: ignore[attr-defined]
    assert webgpu.output_names() == cpu.output_names()  # type: ignore[attr-defined]
    x = _inputs()
    ref = cpu.run(x)["output"]
    got = webgpu.run(x)["output"]
    assert got.shape == ref.shape and got.dtype == np.float32
    rel = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    print(f"ort-webgpu vs ort-cpu, {kind}: max rel diff {rel:.3g}")
    assert rel <= REL_BOUND[kind], rel
    info = webgpu.info()
    assert info.provider == "WebGpuExecutionProvider"
    assert info.details["session_providers"][0] == "WebGpuExecutionProvider"
    assert info.details["cpu_ep_fallback"] == "disabled"
    assert info.details["device_kind"] in ("software", "hardware")
    assert info.details["device"] != "unknown"


def test_int8_dynamic_fails_naming_the_ops(onnx_files: dict[str, Path], webgpu) -> None:  # type: ignore[no-untyped-def]
    """The default int8 export (QuantizeLinear + MatMulInteger) has no WebGPU kernels: no CPU run."""
    with pytest.raises(RuntimeAdapterError) as err:
        webgpu.load(onnx_files["int8"])
    msg = str(err.value)
    assert "fallback to CPU EP has been explicitly disabled" in msg
    assert "QuantizeLinear" in msg and "MatMulInteger" in msg
    assert "kernels='float'" in msg and "--kernels float" in msg  # the fix, named
    with pytest.raises(RuntimeAdapterError, match="before load"):
        webgpu.run(_inputs())


def test_bogus_icd_is_an_error(onnx_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_ICD_FILENAMES", "/nonexistent/bogus_icd.json")
    adapter = make_adapter("ort-webgpu", timeout_s=60)
    try:
        with pytest.raises(RuntimeAdapterError, match="Vulkan loader shows no device"):
            adapter.load(onnx_files["float"])
    finally:
        adapter.close()  # type: ignore[attr-defined]


def test_timeout_kills_the_worker(onnx_files: dict[str, Path]) -> None:
    adapter = make_adapter("ort-webgpu", timeout_s=0.01)
    try:
        with pytest.raises(RuntimeAdapterError, match="timed out"):
            adapter.load(onnx_files["float"])
        worker = adapter._worker  # type: ignore[attr-defined]
        assert worker is not None and not worker.alive()  # the process group was killed
    finally:
        adapter.close()  # type: ignore[attr-defined]


def test_wrong_inputs_are_named_before_the_gpu_runs(onnx_files: dict[str, Path], webgpu) -> None:  # type: ignore[no-untyped-def]
    webgpu.load(onnx_files["float"])
    with pytest.raises(
        RuntimeAdapterError, match=r"'input' has shape \[5, 31\], the model expects \[.*, 32\]"
    ):
        webgpu.run({"input": np.zeros((5, 31), np.float32)})
    with pytest.raises(
        RuntimeAdapterError, match="'input' has dtype float64, the model expects tensor\\(float\\)"
    ):
        webgpu.run({"input": np.zeros((5, 32))})
    with pytest.raises(RuntimeAdapterError, match="do not match the model's inputs"):
        webgpu.run({"x": np.zeros((5, 32), np.float32)})
