"""LiteRT CPU adapters against independent numpy references, per kernel set.

Models are built here with :class:`TflModelBuilder` (no binary goldens). Tolerances follow
FIELD_NOTES: float FC exact; hybrid FC equals per-row symmetric absmax/127 quantization on the
builtin and reference kernels but not on XNNPACK (asymmetric rows); full-integer FC equals
"single rounding" requantization on reference and XNNPACK, within 1 LSB on builtin.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")

from bitnet_export.backends.tflite.flatbuffer import Quant, TflModelBuilder
from runtimes import ADAPTERS, RuntimeAdapter, make_adapter
from runtimes.protocol import RuntimeAdapterError

K, N = 16, 8
INTERPRETER_TARGETS = ("litert-xnnpack", "litert-builtin", "litert-reference")
ALL_TARGETS = (*INTERPRETER_TARGETS, "litert-compiled-cpu")
#: Max output error in LSBs of the output scale, full-integer FC (FIELD_NOTES).
INT8_LSB = {"litert-reference": 0, "litert-xnnpack": 0, "litert-builtin": 1, "litert-compiled-cpu": 0}


@dataclass(frozen=True)
class FloatFc:
    path: Path
    w: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class HybridFc:
    path: Path
    wq: np.ndarray
    sw: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class Int8Fc:
    path: Path
    wq: np.ndarray
    sw: np.ndarray
    bq: np.ndarray
    sx: np.float32
    zx: int
    so: np.float32
    zo: int


def _io(b: TflModelBuilder, x: int, y: int) -> bytes:
    b.inputs, b.outputs, b.input_names, b.output_names = [x], [y], ["inp"], ["out"]
    return b.to_bytes()


def _float_fc(path: Path, rng: np.random.Generator) -> FloatFc:
    w = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    b = TflModelBuilder()
    x = b.add_tensor("x", [1, K], shape_signature=[-1, K])
    wt, bt = b.add_constant("w", w), b.add_constant("b", bias)
    y = b.add_tensor("y", [1, N], shape_signature=[-1, N])
    b.add_op("FULLY_CONNECTED", [x, wt, bt], [y])
    path.write_bytes(_io(b, x, y))
    return FloatFc(path, w, bias)


def _hybrid_fc(path: Path, rng: np.random.Generator) -> HybridFc:
    wq = rng.integers(-127, 128, (N, K)).astype(np.int8)
    sw = (rng.random(N) * 0.01 + 0.001).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    b = TflModelBuilder()
    x = b.add_tensor("x", [1, K], shape_signature=[-1, K])
    wt = b.add_constant("w", wq, quant=Quant(list(sw), [0] * N, 0))
    bt = b.add_constant("b", bias)
    y = b.add_tensor("y", [1, N], shape_signature=[-1, N])
    b.add_op("FULLY_CONNECTED", [x, wt, bt], [y], asymmetricQuantizeInputs=False, _version=9)
    path.write_bytes(_io(b, x, y))
    return HybridFc(path, wq, sw, bias)


def _int8_fc(path: Path, rng: np.random.Generator) -> Int8Fc:
    sx, zx, so, zo = np.float32(0.05), 3, np.float32(0.05), -5
    wq = rng.integers(-127, 128, (N, K)).astype(np.int8)
    sw = (rng.random(N) * 0.005 + 0.0025).astype(np.float32)
    bq = rng.integers(-2000, 2000, N).astype(np.int32)
    b = TflModelBuilder()
    x = b.add_tensor("x", [1, K], shape_signature=[-1, K])
    xq = b.add_tensor("xq", [1, K], "int8", quant=Quant([float(sx)], [zx]), shape_signature=[-1, K])
    wt = b.add_constant("w", wq, quant=Quant(list(sw), [0] * N, 0))
    bt = b.add_constant("b", bq, quant=Quant(list(sx * sw), [0] * N, 0))
    yq = b.add_tensor("yq", [1, N], "int8", quant=Quant([float(so)], [zo]), shape_signature=[-1, N])
    y = b.add_tensor("y", [1, N], shape_signature=[-1, N])
    b.add_op("QUANTIZE", [x], [xq])
    b.add_op("FULLY_CONNECTED", [xq, wt, bt], [yq], _version=7)
    b.add_op("DEQUANTIZE", [yq], [y])
    path.write_bytes(_io(b, x, y))
    return Int8Fc(path, wq, sw, bq, sx, zx, so, zo)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    rng = np.random.default_rng(0)
    tmp = tmp_path_factory.mktemp("litert")
    return {
        "float": _float_fc(tmp / "float_fc.tflite", rng),
        "hybrid": _hybrid_fc(tmp / "hybrid_fc.tflite", rng),
        "int8": _int8_fc(tmp / "int8_fc.tflite", rng),
    }


def _loaded(target: str, path: Path) -> RuntimeAdapter:
    adapter = make_adapter(target)
    adapter.load(path)
    return adapter


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


# --------------------------------------------------------------------------- numpy references
def _ref_hybrid(m: HybridFc, x: np.ndarray) -> np.ndarray:
    """Per-row symmetric 8-bit activations (absmax/127), int8 per-channel weights."""
    amax = np.abs(x.astype(np.float64)).max(axis=1, keepdims=True)
    q = np.round(x * 127.0 / amax)
    return (q @ m.wq.T.astype(np.float64)) * ((amax / 127.0) * m.sw) + m.b


def _int8_inputs(m: Int8Fc, rng: np.random.Generator, batch: int) -> np.ndarray:
    """Floats at least 0.2 steps away from a rounding tie, so QUANTIZE is unambiguous."""
    steps = rng.integers(-60, 60, (batch, K)) + rng.uniform(-0.3, 0.3, (batch, K))
    return (steps * m.sx).astype(np.float32)


def _ref_int8(m: Int8Fc, x: np.ndarray) -> np.ndarray:
    """Integer FC with single rounding: float32 multiplier, round half to even, clip."""
    qx = np.clip(np.round(x / m.sx) + m.zx, -128, 127).astype(np.int64)
    acc = (qx - m.zx) @ m.wq.T.astype(np.int64) + m.bq
    mult = (np.float64(m.sx) * m.sw.astype(np.float64) / np.float64(m.so)).astype(np.float32)
    out = np.clip(np.round(acc * mult.astype(np.float64)) + m.zo, -128, 127)  # np.round: half even
    return ((out - m.zo) * np.float64(m.so)).astype(np.float32)


# --------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_float_fc_exact(models: dict[str, object], target: str) -> None:
    m = models["float"]
    assert isinstance(m, FloatFc)
    x = np.random.default_rng(1).standard_normal((1, K)).astype(np.float32)
    out = _loaded(target, m.path).run({"inp": x})
    assert list(out) == ["out"]
    np.testing.assert_allclose(out["out"], x.astype(np.float64) @ m.w.T + m.b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_hybrid_fc_rows_symmetric_except_xnnpack(models: dict[str, object], target: str) -> None:
    m = models["hybrid"]
    assert isinstance(m, HybridFc)
    x = (np.random.default_rng(2).standard_normal((1, K)) * 3).astype(np.float32)
    err = _rel(_loaded(target, m.path).run({"inp": x})["out"], _ref_hybrid(m, x))
    if target in ("litert-builtin", "litert-reference"):
        assert err <= 1e-5
    else:  # XNNPACK (also behind CompiledModel's CPU accelerator) quantizes rows asymmetrically
        assert err > 1e-5


def test_compiled_cpu_runs_the_xnnpack_hybrid_kernel(models: dict[str, object]) -> None:
    m = models["hybrid"]
    assert isinstance(m, HybridFc)
    x = (np.random.default_rng(3).standard_normal((4, K)) * 3).astype(np.float32)
    compiled = _loaded("litert-compiled-cpu", m.path).run({"inp": x})["out"]
    xnnpack = _loaded("litert-xnnpack", m.path).run({"inp": x})["out"]
    np.testing.assert_allclose(compiled, xnnpack, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_int8_fc_lsb(models: dict[str, object], target: str) -> None:
    m = models["int8"]
    assert isinstance(m, Int8Fc)
    x = _int8_inputs(m, np.random.default_rng(4), 64)
    out = _loaded(target, m.path).run({"inp": x})["out"]
    ref = _ref_int8(m, x)
    lsb = np.abs(np.round((out.astype(np.float64) - ref) / np.float64(m.so)))
    assert np.ptp(ref) > 100 * m.so  # the outputs span the int8 range: not a degenerate check
    assert lsb.max() <= INT8_LSB[target]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_batch_resize(models: dict[str, object], target: str) -> None:
    m = models["float"]
    assert isinstance(m, FloatFc)
    adapter = _loaded(target, m.path)
    rng = np.random.default_rng(5)
    for batch in (5, 1, 5):
        x = rng.standard_normal((batch, K)).astype(np.float32)
        y = adapter.run({"inp": x})["out"]
        assert y.shape == (batch, N)
        np.testing.assert_allclose(y, x.astype(np.float64) @ m.w.T + m.b, rtol=1e-6, atol=1e-6)
    assert adapter.info().provider in ("xnnpack", "builtin", "reference")


# --------------------------------------------------------------------------- what ran
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_info_reports_the_checked_kernels(models: dict[str, object], target: str) -> None:
    m = models["int8"]
    assert isinstance(m, Int8Fc)
    adapter = _loaded(target, m.path)
    assert isinstance(adapter, RuntimeAdapter)
    assert adapter.name == target
    assert adapter.input_specs() == [("inp", ["batch", K], "float32")]  # type: ignore[attr-defined]
    assert adapter.output_names() == ["out"]  # type: ignore[attr-defined]
    info = adapter.info()
    assert (info.runtime, info.version) == ("litert", importlib.metadata.version("ai-edge-litert"))
    assert info.arch and info.cpu_model and info.threads == 1 and not info.emulated
    kernel = target.removeprefix("litert-")
    if target == "litert-compiled-cpu":
        assert info.provider == "xnnpack"
        assert info.details["fully_accelerated"] is True
        assert info.details["accelerator"] == "CPU"
        return
    assert info.provider == kernel
    ops = ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"]
    if kernel == "xnnpack":
        assert info.details["ops"] == [*ops, "DELEGATE"]
        assert info.details["delegated_ops"] == ops
        assert info.details["undelegated_ops"] == []
    else:
        assert info.details["ops"] == ops
        assert info.details["delegate_nodes"] == 0


def _int32_add(path: Path, with_fc: bool) -> Path:
    """ADD on int32 (XNNPACK has no int32 ADD), optionally beside a float FC it can take."""
    b = TflModelBuilder()
    a = b.add_tensor("a", [1, 4], "int32")
    c = b.add_constant("c", np.arange(4, dtype=np.int32))
    o = b.add_tensor("o", [1, 4], "int32")
    b.add_op("ADD", [a, c], [o])
    b.inputs, b.outputs, b.input_names, b.output_names = [a], [o], ["a"], ["o"]
    if with_fc:
        x = b.add_tensor("x", [1, K])
        w = b.add_constant("w", np.ones((N, K), np.float32))
        bias = b.add_constant("b", np.zeros(N, np.float32))
        y = b.add_tensor("y", [1, N])
        b.add_op("FULLY_CONNECTED", [x, w, bias], [y])
        b.inputs, b.outputs, b.input_names, b.output_names = [a, x], [o, y], ["a", "x"], ["o", "y"]
    path.write_bytes(b.to_bytes())
    return path


def test_xnnpack_without_the_graph_is_an_error(tmp_path: Path) -> None:
    only_add = _int32_add(tmp_path / "add.tflite", with_fc=False)
    mixed = _int32_add(tmp_path / "mixed.tflite", with_fc=True)
    with pytest.raises(RuntimeAdapterError, match="XNNPACK delegate was not applied"):
        _loaded("litert-xnnpack", only_add)
    with pytest.raises(RuntimeAdapterError, match=r"XNNPACK took 1 of 2 ops.*ADD \(node 0\)"):
        _loaded("litert-xnnpack", mixed)
    with pytest.raises(RuntimeAdapterError, match="did not take every op"):
        _loaded("litert-compiled-cpu", mixed)
    feed = {"a": np.array([[1, 2, 3, 4]], np.int32), "x": np.ones((1, K), np.float32)}
    partial = make_adapter("litert-xnnpack", allow_partial=True)
    partial.load(mixed)
    out = partial.run(feed)
    np.testing.assert_array_equal(out["o"], [[1, 3, 5, 7]])
    np.testing.assert_array_equal(out["y"], np.full((1, N), K, np.float32))
    info = partial.info()
    assert info.provider == "xnnpack+builtin"
    assert info.details["undelegated_ops"] == ["ADD (node 0)"]
    builtin = _loaded("litert-builtin", mixed)
    np.testing.assert_array_equal(builtin.run(feed)["o"], out["o"])


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_bad_files(models: dict[str, object], target: str, tmp_path: Path) -> None:
    m = models["float"]
    assert isinstance(m, FloatFc)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(m.path.read_bytes()[:100])
    with pytest.raises(RuntimeAdapterError, match=rf"{target}: .*truncated.tflite is not a valid TFLite"):
        make_adapter(target).load(truncated)
    unknown = TflModelBuilder()
    x, y = unknown.add_tensor("x", [1, K]), unknown.add_tensor("y", [1, N])
    w, b = unknown.add_constant("w", m.w), unknown.add_constant("b", m.b)
    unknown.add_op("FULLY_CONNECTED", [x, w, b], [y], _version=99)
    (tmp_path / "v99.tflite").write_bytes(_io(unknown, x, y))
    with pytest.raises(RuntimeAdapterError, match=r"cannot run .*v99.tflite: Didn't find op .* '99'"):
        make_adapter(target).load(tmp_path / "v99.tflite")
    with pytest.raises(RuntimeAdapterError, match=r"missing.tflite does not exist"):
        make_adapter(target).load(tmp_path / "missing.tflite")
    with pytest.raises(RuntimeAdapterError, match="before load"):
        make_adapter(target).run({"inp": np.zeros((1, K), np.float32)})


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_bad_inputs(models: dict[str, object], target: str) -> None:
    m = models["float"]
    assert isinstance(m, FloatFc)
    adapter = _loaded(target, m.path)
    good = np.zeros((2, K), np.float32)
    with pytest.raises(
        RuntimeAdapterError, match=r"inputs \['x'\] do not match the model's inputs \['inp'\]"
    ):
        adapter.run({"x": good})
    with pytest.raises(RuntimeAdapterError, match="'inp' has dtype float64, the model expects float32"):
        adapter.run({"inp": good.astype(np.float64)})
    with pytest.raises(
        RuntimeAdapterError, match=r"'inp' has shape \[2, 17\], the model expects \['batch', 16\]"
    ):
        adapter.run({"inp": np.zeros((2, K + 1), np.float32)})
    with pytest.raises(RuntimeAdapterError, match=r"has shape \[32\]"):
        adapter.run({"inp": np.zeros(2 * K, np.float32)})
    assert adapter.run({"inp": good})["out"].shape == (2, N)  # still usable after the errors


def test_registry_and_error_home() -> None:
    from runtimes import ort_cpu, protocol

    assert set(ALL_TARGETS) <= set(ADAPTERS) and "ort-cpu" in ADAPTERS
    assert ort_cpu.RuntimeAdapterError is protocol.RuntimeAdapterError
    with pytest.raises(ValueError, match="kernel='gpu'; choose one of xnnpack, builtin, reference"):
        from runtimes.litert_cpu import LiteRtInterpreterAdapter

        LiteRtInterpreterAdapter(kernel="gpu")
