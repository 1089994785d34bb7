"""The ``bitnet-export`` command line, end to end: export, verify, inspect, specs, checkpoints.

Exports are the slow part (~3 s each), so one module-scoped export of a tiny 16->32->4 BitNet MLP
is shared; only the option and checkpoint tests export again.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from bitnet_export.backends.onnx.inspect import inspect_onnx
from bitnet_export.cli import load_spec, main

SPEC_TEMPLATE = """\
import torch
from torch import nn

from bitnet_export.layers.bitnet import BitNetLayer


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = BitNetLayer(16, 32)
        self.fc2 = BitNetLayer(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def make():
    torch.manual_seed({seed})
    return MLP().eval(), torch.randn(8, 16)
"""


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Model A (seed 0) and model B (seed 1): same architecture, different weights."""
    folder = tmp_path_factory.mktemp("specs")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        path = folder / f"spec_{name}.py"
        path.write_text(SPEC_TEMPLATE.format(seed=seed))
        out[name] = f"{path}:make"
    return out


@pytest.fixture(scope="module")
def exported(specs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``bitnet-export export SPEC_A --out a.onnx`` (int8, dynamic batch) with its stdout/stderr."""
    path = tmp_path_factory.mktemp("export") / "a.onnx"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["export", specs["a"], "--format", "onnx", "--weights", "int8", "--out", str(path)])
    return {"code": code, "path": path, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def _script() -> Path:
    script = Path(sys.executable).parent / "bitnet-export"
    if not script.exists():
        found = shutil.which("bitnet-export")
        if found is None:
            pytest.skip("the bitnet-export console script is not installed (pip install -e .)")
        script = Path(found)
    return script


# ----------------------------------------------------------------------------------------- export
def test_export_writes_a_checked_file_and_a_summary(exported):
    assert exported["code"] == 0
    path = exported["path"]
    assert isinstance(path, Path) and path.is_file()
    onnx.checker.check_model(str(path), full_check=True)
    assert f"wrote {path}" in exported["stdout"]
    assert "fc1" in exported["stdout"] and "fc2" in exported["stdout"]
    assert "step 1/3" in exported["stderr"]  # progress goes to stderr


def test_export_options_reach_the_file(specs, tmp_path, capsys):
    out = tmp_path / "nbits.onnx"
    code = main(["export", specs["a"], "--weights", "matmulnbits", "--no-dynamic-batch", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    onnx.checker.check_model(str(out), full_check=True)
    info = inspect_onnx(out)
    assert {"domain": "com.microsoft", "op_type": "MatMulNBits", "count": 2} in info["ops"]
    assert info["inputs"][0]["shape"] == [8, 16]  # batch fixed by --no-dynamic-batch
    assert info["bitnet_export"]["weights"] == "matmulnbits"


def test_export_float_kernels(specs, tmp_path, capsys):
    out = tmp_path / "webgpu.onnx"
    code = main(["export", specs["a"], "--weights", "int4", "--kernels", "float", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "weights=int4, kernels=float, opset 21" in printed.out
    info = inspect_onnx(out)
    ops = {op["op_type"] for op in info["ops"]}
    assert "MatMul" in ops and not ops & {"QuantizeLinear", "MatMulInteger", "Max"}, ops
    assert info["bitnet_export"]["kernels"] == "float"
    tfl = tmp_path / "a.tflite"
    assert main(["export", specs["a"], "--format", "tflite", "--kernels", "float", "--out", str(tfl)]) == 2
    assert "--kernels apply to --format onnx only" in capsys.readouterr().err
    assert not tfl.exists()


def test_api_error_exits_2_without_traceback_or_file(specs, tmp_path, capsys):
    out = tmp_path / "int2.onnx"
    code = main(["export", specs["a"], "--weights", "int2", "--opset", "21", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "needs opset >= 25" in err
    assert "Traceback" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------------------- verify
def test_verify_passes_and_writes_json(exported, specs, tmp_path, capsys):
    report = tmp_path / "reports" / "a.json"
    code = main(["verify", str(exported["path"]), specs["a"], "--target", "ort-cpu", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"verifying {exported['path']} on ort-cpu" in err
    assert "PASS: 1/1 targets passed" in out
    data = json.loads(report.read_text())
    assert data["passed"] is True
    assert data["inputs"]["seed"] == 0
    assert [p.name for p in report.parent.iterdir()] == ["a.json"]  # no temporary file left


def test_verify_against_another_model_fails_with_1(exported, specs, capsys):
    code = main(["verify", str(exported["path"]), specs["b"], "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out


def test_verify_missing_file_exits_2(specs, tmp_path, capsys):
    code = main(["verify", str(tmp_path / "missing.onnx"), specs["a"]])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing.onnx not found" in err and "bitnet-export export" in err


# ---------------------------------------------------------------------------------------- inspect
def test_inspect_lists_ops_layers_sizes_and_metadata(exported, capsys):
    assert main(["inspect", str(exported["path"])]) == 0
    out = capsys.readouterr().out
    assert "MatMulInteger" in out
    assert "ai.onnx 21" in out
    for name in ("fc1:", "fc2:", "fc1.weight_q", "fc2.weight_q"):
        assert name in out
    assert "fc1: 16->32  weight ternary 1.58-bit" in out
    assert "weights: int8" in out
    assert f"{exported['path'].stat().st_size} B .onnx" in out


def test_inspect_reads_external_data_sizes_without_loading(exported, tmp_path, capsys):
    proto = onnx.load(str(exported["path"]))
    path = tmp_path / "ext.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=100)
    data = tmp_path / "ext.onnx.data"
    info = inspect_onnx(path)
    assert info["total_bytes"] == path.stat().st_size + data.stat().st_size
    weights = {t["name"]: t for g in info["groups"] for t in g["initializers"]}
    assert weights["fc1.weight_q"]["bytes"] == 16 * 32
    assert weights["fc1.weight_q"]["location"] == "external:ext.onnx.data"
    assert weights["fc1.bias"]["bytes"] == 32 * 4
    assert [g["name"] for g in info["groups"]] == ["fc1", "(graph)", "fc2"]
    data.write_bytes(b"")  # sizes come from the protos, never from reading the data
    assert main(["inspect", str(path)]) == 0
    assert "external:ext.onnx.data" in capsys.readouterr().out


def test_inspect_not_onnx_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    assert main(["inspect", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- model specs
BAD_FILES = {
    "wrong_return.py": "def make():\n    return 3\n",
    "wrong_inputs.py": "import torch\n\ndef make():\n    return torch.nn.Linear(2, 2), [1, 2]\n",
    "raises.py": "def make():\n    raise ValueError('no data here')\n",
    "syntax.py": "def make(:\n",
}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "is not 'module:factory'"),
        ("bitnet_export.zoo.digits:", "is not 'module:factory'"),
        ("no_such_module_xyz:make", "module 'no_such_module_xyz' not found"),
        ("bitnet_export.zoo.digits:nope", "has no attribute 'nope'; it defines: "),
        ("{tmp}/missing.py:make", "missing.py not found"),
        ("{tmp}/wrong_return.py:make", "must return (model, example_inputs)"),
        ("{tmp}/wrong_inputs.py:make", "example_inputs is a list of (int, int)"),
        ("{tmp}/raises.py:make", "raised ValueError: no data here"),
        ("{tmp}/syntax.py:make", "raised SyntaxError"),
    ],
)
def test_bad_spec_exits_2_naming_spec_and_fix(tmp_path, capsys, spec, message):
    for name, text in BAD_FILES.items():
        (tmp_path / name).write_text(text)
    spec = spec.format(tmp=tmp_path)
    code = main(["export", spec, "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"model spec {spec!r}" in err
    assert message in err
    assert not (tmp_path / "x.onnx").exists()


def test_argparse_errors_return_instead_of_exiting(capsys):
    assert main([]) == 2
    assert main(["export", "x:y"]) == 2  # --out is required
    assert main(["export", "x:y", "--out", "o.onnx", "--format", "tflite"]) == 2
    assert main(["--version"]) == 0
    assert "bitnet-export" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(specs, tmp_path, capsys):
    model, _ = load_spec(specs["a"])
    torch.manual_seed(7)
    with torch.no_grad():
        for p in (model.fc1.weight, model.fc2.weight, model.fc1.bias, model.fc2.bias):
            p.copy_(torch.randn_like(p) * 0.2)
    ckpt = tmp_path / "model.pt"
    torch.save(model.state_dict(), ckpt)  # includes BitNetLayer's _extra_state config dict
    out = tmp_path / "ckpt.onnx"

    assert main(["export", specs["a"], "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert main(["verify", str(out), specs["a"], "--checkpoint", str(ckpt)]) == 0
    # Without the checkpoint the spec's own weights do not match the file: the checkpoint was used.
    assert main(["verify", str(out), specs["a"]]) == 1
    assert f"with checkpoint {ckpt}" in capsys.readouterr().err


def test_checkpoint_errors_exit_2(specs, tmp_path, capsys):
    wrong = tmp_path / "wrong.pt"
    torch.save({"other.weight": torch.zeros(2)}, wrong)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"fc1.weight": torch.zeros(2)}, "opt": object}, pickled)
    cases = [
        (tmp_path / "missing.pt", "not found"),
        (wrong, "does not fit the model of spec"),
        (pickled, "torch.load(weights_only=True) refuses"),
    ]
    for ckpt, message in cases:
        code = main(["export", specs["a"], "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.onnx")])
        err = capsys.readouterr().err
        assert code == 2, ckpt
        assert message in err and str(ckpt) in err
        assert "Traceback" not in err


# -------------------------------------------------------------------------------- entry points
def test_installed_script_exits_with_mains_code(exported, specs):
    proc = subprocess.run(
        [str(_script()), "verify", str(exported["path"]), specs["b"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "FAIL" in proc.stdout
    assert "verifying" in proc.stderr


def test_python_dash_m(exported):
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet_export", "inspect", str(exported["path"])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=exported["path"].parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "MatMulInteger" in proc.stdout


def test_tflite_export_and_one_report_over_onnx_and_tflite(exported, specs, tmp_path, capsys):
    tfl = tmp_path / "a.tflite"
    assert main(["export", specs["a"], "--format", "tflite", "--weights", "int8", "--out", str(tfl)]) == 0
    assert tfl.read_bytes()[4:8] == b"TFL3"
    assert main(["export", specs["a"], "--format", "tflite", "--opset", "21", "--out", str(tfl)]) == 2
    capsys.readouterr()
    report = tmp_path / "both.json"
    code = main(["verify", str(exported["path"]), str(tfl), specs["a"], "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    data = json.loads(report.read_text())
    targets = [r["target"] for r in data["results"]]
    # ORT on the ONNX file, every LiteRT kernel set on the int8 TFLite file, in one report
    assert targets == [
        "ort-cpu [a.onnx]",
        "litert-builtin [a.tflite]",
        "litert-reference [a.tflite]",
        "litert-xnnpack [a.tflite]",
        "litert-compiled-cpu [a.tflite]",
    ]
    assert data["passed"] is True
    assert "ties rounded away from zero" in out
    assert main(["inspect", str(tfl)]) == 0
    out, _ = capsys.readouterr()
    assert "FULLY_CONNECTED" in out and "int8" in out and "B .tflite" in out
