"""The real-GPU check (runs on the GPU machine: numpy + the runtimes package, no torch needed).

    python3 bench/gpu_check/run_check.py MODELS_DIR [OUT_DIR]

For every file prepared by ``prepare.py``: run it on the GPU targets (``litert-gpu`` fp32 and
``litert-gpu-fp16`` for TFLite, ``ort-webgpu`` for ONNX) and on the matching CPU adapter
(``litert-reference`` / ``ort-cpu``), then report per file and target: the Vulkan adapter that
served the run, max abs / relative error and output LSBs vs PyTorch and vs the CPU adapter, and
the median latency of each. A target that cannot run a file is reported with its error.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtimes import make_adapter

GPU_TARGETS = {"tflite": ("litert-gpu", "litert-gpu-fp16"), "onnx": ("ort-webgpu",)}
CPU_TARGET = {"tflite": "litert-reference", "onnx": "ort-cpu"}


def _metrics(ref: np.ndarray, got: np.ndarray, scale: float | None) -> dict[str, Any]:
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    peak = float(np.abs(ref).max()) or 1.0
    return {
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max()) / peak,
        "lsb": None if scale is None else float(diff.max() / scale),
        "top1": float((got.argmax(-1) == ref.argmax(-1)).mean()),
    }


def _run(target: str, path: Path, feed: dict[str, np.ndarray], out: str, repeats: int) -> dict[str, Any]:
    try:
        adapter = make_adapter(target)
        adapter.load(path)
        y = adapter.run(feed)[out]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            adapter.run(feed)
            times.append(time.perf_counter() - t0)
        return {"output": y, "ms": 1e3 * statistics.median(times), "info": adapter.info().as_dict()}
    except Exception as exc:  # reported per target, never fatal
        return {"error": f"{type(exc).__name__}: {str(exc)[-600:]}"}


def main(models: Path, out_dir: Path | None, repeats: int = 20) -> int:
    """Run every prepared case; print a table; write ``gpu_check.json`` into ``out_dir``."""
    cases = json.loads((models / "cases.json").read_text())
    rows = []
    for case in cases:
        path = models / case["file"]
        data = np.load(models / f"{case['file']}.npz")
        feed = {case["input"]: data["x"]}
        cpu = _run(CPU_TARGET[case["format"]], path, feed, case["output"], repeats)
        for target in GPU_TARGETS[case["format"]]:
            gpu = _run(target, path, feed, case["output"], repeats)
            row: dict[str, Any] = {"file": case["file"], "target": target}
            if "error" in gpu:
                row["error"] = gpu["error"]
            else:
                info = gpu["info"]
                details = info.get("details", {})
                row["adapter"] = details.get("device") or info.get("provider")
                row["device"] = details.get("device_kind")
                row["precision"] = str(details.get("precision", "fp32")).split(" ")[0]
                row["vs_pytorch"] = _metrics(data["reference"], gpu["output"], case["output_scale"])
                if "output" in cpu:
                    row["vs_cpu"] = _metrics(cpu["output"], gpu["output"], case["output_scale"])
                    row["cpu_ms"] = cpu["ms"]
                row["gpu_ms"] = gpu["ms"]
                row["runtime"] = info
            rows.append(row)
    print(
        f"{'file':<44} {'target':<16} {'adapter':<24} {'prec':<4} {'rel vs torch':>12} {'LSB':>6} "
        f"{'rel vs cpu':>11} {'LSB':>6} {'gpu ms':>8} {'cpu ms':>8}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['file']:<44} {r['target']:<16} ERROR {r['error'][:150]}")
            continue
        vt, vc = r["vs_pytorch"], r.get("vs_cpu", {})

        def lsb(m: dict[str, Any]) -> str:
            return "-" if m.get("lsb") is None else f"{m['lsb']:.2f}"

        print(
            f"{r['file']:<44} {r['target']:<16} {str(r['adapter'])[:24]:<24} {r['precision']:<4} "
            f"{vt['max_rel']:>12.2e} "
            f"{lsb(vt):>6} {vc.get('max_rel', float('nan')):>11.2e} {lsb(vc):>6} "
            f"{r['gpu_ms']:>8.3f} {r.get('cpu_ms', float('nan')):>8.3f}"
        )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu_check.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))
