"""Parity metrics and report, checked against numbers computed by hand with numpy in each test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bitnet_export.errors import QuantConfigError
from bitnet_export.parity.metrics import OutputMetrics, compare
from bitnet_export.parity.report import ParityReport, TargetResult, Tolerance

RUNTIME = {
    "runtime": "onnxruntime",
    "version": "1.20.1",
    "provider": "CPUExecutionProvider",
    "arch": "aarch64",
    "cpu_model": "cortex-a76",
    "emulated": True,
    "threads": 1,
    "details": {},
}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _close(a: OutputMetrics, **expected: float) -> None:
    for field, value in expected.items():
        assert getattr(a, field) == pytest.approx(value, rel=1e-12, abs=0.0), field


# --- metrics -------------------------------------------------------------------------------------


def test_identical_arrays(rng: np.random.Generator) -> None:
    ref = rng.normal(size=(3, 7)).astype(np.float32)
    m = compare("y", ref, ref.copy(), scale=0.05)
    assert m.degenerate is None
    assert m.shape == (3, 7)
    assert m.max_abs == 0.0 and m.max_rel == 0.0 and m.mean_abs == 0.0
    assert m.lsb == 0.0 and m.lsb_count == 0
    assert m.snr_db == math.inf
    assert m.cosine == pytest.approx(1.0, abs=1e-12)
    assert m.top1_agreement == 1.0


def test_known_perturbation_in_lsb(rng: np.random.Generator) -> None:
    scale = 0.25  # a power of two: every difference below is exact in float64
    ref = rng.integers(-100, 100, size=(4, 8)).astype(np.float64) * scale
    ref[3, 7] = 30.0  # pins max|ref|
    got = ref.copy()
    got[0, 0] += 0.5 * scale  # exactly half a step: counts (>= 0.5)
    got[1, 3] -= 1.5 * scale
    got[2, 5] += 0.375 * scale  # below half a step: does not count
    m = compare("y", ref, got, scale=scale)

    diff = np.abs(got - ref)
    assert m.degenerate is None
    assert m.lsb == 1.5
    assert m.lsb_count == 2
    _close(
        m,
        max_abs=1.5 * scale,
        max_rel=1.5 * scale / 30.0,
        mean_abs=float(diff.sum() / diff.size),
        snr_db=10 * math.log10(float((ref**2).sum()) / float((diff**2).sum())),
        cosine=float((ref * got).sum() / math.sqrt(float((ref**2).sum()) * float((got**2).sum()))),
    )


def test_lsb_count_threshold_is_half_a_step() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    scale = 0.5
    # |diff| / scale = 0.5 (counts), 0.49999 (does not), 2.5 (counts), 0 (does not)
    got = ref + np.array([0.25, 0.249995, -1.25, 0.0])
    m = compare("y", ref, got, scale=scale)
    assert m.lsb_count == 2
    assert m.lsb == pytest.approx(2.5, rel=1e-12)


def test_per_channel_scale_on_last_axis(rng: np.random.Generator) -> None:
    scale = np.array([0.1, 0.2, 0.4, 0.8])
    ref = rng.normal(size=(3, 4))
    got = ref.copy()
    got[0, 3] += 0.8  # 1.0 step of channel 3 (would be 8 steps of channel 0)
    got[1, 1] += 0.12  # 0.6 step of channel 1
    got[2, 0] += 0.04  # 0.4 step of channel 0
    m = compare("y", ref, got, scale=scale)

    steps = np.abs(got - ref) / scale[np.newaxis, :]
    assert m.lsb == pytest.approx(float(steps.max()), rel=1e-12)
    assert m.lsb == pytest.approx(1.0, rel=1e-9)
    assert m.lsb_count == int((steps >= 0.5).sum()) == 2
    # the same errors against one per-tensor step of 0.1 read as 8 steps
    assert compare("y", ref, got, scale=0.1).lsb == pytest.approx(8.0, rel=1e-9)


@pytest.mark.parametrize(
    "scale", [np.array([0.1, 0.2, 0.3]), np.ones((2, 4)), 0.0, -1.0, np.array([0.1, 0.0, 0.1, 0.1])]
)
def test_bad_scale_raises(scale: float | np.ndarray) -> None:
    ref = np.arange(8.0).reshape(2, 4)
    with pytest.raises(QuantConfigError, match="'y'"):
        compare("y", ref, ref, scale=scale)


def test_no_scale_means_no_lsb(rng: np.random.Generator) -> None:
    ref = rng.normal(size=(2, 5))
    m = compare("y", ref, ref + 1e-3)
    assert m.lsb is None and m.lsb_count is None


def test_float32_inputs_are_compared_in_float64(rng: np.random.Generator) -> None:
    ref = rng.normal(size=(16, 32)).astype(np.float32)
    got = (ref + rng.normal(scale=1e-3, size=ref.shape)).astype(np.float32)
    m = compare("y", ref, got)
    r, g = ref.astype(np.float64), got.astype(np.float64)
    d = np.abs(g - r)
    _close(
        m,
        max_abs=float(d.max()),
        max_rel=float(d.max() / np.abs(r).max()),
        mean_abs=float(d.mean()),
        snr_db=10 * math.log10(float((r**2).sum() / (d**2).sum())),
        cosine=float((r * g).sum() / (np.sqrt((r**2).sum()) * np.sqrt((g**2).sum()))),
    )
    assert isinstance(m.max_abs, float) and isinstance(m.cosine, float)


def test_top1_one_row_of_four_flips() -> None:
    ref = np.array(
        [
            [0.1, 0.9, 0.0, 0.2, 0.3],
            [0.8, 0.1, 0.0, 0.2, 0.3],
            [0.1, 0.2, 0.7, 0.2, 0.3],
            [0.1, 0.2, 0.0, 0.2, 0.6],
        ]
    )
    got = ref + 0.01
    got[2, 4] = 0.75  # row 2: argmax moves from 2 to 4
    m = compare("logits", ref, got)
    assert m.top1_agreement == 0.75
    # the same rows under a leading batch axis: rows are all axes but the last
    m3 = compare("logits", ref.reshape(2, 2, 5), got.reshape(2, 2, 5))
    assert m3.top1_agreement == 0.75


def test_top1_undefined_for_scalar_and_size_one_last_axis() -> None:
    assert compare("y", np.array([[1.0], [2.0]]), np.array([[1.0], [2.5]])).top1_agreement is None
    assert compare("loss", np.array(2.0), np.array(2.5)).top1_agreement is None


def test_all_zero_reference_is_degenerate() -> None:
    ref = np.zeros((2, 3))
    m = compare("y", ref, ref + 1e-3)
    assert m.degenerate == "reference is all zeros"
    assert m.max_rel == math.inf
    assert math.isnan(m.cosine)
    assert Tolerance(max_rel=1.0).check(m) == ["degenerate: reference is all zeros"]
    # identical all-zero arrays are still meaningless: a broken graph that outputs zeros "matches"
    assert Tolerance().check(compare("y", ref, ref)) == ["degenerate: reference is all zeros"]


def test_constant_reference_is_degenerate() -> None:
    ref = np.full((3, 4), 2.5, dtype=np.float32)
    m = compare("y", ref, ref.copy())
    assert m.degenerate is not None and m.degenerate.startswith("reference is constant")
    assert Tolerance().check(m) == [f"degenerate: {m.degenerate}"]
    # a single element is not "constant"
    assert compare("loss", np.array([2.5]), np.array([2.5])).degenerate is None


def test_nan_and_inf_in_got_are_degenerate(rng: np.random.Generator) -> None:
    ref = rng.normal(size=(4, 4))
    got = ref.copy()
    got[0, 1] = np.nan
    got[2, 2] = np.inf
    got[3, 0] = np.nan
    m = compare("y", ref, got, scale=0.1)
    assert m.degenerate == "got has 3 NaN/Inf values"
    assert Tolerance(max_rel=1.0).check(m) == ["degenerate: got has 3 NaN/Inf values"]


def test_shape_mismatch_is_degenerate_not_an_exception() -> None:
    m = compare("y", np.ones((2, 3)), np.ones((2, 4)), scale=0.1)
    assert m.degenerate == "shape mismatch: ref (2, 3) vs got (2, 4)"
    assert m.shape == (2, 3)
    assert all(math.isnan(v) for v in (m.max_abs, m.max_rel, m.mean_abs, m.cosine, m.snr_db))
    assert m.lsb is not None and math.isnan(m.lsb)
    assert m.lsb_count is None and m.top1_agreement is None


def test_empty_output_is_degenerate() -> None:
    m = compare("y", np.zeros((0, 3)), np.zeros((0, 3)))
    assert m.degenerate == "empty output of shape (0, 3)"


def test_output_metrics_as_dict_is_strict_json(rng: np.random.Generator) -> None:
    ref = rng.normal(size=(2, 3))
    d = compare("y", ref, ref, scale=0.1).as_dict()
    assert d["snr_db"] == "inf" and d["shape"] == [2, 3] and d["lsb_count"] == 0
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    bad = compare("y", np.ones((2, 3)), np.ones(3)).as_dict()
    assert bad["max_abs"] == "nan" and bad["top1_agreement"] is None


# --- tolerance and report ------------------------------------------------------------------------


def _metric_with_max_rel() -> OutputMetrics:
    ref = np.array([[1.0, -2.0, 4.0, -8.0]])
    return compare("logits", ref, ref + np.array([0.0, 0.0, 0.0, 0.00248]))  # 0.00248 / 8 = 3.1e-4


def test_tolerance_check_messages() -> None:
    m = _metric_with_max_rel()
    assert m.max_rel == pytest.approx(3.1e-4)
    assert Tolerance(max_rel=1e-5).check(m) == ["max_rel 3.1e-04 > 1.0e-05"]
    assert Tolerance(max_rel=1e-3, min_cosine=0.9, min_top1=1.0).check(m) == []
    # precision grows until value and bound read differently
    assert Tolerance(max_rel=3.09e-4).check(m) == ["max_rel 3.10e-04 > 3.09e-04"]
    assert m.cosine < 1.0
    assert Tolerance(min_cosine=1.0).check(m) == ["cosine 0.99999999 < 1.00000000"]


def test_tolerance_lsb_and_top1_checked_only_when_defined() -> None:
    ref = np.array([[1.0, 2.0, 3.0, 4.0]])
    got = ref + np.array([0.0, 0.0, 0.0, 0.75])
    tol = Tolerance(max_lsb=1.0, min_top1=1.0)
    assert tol.check(compare("y", ref, got)) == []  # no scale: lsb not checked
    assert tol.check(compare("y", ref, got, scale=0.25)) == ["lsb 3.0e+00 > 1.0e+00"]
    flipped = compare("y", ref, np.array([[5.0, 2.0, 3.0, 4.0]]))
    assert tol.check(flipped) == ["top1 0.0000 < 1.0000"]
    assert tol.check(compare("y", np.array([[1.0], [2.0]]), np.array([[1.0], [2.0]]))) == []


def test_nan_metric_never_satisfies_a_bound() -> None:
    m = OutputMetrics("y", (2,), 0.0, 0.0, 0.0, None, None, math.nan, math.inf, None, None)
    assert Tolerance(min_cosine=0.99).check(m) == ["cosine is nan (bound >= 0.9900)"]


def _report(tmp_results: tuple[TargetResult, ...]) -> ParityReport:
    return ParityReport(
        model="tiny.onnx",
        results=tmp_results,
        inputs={"source": "seeded", "seed": 0, "shapes": {"x": (2, 4)}, "dtype": np.dtype("float32")},
    )


def _results() -> tuple[TargetResult, TargetResult, TargetResult]:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 10)).astype(np.float32)
    good = TargetResult(
        target="ort-cpu",
        reference="pytorch",
        runtime=RUNTIME,
        outputs=(compare("logits", ref, ref + np.float32(1e-6)),),
        tolerance=Tolerance(max_rel=1e-4, min_cosine=0.999, note="fp32 reassociation only"),
    )
    bad = TargetResult(
        target="litert-cpu",
        reference="pytorch",
        runtime={"runtime": "litert", "version": "1.4.0", "arch": "x86_64", "emulated": False},
        outputs=(_metric_with_max_rel(), compare("hidden", np.zeros((2, 3)), np.zeros((2, 3)))),
        tolerance=Tolerance(max_rel=1e-5),
    )
    crashed = TargetResult(
        target="webgpu",
        reference="pytorch",
        runtime={},
        outputs=(),
        tolerance=Tolerance(max_rel=1e-3),
        error="no WebGPU adapter found",
    )
    return good, bad, crashed


def test_target_and_report_pass_fail() -> None:
    good, bad, crashed = _results()
    assert good.passed and good.violations == []
    assert not bad.passed
    assert bad.violations == [
        "output 'logits': max_rel 3.1e-04 > 1.0e-05",
        "output 'hidden': degenerate: reference is all zeros",
    ]
    assert not crashed.passed and crashed.violations == ["error: no WebGPU adapter found"]
    # an error fails the target even when its outputs are fine
    assert not TargetResult("t", "r", {}, good.outputs, good.tolerance, error="timeout").passed
    # a target that compared nothing does not pass vacuously
    empty = TargetResult("t", "r", {}, (), Tolerance())
    assert not empty.passed and empty.violations == ["no outputs were compared"]

    assert _report((good,)).passed
    assert not _report((good, bad)).passed
    assert not _report((good, crashed)).passed
    assert not _report(()).passed


def test_to_json_round_trips_and_writes_atomically(tmp_path: Path) -> None:
    report = _report(_results())
    out = tmp_path / "parity.json"
    text = report.to_json(out)
    assert out.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["parity.json"]  # no temp file left behind
    data = json.loads(text)
    assert data == report.as_dict() == json.loads(report.to_json())
    assert data["model"] == "tiny.onnx" and data["passed"] is False
    assert data["inputs"] == {"source": "seeded", "seed": 0, "shapes": {"x": [2, 4]}, "dtype": "float32"}
    good, bad, crashed = data["results"]
    assert good["passed"] is True and good["runtime"]["provider"] == "CPUExecutionProvider"
    assert good["tolerance"]["note"] == "fp32 reassociation only"
    assert bad["outputs"][1]["degenerate"] == "reference is all zeros"
    assert bad["outputs"][1]["max_rel"] == 0.0 and bad["outputs"][1]["snr_db"] == "inf"
    assert crashed["error"] == "no WebGPU adapter found" and crashed["outputs"] == []
    # overwriting an existing report works the same way
    report.to_json(out)
    assert json.loads(out.read_text(encoding="utf-8")) == data


def test_format_table() -> None:
    good, bad, crashed = _results()
    table = _report((good, bad, crashed)).format_table()
    lines = table.splitlines()
    assert lines[0] == "parity: tiny.onnx"
    assert lines[1].split() == [
        "target",
        "reference",
        "output",
        "max_abs",
        "max_rel",
        "LSB",
        "cosine",
        "SNR",
        "dB",
        "top-1",
        "result",
    ]
    rows = {(ln.split()[0], ln.split()[2]): ln.split() for ln in lines[3:7]}
    assert rows[("ort-cpu", "logits")][-1] == "PASS"
    assert rows[("ort-cpu", "logits")][5] == "-"  # no scale: no LSB
    assert rows[("ort-cpu", "logits")][-2] == "1.000"
    assert rows[("litert-cpu", "logits")][-1] == "FAIL"
    assert rows[("litert-cpu", "hidden")][-1] == "FAIL"
    assert rows[("webgpu", "-")][-1] == "FAIL"
    assert "  litert-cpu: output 'logits': max_rel 3.1e-04 > 1.0e-05" in lines
    assert "  litert-cpu: output 'hidden': degenerate: reference is all zeros" in lines
    assert "  webgpu: error: no WebGPU adapter found" in lines
    assert "  ort-cpu: fp32 reassociation only" in lines
    assert (
        "  ort-cpu: onnxruntime 1.20.1, provider CPUExecutionProvider, arch aarch64, cpu cortex-a76, emulated"
        in lines
    )
    assert "  litert-cpu: litert 1.4.0, arch x86_64, native" in lines
    assert "  webgpu: (runtime not recorded)" in lines
    assert lines[-1] == "FAIL: 1/3 targets passed"
    assert _report((good,)).format_table().splitlines()[-1] == "PASS: 1/1 targets passed"
