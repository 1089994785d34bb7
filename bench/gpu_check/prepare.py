"""Prepare the real-GPU check (runs here, with the project's venv): export the GPU test models
and record their inputs and PyTorch reference outputs, so the GPU machine needs no torch.

    .venv/bin/python bench/gpu_check/prepare.py OUT_DIR

writes ``OUT_DIR/<name>.{onnx,tflite}`` and ``OUT_DIR/cases.json`` + ``OUT_DIR/<name>.npz``
(inputs ``x`` and PyTorch's ``reference``: BitNetLayer's integer inference form, rounding ties
like the file's runtime family).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import bitnet_export as bx
from bitnet_export.backends import read_file_metadata
from bitnet_export.parity import reference_outputs
from bitnet_export.zoo.digits import DigitsMLP, load_digits, train
from bitnet_export.zoo.models import BitNetModel, MixedBlock


def main(out: Path) -> None:
    """Export every case into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits(seed=0)
    torch.manual_seed(0)
    digits = train(DigitsMLP(bitnet=True), data, seed=0)
    static = DigitsMLP(bitnet=True)
    static.load_state_dict(digits.state_dict())
    bx.configure_model(static, activation_mode="static")
    bx.calibrate(static, [data.x_train])
    floaty = DigitsMLP(bitnet=True)
    floaty.load_state_dict(digits.state_dict())
    bx.configure_model(floaty, enabled=False)
    torch.manual_seed(0)
    mixed = MixedBlock(precisions=(1.58, 2, 4))
    torch.manual_seed(0)
    seed_mlp = BitNetModel(784, 256, 10)
    seed_static = BitNetModel(784, 256, 10)
    seed_static.load_state_dict(seed_mlp.state_dict())
    bx.configure_model(seed_static, activation_mode="static")
    bx.calibrate(seed_static, [torch.randn(256, 784)])
    torch.manual_seed(0)
    mixed_static = MixedBlock(precisions=(1.58, 2, 4))
    mixed_static.load_state_dict(mixed.state_dict())
    bx.configure_model(mixed_static, activation_mode="static")
    bx.calibrate(mixed_static, [torch.randn(256, 32)])
    x_digits, x_mixed, x_seed = data.x_test[:64], torch.randn(64, 32), torch.randn(64, 784)
    # (name, model, input, (format, weights, ONNX kernels)...): ONNX int files with
    # kernels="float", the lowering ORT's WebGPU EP can run
    cases = [
        ("digits_float", floaty, x_digits, ("onnx", "int8", "integer"), ("tflite", "int8", "")),
        (
            "digits_hybrid",
            digits,
            x_digits,
            ("onnx", "matmulnbits", "integer"),
            ("onnx", "int2", "float"),
            ("tflite", "int8", ""),
        ),
        ("digits_int4", digits, x_digits, ("tflite", "int4", "")),
        (
            "digits_full_integer",
            static,
            x_digits,
            ("tflite", "int8", ""),
            ("onnx", "int8", "float"),
            ("onnx", "int2", "float"),
        ),
        (
            "mixed_hybrid",
            mixed,
            x_mixed,
            ("onnx", "matmulnbits", "integer"),
            ("onnx", "int4", "float"),
            ("tflite", "int8", ""),
        ),
        ("mixed_static", mixed_static, x_mixed, ("onnx", "int4", "float"), ("tflite", "int4", "")),
        ("seed_dynamic", seed_mlp, x_seed, ("onnx", "int8", "float"), ("tflite", "int2", "")),
        ("seed_static", seed_static, x_seed, ("onnx", "int8", "float"), ("tflite", "int8", "")),
    ]
    index = []
    for name, model, x, *files in cases:
        for fmt, weights, kernels in files:
            stem = f"{name}_{weights}" + ("_float_kernels" if kernels == "float" else "")
            path = out / f"{stem}.{fmt}"
            if fmt == "onnx":
                res = bx.export_onnx(model, x, path, weights=weights, kernels=kernels)
            else:
                res = bx.export_tflite(model, x, path, weights=weights)
            rounding = "half_away" if fmt == "tflite" else "half_even"
            (ref,) = reference_outputs(model, (x,), rounding)
            np.savez(out / f"{stem}.{fmt}.npz", x=x.numpy(), reference=ref)
            scales = json.loads(read_file_metadata(path).get("bitnet_export.output_scales", "{}"))
            scale = next(iter(scales.values()), [None])[0]
            index.append(
                {
                    "file": path.name,
                    "format": fmt,
                    "weights": weights,
                    "kernels": kernels or None,
                    "input": res.input_names[0],
                    "output": res.output_names[0],
                    "output_scale": scale,
                }
            )
    (out / "cases.json").write_text(json.dumps(index, indent=2))
    print(f"prepared {len(index)} files in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".gpucheck/models"))
