"""The main job, end to end, on the default embedded example (digits).

train (float and BitNet-ternary QAT) -> export ONNX and TFLite in every weight mode -> verify
each file on every runtime that can run it (ONNX Runtime; LiteRT builtin/reference/XNNPACK)
against PyTorch on the test split -> the zoo's architectures (a tiny BitNet decoder LM, a
MobileNet-style CNN) exported to ONNX int2 and TFLite hybrid and verified the same way ->
the example language model (a tiny BitNet LM trained with QAT on Python's standard library,
shipped in the package) exported for onnxruntime-genai and LiteRT-LM, its greedy continuations
printed from each runtime and checked token for token against PyTorch -> summary table and
JSON reports. Where a Vulkan device and
the ``ort-webgpu`` environment exist (``make gpu-env``: SwiftShader, or a real GPU), two more
files run on the GPU adapters (``ort-webgpu``, ``litert-gpu``); otherwise the demo says why not.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bitnet_export._io import atomic_write_text
from bitnet_export.api import export_onnx, export_tflite, verify
from bitnet_export.parity.engine import default_targets
from bitnet_export.training import calibrate, configure_model
from bitnet_export.zoo import cnn, transformer
from bitnet_export.zoo.digits import DigitsMLP, accuracy, load_digits, train
from runtimes import make_adapter

__all__ = ["DemoRow", "run_demo"]

#: (label, format, activation mode, weight storage) exported by the demo.
MODES = (
    ("ONNX int8 weights, per-token acts", "onnx", "dynamic", "int8"),
    ("ONNX int4 weights, per-token acts", "onnx", "dynamic", "int4"),
    ("ONNX int2 weights, per-token acts", "onnx", "dynamic", "int2"),
    ("ONNX MatMulNBits 2-bit", "onnx", "dynamic", "matmulnbits"),
    ("ONNX int8, static int8 acts", "onnx", "static", "int8"),
    ("TFLite hybrid int8 (per-token)", "tflite", "dynamic", "int8"),
    ("TFLite hybrid int2 (per-token)", "tflite", "dynamic", "int2"),
    ("TFLite full-integer int8", "tflite", "static", "int8"),
)
#: (label, format, activation mode, weight storage, GPU target): ONNX with kernels="float".
GPU_MODES = (
    ("GPU: ONNX int2 float kernels (WebGPU)", "onnx", "dynamic", "int2", "ort-webgpu"),
    ("GPU: TFLite full-integer int8", "tflite", "static", "int8", "litert-gpu"),
)
#: The zoo's architectures: (label, file tag, factory), each exported in ARCH_MODES.
ARCH_MODELS = (
    ("tiny BitNet LM", "tiny_lm", transformer.factory),
    ("mobile CNN", "mobile_cnn", cnn.factory),
)
#: (label, format, weight storage) for ARCH_MODELS (per-token activations).
ARCH_MODES = (("ONNX int2", "onnx", "int2"), ("TFLite hybrid int8", "tflite", "int8"))


def _gpu_unavailable() -> str | None:
    """Why the GPU rows cannot run here, or None."""
    from runtimes.gpu.ort_env import BUILD_COMMAND, find_site
    from runtimes.gpu.vulkan import unavailable_reason

    reason = unavailable_reason()
    if reason is None and find_site() is None:
        reason = f"the onnxruntime-webgpu environment is not built ({BUILD_COMMAND})"
    return reason


@dataclass(frozen=True)
class DemoRow:
    """One exported file of the demo and its parity result."""

    label: str
    path: Path
    size_bytes: int
    max_rel: float
    top1_agreement: float
    runtime_accuracy: float | None  # digits rows: accuracy of the runtime's logits on the test split
    passed: bool


#: prompts of the language-model step (the model was trained on Python's standard library).
#: Their greedy paths have no near-tie (PyTorch's top-1 / top-2 logit gap >= 0.1 on all 32
#: steps): at a near-tie the token is decided by float rounding before a per-token quantizer,
#: which no two runtimes share bit for bit ("    for i in range(" has a 0.0055 gap at step 0,
#: and LiteRT picks the runner-up there; the report names such a step and its margin).
LM_PROMPTS = ("def __init__(self", "import os\nimport ", "if __name__ == ")
LM_STEPS = 32


def _language_model(out_dir: Path) -> list[DemoRow]:
    """Export the example LM to both runtimes, print their continuations, check the tokens."""
    from bitnet_export.llm.export import export_llm
    from bitnet_export.llm.tokenizer import BOS, decode, encode, write_byte_tokenizer
    from bitnet_export.parity.generation import verify_generation
    from bitnet_export.zoo.text_lm import load_pretrained

    model = load_pretrained()
    tok = write_byte_tokenizer(out_dir / "tokenizer.json")
    prompts = [[BOS, *encode(p)] for p in LM_PROMPTS]
    rows = []
    for label, target, path, weights, targets in (
        (
            "LM: onnxruntime-genai int8",
            "ort-genai",
            out_dir / "tiny_lm_ort_genai",
            "int8",
            ["ort-genai", "ort-cpu"],
        ),
        (
            "LM: LiteRT-LM int2",
            "litert-lm",
            out_dir / "tiny_lm.litertlm",
            "int2",
            ["litert-lm", "litert-builtin"],
        ),
    ):
        res = export_llm(model, path, target, max_seq_len=128, weights=weights, tokenizer=tok)
        report = verify_generation(model, res.path, prompts, LM_STEPS, targets)
        atomic_write_text(out_dir / f"{path.name}.generation.json", report.to_json())
        app = [r for r in report.rows if r.target == target]
        for prompt_text, row in zip(LM_PROMPTS, app, strict=True):
            text = decode(row.tokens) if target == "ort-genai" else str(row.info.get("text", ""))
            print(f"          {target:<9} {prompt_text!r} -> {text!r}")
        print(report.format_table())
        agree = sum(r.equal for r in report.rows) / max(1, len(report.rows))
        worst = max((r.max_rel_logits or 0.0 for r in report.rows), default=float("nan"))
        rows.append(DemoRow(label, res.path, res.size_bytes, worst, agree, None, report.passed))
    return rows


def run_demo(out_dir: Path = Path("out/demo"), epochs: int = 60, seed: int = 0) -> list[DemoRow]:
    """Run the demo; files and JSON reports go to ``out_dir``.

    Returns:
        One :class:`DemoRow` per exported file (``all(r.passed ...)`` is the verdict).
    """
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    print("step 1/5  train on scikit-learn's bundled 8x8 digits (float MLP vs BitNet ternary QAT)")
    data = load_digits(seed=seed)
    accs = {}
    models = {}
    for name, bitnet in (("float", False), ("bitnet", True)):
        torch.manual_seed(seed)
        models[name] = train(DigitsMLP(bitnet=bitnet), data, epochs=epochs, seed=seed)
        accs[name] = accuracy(models[name], data.x_test, data.y_test)
    print(f"          float MLP test accuracy {accs['float'] * 100:.2f}%")
    print(f"          BitNet ternary MLP      {accs['bitnet'] * 100:.2f}%")

    gpu_reason = _gpu_unavailable()
    cases = [(*m, None) for m in MODES] + ([] if gpu_reason else list(GPU_MODES))
    print(f"step 2/5  export ({len(cases)} files) and verify each on its runtimes vs PyTorch")
    rows = []
    for label, fmt, mode, weights, gpu in cases:
        model = copy.deepcopy(models["bitnet"])
        if mode == "static":
            configure_model(model, activation_mode="static")
            calibrate(model, [data.x_train])
        tag = f"digits_{mode}_{weights}" + ("_gpu" if gpu else "")
        path = out_dir / f"{tag}.{fmt}"
        if fmt == "onnx":
            res = export_onnx(
                model, data.x_test[:1], path, weights=weights, kernels="float" if gpu else "integer"
            )
        else:  # LiteRT's GPU accelerator runs the batch it compiled: the test split's
            res = export_tflite(model, data.x_test if gpu else data.x_test[:1], path, weights=weights)
        targets = [gpu] if gpu else default_targets(res.path)
        report = verify(model, data.x_test[:1], res.path, targets, inputs=data.x_test)
        report.to_json(out_dir / f"{tag}.{fmt}.parity.json")
        print(report.format_table())
        worst = max((r.outputs[0].max_rel for r in report.results if r.outputs), default=float("nan"))
        top1 = min(((r.outputs[0].top1_agreement or 0.0) for r in report.results if r.outputs), default=0.0)
        runtime = make_adapter(targets[0])
        runtime.load(res.path)
        logits = runtime.run({res.input_names[0]: data.x_test.numpy()})[res.output_names[0]]
        rt_acc = float((torch.from_numpy(logits).argmax(-1) == data.y_test).float().mean())
        rows.append(DemoRow(label, res.path, res.size_bytes, worst, top1, rt_acc, report.passed))
    if gpu_reason:
        print(f"          GPU rows skipped: {gpu_reason}")

    print("step 3/5  real architectures from the zoo: export and verify")
    for name, tag, factory in ARCH_MODELS:
        model, example = factory()
        for mode_label, fmt, weights in ARCH_MODES:
            path = out_dir / f"{tag}_{weights}.{fmt}"
            res = (export_onnx if fmt == "onnx" else export_tflite)(model, example, path, weights=weights)
            report = verify(model, example, res.path, default_targets(res.path)[:2])
            report.to_json(out_dir / f"{tag}_{weights}.{fmt}.parity.json")
            print(report.format_table())
            metrics = [m for r in report.results for m in r.outputs]
            worst = max((m.max_rel for m in metrics), default=float("nan"))
            top1 = min(((m.top1_agreement or 0.0) for m in metrics), default=0.0)
            rows.append(
                DemoRow(f"{name}: {mode_label}", res.path, res.size_bytes, worst, top1, None, report.passed)
            )

    print("step 4/5  the example language model on device: onnxruntime-genai and LiteRT-LM")
    rows += _language_model(out_dir)

    print("step 5/5  summary")
    header = f"{'file':<40} {'size':>9} {'max rel err':>11} {'top-1 agr':>9} {'rt acc':>8}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.label:<40} {r.size_bytes / 1024:>7.1f}KB {r.max_rel:>11.2e} {r.top1_agreement * 100:>8.1f}% "
            + (f"{r.runtime_accuracy * 100:>7.2f}%" if r.runtime_accuracy is not None else f"{'-':>8}")
            + f"  {'PASS' if r.passed else 'FAIL'}"
        )
    print(f"files and JSON reports in {out_dir}/ ({time.perf_counter() - t0:.1f} s)")
    return rows
