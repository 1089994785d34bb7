"""The main job, end to end, on the default embedded example (digits).

train (float and BitNet-ternary QAT) -> export ONNX in every weight mode -> verify on ONNX
Runtime against PyTorch on the test split -> summary table and JSON reports.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bitnet_export.api import export_onnx, verify
from bitnet_export.training import calibrate, configure_model
from bitnet_export.zoo.digits import DigitsMLP, accuracy, load_digits, train
from runtimes.ort_cpu import OrtCpuAdapter

__all__ = ["DemoRow", "run_demo"]

#: (label, activation mode, weight storage) exported by the demo.
MODES = (
    ("int8 weights, per-token activations", "dynamic", "int8"),
    ("int4 weights, per-token activations", "dynamic", "int4"),
    ("int2 weights, per-token activations", "dynamic", "int2"),
    ("MatMulNBits 2-bit (ORT contrib)", "dynamic", "matmulnbits"),
    ("int8 weights, static int8 activations", "static", "int8"),
)


@dataclass(frozen=True)
class DemoRow:
    """One exported file of the demo and its parity result."""

    label: str
    path: Path
    size_bytes: int
    max_rel: float
    top1_agreement: float
    runtime_accuracy: float
    passed: bool


def run_demo(out_dir: Path = Path("out/demo"), epochs: int = 60, seed: int = 0) -> list[DemoRow]:
    """Run the demo; files and JSON reports go to ``out_dir``.

    Returns:
        One :class:`DemoRow` per exported file (``all(r.passed ...)`` is the verdict).
    """
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    print("step 1/3  train on scikit-learn's bundled 8x8 digits (float MLP vs BitNet ternary QAT)")
    data = load_digits(seed=seed)
    accs = {}
    models = {}
    for name, bitnet in (("float", False), ("bitnet", True)):
        torch.manual_seed(seed)
        models[name] = train(DigitsMLP(bitnet=bitnet), data, epochs=epochs, seed=seed)
        accs[name] = accuracy(models[name], data.x_test, data.y_test)
    print(f"          float MLP test accuracy {accs['float'] * 100:.2f}%")
    print(f"          BitNet ternary MLP      {accs['bitnet'] * 100:.2f}%")

    print(f"step 2/3  export ONNX ({len(MODES)} modes) and verify on ONNX Runtime vs PyTorch")
    rows = []
    for label, mode, weights in MODES:
        model = copy.deepcopy(models["bitnet"])
        if mode == "static":
            configure_model(model, activation_mode="static")
            calibrate(model, [data.x_train])
        tag = f"digits_{mode}_{weights}"
        res = export_onnx(model, data.x_test[:1], out_dir / f"{tag}.onnx", weights=weights)
        report = verify(model, data.x_test[:1], res.path, inputs=data.x_test)
        report.to_json(out_dir / f"{tag}.parity.json")
        print(report.format_table())
        result = report.results[0]
        max_rel = result.outputs[0].max_rel if result.outputs else float("nan")
        top1 = (result.outputs[0].top1_agreement or 0.0) if result.outputs else 0.0
        ort = OrtCpuAdapter()
        ort.load(res.path)
        logits = ort.run({res.input_names[0]: data.x_test.numpy()})[res.output_names[0]]
        rt_acc = float((torch.from_numpy(logits).argmax(-1) == data.y_test).float().mean())
        rows.append(DemoRow(label, res.path, res.size_bytes, max_rel, top1, rt_acc, report.passed))

    print("step 3/3  summary")
    header = f"{'mode':<40} {'file':>9} {'max rel err':>11} {'top-1 agr':>9} {'ORT acc':>8}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.label:<40} {r.size_bytes / 1024:>7.1f}KB {r.max_rel:>11.2e} {r.top1_agreement * 100:>8.1f}% "
            f"{r.runtime_accuracy * 100:>7.2f}%  {'PASS' if r.passed else 'FAIL'}"
        )
    print(f"files and JSON reports in {out_dir}/ ({time.perf_counter() - t0:.1f} s)")
    return rows
