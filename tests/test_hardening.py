"""Issue 12: every bad input ends in a clear error, never a crash or a silent bad file.

One test (or one parametrized group) per numbered finding of the adversarial review; each
failed before its fix. The property-based fuzz over random layer configurations is in
``test_hardening_fuzz.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import bitnet_export as bx
from bitnet_export._io import TMP_TAG
from bitnet_export.cli import EXIT_INTERNAL, EXIT_USAGE, main
from bitnet_export.errors import ExportError, QuantConfigError
from bitnet_export.layers.bitnet import BitNetLayer
from runtimes import make_adapter
from runtimes._worker import WorkerProcess
from runtimes.protocol import RuntimeAdapterError


def _mlp(seed: int = 0, d_in: int = 16, hidden: int = 32, d_out: int = 8, **kw) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(BitNetLayer(d_in, hidden, **kw), nn.ReLU(), BitNetLayer(hidden, d_out, **kw)).eval()


def _static(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    for m in model.modules():
        if isinstance(m, BitNetLayer):
            m.configure_quantization(activation_mode="static")
    return bx.calibrate(model, [batch])


def _run(target: str, path: Path, name: str, x: np.ndarray) -> np.ndarray:
    adapter = make_adapter(target)
    adapter.load(path)
    return next(iter(adapter.run({name: x}).values()))


# ---------------------------------------------------------------- 1: huge but finite ranges
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_1_infinite_static_scale_is_refused_naming_layer_and_fix(tmp_path, fmt):
    """A finite range of +-3e38 has width 6e38 > float32 max: the scale was inf in the file,
    and LiteRT segfaulted in verify (exit 139)."""
    model = _mlp()
    with torch.no_grad():  # tiny weights: the outputs stay finite, only the input range is huge
        model[0].weight.mul_(1e-32)
    export = bx.export_onnx if fmt == "onnx" else bx.export_tflite
    with pytest.raises(QuantConfigError, match=r"'0'.*input range.*static scale inf.*Fix:"):
        _static(model, torch.tensor([[3e38] * 8 + [-3e38] * 8]))
        export(model, torch.randn(1, 16), tmp_path / f"huge.{fmt}")
    assert not any(tmp_path.iterdir())  # no file, no temp left


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_1_infinite_outputs_are_refused_by_the_preflight(tmp_path, fmt):
    model = _mlp()
    export = bx.export_onnx if fmt == "onnx" else bx.export_tflite
    with pytest.raises(ExportError, match=r"0\.output_observer.*NaN/Inf.*fix"):
        _static(model, torch.tensor([[3e38] * 8 + [-3e38] * 8]))
        export(model, torch.randn(1, 16), tmp_path / f"huge.{fmt}")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------- 2: only regular files are written
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_2_symlink_and_fifo_targets_are_refused_untouched(tmp_path, fmt, kind):
    model, x = _mlp(), torch.randn(2, 16)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / f"out.{fmt}"
    if kind == "symlink":
        target.symlink_to(victim)
    else:
        os.mkfifo(target)
    export = bx.export_onnx if fmt == "onnx" else bx.export_tflite
    with pytest.raises(ExportError, match=r"symlink|FIFO"):
        export(model, x, target)
    assert victim.read_text() == "keep me"
    assert target.is_symlink() if kind == "symlink" else target.is_fifo()


def test_2_llm_folder_target_that_is_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep").write_text("x")
    link = tmp_path / "model_dir"
    link.symlink_to(real)
    with pytest.raises(ExportError, match="symlink"):
        bx.export_llm(nn.Linear(2, 2), link, target="ort-genai", max_seq_len=8)
    assert link.is_symlink() and (real / "keep").read_text() == "x"


# ------------------------------------------------------------------ 3: tiny activations
@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_3_dynamic_tflite_is_exact_at_tiny_activations(tmp_path, weights):
    torch.manual_seed(0)
    model = nn.Sequential(BitNetLayer(64, 16, precision=8 if weights == "int8" else 4)).eval()
    x = (torch.randn(4, 64) * 1e-6).numpy()  # every row below eps = 1e-5
    res = bx.export_tflite(model, torch.from_numpy(x[:1]), tmp_path / "t.tflite", weights=weights)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for target in ("litert-builtin", "litert-reference"):
        got = _run(target, res.path, res.input_names[0], x)
        # before the fix: 2.9e-2 relative (the kernel's row scale had no eps floor)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), target


def test_3_static_layer_whose_bias_overflows_int32_is_refused(tmp_path):
    model = _mlp()
    with torch.no_grad():  # small weights (scale ~1e-4) and a bias of 0.2
        model[0].weight.mul_(1e-3)
        model[0].bias.fill_(0.2)
    model = _static(model, torch.randn(64, 16) * 2e-6)
    with pytest.raises(ExportError, match=r"'0'.*int32.*Fix: raise the layer's eps"):
        bx.export_tflite(model, torch.randn(1, 16) * 2e-6, tmp_path / "s.tflite")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ 4: degenerate examples
@pytest.mark.parametrize(
    ("example", "match"),
    [
        (torch.randn(0, 16), "batch 0"),
        (torch.randn(2, 16, dtype=torch.float64), r"float64.*\.float\(\)"),
        (torch.randn(2, 16, dtype=torch.float16), r"float16.*\.float\(\)"),
        (torch.randn(2, 16, dtype=torch.bfloat16), r"bfloat16.*\.float\(\)"),
    ],
)
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_4_degenerate_example_inputs_are_refused(tmp_path, example, match, fmt):
    export = bx.export_onnx if fmt == "onnx" else bx.export_tflite
    with pytest.raises(ExportError, match=match):
        export(_mlp(), example, tmp_path / f"m.{fmt}")
    assert not any(tmp_path.iterdir())


def test_4_forward_returning_none_is_refused(tmp_path):
    class Silent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = BitNetLayer(16, 8)

        def forward(self, x):
            self.fc(x)

    with pytest.raises(ExportError, match="no tensor"):
        bx.export_onnx(Silent().eval(), torch.randn(2, 16), tmp_path / "n.onnx")
    assert not any(tmp_path.iterdir())


def test_4_integer_inputs_export_and_match(tmp_path):
    """An int64 input that the model casts itself is legitimate: exported, not refused."""
    x = torch.randint(-3, 4, (4, 16))
    res = bx.export_onnx(_mlp(), x, tmp_path / "i.onnx")
    assert bx.verify(_mlp(), x, res.path, targets=["ort-cpu"]).passed


# ------------------------------------------------------ 5: killed exports, external data
def test_5_leftovers_of_a_killed_export_are_swept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale_dir = tmp_path / f".m.onnx.{TMP_TAG}-{dead.pid}-abc123"
    stale_dir.mkdir()
    (stale_dir / "m.onnx").write_bytes(b"\0" * 1000)
    stale_file = tmp_path / f".m.onnx.{TMP_TAG}-{dead.pid}-def456"
    stale_file.write_bytes(b"\0")
    live = tmp_path / f".m.onnx.{TMP_TAG}-{os.getpid()}-live"  # a running writer's: kept
    live.mkdir()
    orphan = tmp_path / "m.onnx.0123456789abcdef.data"  # data of a model that was never renamed
    orphan.write_bytes(b"\0" * 10)
    res = bx.export_onnx(_mlp(), torch.randn(2, 16), tmp_path / "m.onnx", external_data=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([live.name, "m.onnx", res.external_data.name])


def test_5_model_and_external_data_are_replaced_together(tmp_path):
    path = tmp_path / "m.onnx"
    first = bx.export_onnx(_mlp(0), torch.randn(2, 16), path, external_data=True)
    second = bx.export_onnx(_mlp(1), torch.randn(2, 16), path, external_data=True)
    assert first.external_data != second.external_data  # content-named: never overwritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", second.external_data.name])
    loaded = onnx.load(str(path))  # the model names exactly the data file beside it
    locations = {e.value for t in loaded.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations <= {second.external_data.name}
    assert bx.verify(_mlp(1), torch.randn(2, 16), path, targets=["ort-cpu"]).passed


# ------------------------------------------------------------- 6: all-zero binary weights
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_6_zero_weight_rows_load_on_xnnpack(tmp_path, mode):
    torch.manual_seed(0)
    layer = BitNetLayer(16, 8, precision=1)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[3:].normal_()  # rows 0..2: mean|w| = 0, scale 0
    model = nn.Sequential(layer).eval()
    if mode == "static":
        _static(model, torch.randn(64, 16))
    x = torch.randn(2, 16)
    res = bx.export_tflite(model, x, tmp_path / "z.tflite")
    report = bx.verify(model, x, res.path, targets=["litert-builtin", "litert-xnnpack", "litert-reference"])
    assert report.passed, report.format_table()


# ------------------------------------------------------------------ 7: no raw tracebacks
def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


SPEC = """\
import torch
from torch import nn
from bitnet_export.layers.bitnet import BitNetLayer

def make():
    torch.manual_seed(0)
    return nn.Sequential(BitNetLayer(16, 8)).eval(), torch.randn(2, 16)
"""


@pytest.fixture
def spec(tmp_path) -> str:
    path = tmp_path / "spec.py"
    path.write_text(SPEC)
    return f"{path}:make"


def test_7_bad_metadata_json_is_a_usage_error(tmp_path, spec, capsys):
    model = nn.Sequential(BitNetLayer(16, 8)).eval()
    res = bx.export_onnx(model, torch.randn(2, 16), tmp_path / "m.onnx")
    proto = onnx.load(str(res.path))
    for prop in proto.metadata_props:
        if prop.key == "bitnet_export.layers":
            prop.value = "{not json"
    onnx.save(proto, str(res.path))
    code, err = _cli(["verify", str(res.path), spec, "--target", "ort-cpu"], capsys)
    assert code == EXIT_USAGE and "metadata cannot be read" in err and "re-export" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\x17" + np.random.default_rng(0).bytes(255), "not a torch.save file"),  # random bytes
        (b"PK\x03\x04junk", "cannot read it"),  # a truncated zip
    ],
)
def test_7_empty_or_random_checkpoints_are_named(tmp_path, spec, capsys, content, match):
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(content)
    code, err = _cli(["export", spec, "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.onnx")], capsys)
    assert code == EXIT_USAGE and match in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_7_extra_state_of_the_wrong_type_is_named(tmp_path, spec, capsys):
    model = nn.Sequential(BitNetLayer(16, 8))
    state = model.state_dict()
    state["0._extra_state"] = {"quant_config": "precision=8"}
    torch.save(state, tmp_path / "c.pt")
    code, err = _cli(
        ["export", spec, "--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "o.onnx")], capsys
    )
    assert code == EXIT_USAGE and "quant_config" in err and "Fix:" in err


def test_7_an_unanticipated_exception_is_an_internal_error(tmp_path, capsys, monkeypatch):
    import bitnet_export.cli as cli

    def broken(path):  # a bug deep in the pipeline, not a user error
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "inspect_onnx", broken)
    res = bx.export_onnx(_mlp(), torch.randn(2, 16), tmp_path / "m.onnx")
    code, err = _cli(["inspect", str(res.path)], capsys)
    assert code == EXIT_INTERNAL and "internal error in 'inspect'" in err and "ZeroDivisionError" in err


def test_7_sigint_while_importing_exits_130_without_traceback(tmp_path):
    """Ctrl-C while the CLI imports torch: a fake ``torch`` first on the path raises it there."""
    (tmp_path / "torch.py").write_text("raise KeyboardInterrupt\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", "from bitnet_export.__main__ import run; run()", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 130 and "interrupted" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ 8: threads, no mutation
def test_8_threads_exporting_one_model_leave_it_untouched(tmp_path):
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    errors: list[BaseException] = []

    def job(i: int) -> None:
        try:
            bx.export_onnx(model, torch.randn(2, 16), tmp_path / f"t{i}.onnx")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    res = bx.export_tflite(model, torch.randn(2, 16), tmp_path / "later.tflite")  # still exportable
    assert bx.verify(model, torch.randn(2, 16), res.path, targets=["litert-reference"]).passed


# ----------------------------------------------------------------------- 9: 1-D inputs
@pytest.mark.parametrize("target", ["litert-builtin", "litert-xnnpack", "litert-reference"])
def test_9_one_dimensional_input_keeps_its_shape_in_tflite(tmp_path, target):
    model = nn.Sequential(BitNetLayer(16, 8)).eval()
    x = torch.randn(16)
    res = bx.export_tflite(model, x, tmp_path / "v.tflite")
    got = _run(target, res.path, res.input_names[0], x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == ref.shape == (8,)
    assert bx.verify(model, x, res.path, targets=[target]).passed


# ---------------------------------------------------- 10: FIFOs and empty files are refused
def test_10_verify_of_a_fifo_is_refused_without_blocking(tmp_path, spec):
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet_export", "verify", str(fifo), spec],
        capture_output=True,
        text=True,
        timeout=120,  # before the fix: blocked forever in open()
    )
    assert proc.returncode == EXIT_USAGE and "not a regular file" in proc.stderr
    with pytest.raises(ExportError, match="not a regular file"):
        bx.verify(nn.Sequential(BitNetLayer(16, 8)), torch.randn(2, 16), fifo)


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_10_empty_file_is_refused(tmp_path, spec, capsys, command):
    empty = tmp_path / "m.onnx"
    empty.write_bytes(b"")
    argv = ["inspect", str(empty)] if command == "inspect" else ["verify", str(empty), spec]
    code, err = _cli(argv, capsys)
    assert code == EXIT_USAGE and "empty" in err


# -------------------------------------------------- 11: broken runtime environments, named
def test_11_worker_dying_at_start_names_command_stderr_and_fix(tmp_path):
    script = tmp_path / "w.py"
    script.write_text(
        "import sys\nprint('libfoo.so: cannot open shared object', file=sys.stderr)\nsys.exit(1)\n"
    )
    worker = WorkerProcess(
        script,
        lambda name: [sys.executable, name],
        dict(os.environ),
        name="arm64-a53",
        where="test worker",
        prefix="bitnet-test-",
        fix="rebuild with `make arm-env`",
    )
    try:
        with pytest.raises(RuntimeAdapterError) as err:
            worker.start("arm64-a53", timeout_s=60)
    finally:
        worker.close()
    msg = str(err.value)
    assert "exited with status 1" in msg and "command:" in msg and "w.py" in msg
    assert "libfoo.so" in msg and "Fix: rebuild with `make arm-env`" in msg


def test_11_gpu_adapter_without_a_driver_names_make_gpu_env(tmp_path):
    from runtimes.gpu.litert_gpu import LiteRtGpuAdapter

    adapter = LiteRtGpuAdapter(icd=tmp_path / "missing_icd.json")
    res = bx.export_tflite(
        nn.Sequential(BitNetLayer(16, 8)).eval(), torch.randn(1, 16), tmp_path / "g.tflite"
    )
    with pytest.raises(RuntimeAdapterError, match="make gpu-env"):
        adapter.load(res.path)


# ---------------------------------------------------- 12: hybrid INT4 at width 4096
def test_12_hybrid_int4_at_width_4096_holds_the_builtin_bound(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        BitNetLayer(4096, 256, precision=4), nn.ReLU(), BitNetLayer(256, 16, precision=4)
    ).eval()
    x = torch.randn(4, 4096)
    res = bx.export_tflite(model, x[:1], tmp_path / "w.tflite", weights="int4")
    for inputs in (x, None):  # random batch-4 inputs, and the seeded ones
        report = bx.verify(model, x[:1], res.path, targets=["litert-builtin"], inputs=inputs)
        assert report.passed, report.format_table()
        assert report.results[0].outputs[0].max_rel <= 1e-5


@pytest.mark.parametrize("precision", [8, 1.58])
def test_12_xnnpack_hybrid_error_scales_with_x_times_w_not_y(tmp_path, precision):
    """The true XNNPACK bound (parity/tolerances.py): its asymmetric row quantization and
    BitNet's absmax/127 one each round x by at most half a step, and step <= absmax/127, so an
    output is off by at most ``absmax(x_row) / 127 * sum |w_deq|`` of its weight row. A single
    output that cancels to near zero can exceed ``max_rel`` 5e-2 while keeping this bound."""
    torch.manual_seed(0)
    layer = BitNetLayer(64, 1, precision=precision, bias=False)
    model = nn.Sequential(layer).eval()
    codes, scale = layer.quantize_weight()
    w_l1 = float((codes * scale).abs().sum())
    res = bx.export_tflite(model, torch.randn(1, 64), tmp_path / "one.tflite")
    for seed in range(8):
        x = torch.randn(6, 64, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = model(x).numpy()
        got = _run("litert-xnnpack", res.path, res.input_names[0], x.numpy())
        bound = x.abs().amax(dim=1, keepdim=True).numpy() / 127 * w_l1
        assert np.all(np.abs(got - ref) <= bound * (1 + 1e-5)), (seed, np.abs(got - ref) / bound)
