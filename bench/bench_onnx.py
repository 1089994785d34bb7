"""Latency and file size of every ONNX export mode against the fp32 export of the same model.

Models: a 4-layer BitNet MLP (width 4096, ternary, no bias, ReLU between layers, seeded random
weights) and the digits MLP of ``bitnet_export.zoo.digits`` (BitNet, seeded, untrained: training
changes the weights, not the graph, so it does not change latency). Each mode is exported once
with a dynamic batch dimension and run at batch 1 and 64 on ONNX Runtime's CPU provider through
``runtimes.ort_cpu.OrtCpuAdapter`` (default threads, optimization ``all``).

Timing: warm-up runs, then ``--repeats`` rounds; each round runs every mode once, in an order
rotated from round to round, so that machine noise (these VMs swing up to 3x) hits every mode
alike. Reported: the median latency and its ratio to the fp32 median of the same model and
batch measured in the same rounds; file size and its ratio to the fp32 file.

This is a report, not a test: it exits 0 even when a target of the issue is missed and prints a
``MISSED`` line for it.

Usage::

    .venv/bin/python bench/bench_onnx.py [--quick] [--json OUT] [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bitnet_export
from bitnet_export._io import atomic_write_text
from bitnet_export.api import export_onnx
from bitnet_export.layers.bitnet import BitNetLayer
from bitnet_export.zoo.digits import IN_FEATURES, DigitsMLP
from runtimes.ort_cpu import OrtCpuAdapter

#: Mode -> (activation mode of the BitNetLayers, or None for the float model; ``weights=``).
MODES: dict[str, tuple[str | None, str]] = {
    "fp32": (None, "int8"),  # enabled=False: every BitNetLayer is a float MatMul, weights= unused
    "int8-static": ("static", "int8"),
    "int8-dynamic": ("dynamic", "int8"),
    "int4-dynamic": ("dynamic", "int4"),
    "int2-dynamic": ("dynamic", "int2"),
    "matmulnbits": ("dynamic", "matmulnbits"),  # 2-bit for ternary weights
}
BATCHES = (1, 64)
EXPORT_BATCH = 2  # an example batch of 1 would let torch.export specialize the batch dim to 1
CALIBRATION_BATCHES = 4
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_onnx.json"


@dataclass(frozen=True)
class Target:
    """A target of the issue, on the MLP model at batch 1."""

    mode: str
    metric: str  # "latency_ratio" or "size_ratio"
    limit: float


TARGETS = (
    Target("int8-static", "latency_ratio", 0.35),
    Target("int8-dynamic", "latency_ratio", 0.35),
    Target("matmulnbits", "latency_ratio", 0.20),
    Target("int8-static", "size_ratio", 0.27),
    Target("int8-dynamic", "size_ratio", 0.27),
    Target("int2-dynamic", "size_ratio", 0.08),
    Target("matmulnbits", "size_ratio", 0.08),
)
TARGET_MODEL = "mlp"
TARGET_WIDTH = 4096
TARGET_BATCH = 1


class BitNetMLP(nn.Module):
    """``layers`` BitNetLayers of ``width -> width`` (ternary, no bias) with ReLU between them."""

    def __init__(self, width: int, layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            BitNetLayer(width, width, precision=1.58, bias=False) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, width] -> [batch, width]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


@dataclass(frozen=True)
class BenchModel:
    """A model to benchmark: a seeded builder and how to draw inputs for it."""

    name: str
    description: str
    in_features: int
    build: Callable[[], nn.Module]
    sample: Callable[[torch.Generator, int], torch.Tensor]


def _mlp(width: int) -> BenchModel:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return BitNetMLP(width).eval()

    return BenchModel(
        name="mlp",
        description=f"4-layer BitNet MLP {width}->{width} x4, ternary, bias=False, ReLU, seed 0",
        in_features=width,
        build=build,
        sample=lambda g, n: torch.randn(n, width, generator=g),
    )


def _digits() -> BenchModel:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return DigitsMLP(bitnet=True).eval()

    return BenchModel(
        name="digits",
        description="zoo.digits DigitsMLP(bitnet=True) 64->128->128->10, seed 0, UNTRAINED "
        "(training changes weights, not the graph: latency is the same)",
        in_features=IN_FEATURES,
        build=build,
        sample=lambda g, n: torch.rand(n, IN_FEATURES, generator=g),  # pixels in [0, 1]
    )


def _configured(bm: BenchModel, base: nn.Module, mode: str) -> nn.Module:
    """A copy of ``base`` set up for ``mode`` (float, static calibrated, or dynamic)."""
    model = copy.deepcopy(base)
    activation_mode, _ = MODES[mode]
    if activation_mode is None:
        return bitnet_export.configure_model(model, enabled=False)
    bitnet_export.configure_model(model, activation_mode=activation_mode)
    if activation_mode == "static":
        g = torch.Generator().manual_seed(1)
        bitnet_export.calibrate(model, [bm.sample(g, 16) for _ in range(CALIBRATION_BATCHES)])
    return model


def _op_types(adapter: OrtCpuAdapter) -> dict[str, int]:
    """Op type counts of ORT's optimized graph: the kernels that really run."""
    graph = adapter.optimized_graph().graph
    return dict(sorted(Counter(node.op_type for node in graph.node).items()))


@dataclass
class Loaded:
    """One exported mode, loaded in ORT."""

    mode: str
    adapter: OrtCpuAdapter
    input_name: str
    file_bytes: int
    export_seconds: float
    kernels: dict[str, int]


def _export_all(bm: BenchModel, folder: Path, kernels: bool, log: Callable[[str], None]) -> list[Loaded]:
    base = bm.build()
    example = bm.sample(torch.Generator().manual_seed(2), EXPORT_BATCH)
    loaded = []
    for mode, (_, weights) in MODES.items():
        model = _configured(bm, base, mode)
        path = folder / f"{bm.name}-{mode}.onnx"
        res = export_onnx(model, example, path, weights=weights)
        del model
        adapter = OrtCpuAdapter()  # default threads, optimization "all"
        adapter.load(path)
        ((name, shape, _),) = adapter.input_specs()
        if isinstance(shape[0], int):
            raise RuntimeError(f"{bm.name}/{mode}: exported batch dimension is fixed ({shape}), not dynamic")
        ops = _op_types(adapter) if kernels else {}
        log(f"  exported {bm.name}/{mode}: {res.size_bytes / 1e6:.2f} MB in {res.seconds:.1f} s")
        loaded.append(Loaded(mode, adapter, name, res.size_bytes, res.seconds, ops))
    return loaded


def _time_modes(
    loaded: list[Loaded], x: np.ndarray, repeats: int, warmup: int, out_features: int
) -> dict[str, list[float]]:
    """Interleaved timing: ``repeats`` rounds, every mode once per round (rotated order)."""
    for item in loaded:
        for _ in range(warmup):
            out = item.adapter.run({item.input_name: x})
        (y,) = out.values()
        if y.shape != (x.shape[0], out_features) or not np.isfinite(y).all():
            raise RuntimeError(f"{item.mode}: bad output {y.shape}, finite={np.isfinite(y).all()}")
    times: dict[str, list[float]] = {item.mode: [] for item in loaded}
    for r in range(repeats):
        shift = r % len(loaded)
        for item in loaded[shift:] + loaded[:shift]:
            feed = {item.input_name: x}
            t0 = time.perf_counter()
            item.adapter.run(feed)
            times[item.mode].append(time.perf_counter() - t0)
    return times


def _bench_model(
    bm: BenchModel,
    out_features: int,
    repeats: int,
    warmup: int,
    kernels: bool,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        loaded = _export_all(bm, Path(tmp), kernels, log)
        info = loaded[0].adapter.info().as_dict()
        fp32_bytes = loaded[0].file_bytes
        for batch in BATCHES:
            x = bm.sample(torch.Generator().manual_seed(3), batch).numpy()
            t0 = time.perf_counter()
            times = _time_modes(loaded, x, repeats, warmup, out_features)
            log(f"  timed {bm.name} batch {batch}: {time.perf_counter() - t0:.1f} s")
            fp32_ms = statistics.median(times["fp32"]) * 1e3
            for item in loaded:
                ms = [t * 1e3 for t in times[item.mode]]
                med = statistics.median(ms)
                rows.append(
                    {
                        "model": bm.name,
                        "batch": batch,
                        "mode": item.mode,
                        "latency_ms": med,
                        "latency_ms_min": min(ms),
                        "latency_ms_max": max(ms),
                        "latency_ratio": med / fp32_ms,
                        "file_bytes": item.file_bytes,
                        "size_ratio": item.file_bytes / fp32_bytes,
                        "export_seconds": item.export_seconds,
                    }
                )
        ops = {item.mode: item.kernels for item in loaded}
        del loaded  # close the sessions before the folder goes
    return rows, ops, info


def _check_targets(rows: list[dict[str, Any]], width: int) -> list[dict[str, Any]]:
    checks = []
    for t in TARGETS:
        (row,) = (
            r for r in rows if (r["model"], r["batch"], r["mode"]) == (TARGET_MODEL, TARGET_BATCH, t.mode)
        )
        value = float(row[t.metric])
        checks.append(
            {
                **asdict(t),
                "model": TARGET_MODEL,
                "width": width,
                "batch": TARGET_BATCH,
                "value": value,
                "passed": value <= t.limit,
                "indicative_only": width != TARGET_WIDTH,
            }
        )
    return checks


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'model':<7} {'batch':>5} {'mode':<13} {'latency ms':>11} {'x fp32':>7} "
        f"{'file MB':>9} {'size x':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<7} {r['batch']:>5} {r['mode']:<13} {r['latency_ms']:>11.3f} "
            f"{r['latency_ratio']:>7.3f} {r['file_bytes'] / 1e6:>9.3f} {r['size_ratio']:>7.4f}"
        )
    return "\n".join(lines)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (:func:`bitnet_export._io.atomic_write_text`)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _cpu_seconds() -> tuple[float, float] | None:
    """``(busy CPU seconds of the whole machine, CPU seconds of this process)``; None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def _quiet_export_logs() -> None:
    """Silence torch.export / torch.onnx chatter so the report stays readable."""
    for name in ("torch._export", "torch.export", "torch.onnx", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


@dataclass(frozen=True)
class RunSettings:
    """What both benchmarks take from the command line."""

    quick: bool
    json: Path
    repeats: int
    warmup: int
    width: int


def _parse_run(
    parser: argparse.ArgumentParser, argv: list[str] | None, default_json: Path
) -> tuple[argparse.Namespace, RunSettings]:
    """Add ``--quick/--json/--repeats`` to ``parser``, parse ``argv``, derive repeats/warm-up/width."""
    parser.add_argument("--quick", action="store_true", help="width 512 and fewer repeats (smoke run)")
    parser.add_argument("--json", type=Path, default=default_json, help=f"result file ({default_json})")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 100, quick 10)")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (10 if args.quick else 100)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    width = 512 if args.quick else TARGET_WIDTH
    return args, RunSettings(args.quick, args.json, repeats, 2 if args.quick else 5, width)


class _Clock:
    """Wall time since start, a timestamped log, and the cores other processes kept busy."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._cpu_start = _cpu_seconds()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f}s] {msg}", flush=True)

    def finish(self) -> tuple[float, float | None]:
        """``(total seconds, foreign busy cores)``; the latter None off Linux."""
        total = time.perf_counter() - self.start
        end = _cpu_seconds()
        if not (self._cpu_start and end):
            return total, None
        busy, own = end[0] - self._cpu_start[0], end[1] - self._cpu_start[1]
        return total, max(0.0, busy - own) / total


def _print_foreign(foreign: float | None) -> None:
    """Say how busy the machine was; warn when it distorts the ratios."""
    if foreign is None:
        return
    print(f"other processes kept {foreign:.2f} of {os.cpu_count()} cores busy during the run")
    if foreign > 0.2:
        print(
            "WARNING: other processes competed for the cores; the ratios (batch 1 above all) "
            "are unreliable: rerun on an idle machine"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (missed targets are reported, not failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--no-kernels", action="store_true", help="skip listing ORT's optimized op types")
    args, run = _parse_run(parser, argv, DEFAULT_JSON)
    repeats, warmup, width = run.repeats, run.warmup, run.width
    _quiet_export_logs()
    clock = _Clock()
    log = clock.log

    models = [(_mlp(width), width), (_digits(), 10)]
    rows: list[dict[str, Any]] = []
    kernels: dict[str, dict[str, dict[str, int]]] = {}
    info: dict[str, Any] = {}
    for bm, out_features in models:
        log(f"{bm.name}: {bm.description}")
        model_rows, ops, info = _bench_model(bm, out_features, repeats, warmup, not args.no_kernels, log)
        rows += model_rows
        kernels[bm.name] = ops
    checks = _check_targets(rows, width)
    total, foreign = clock.finish()  # foreign: cores other processes kept busy (distorts ratios)

    print()
    print(
        f"ONNX Runtime {info['version']} {info['provider']}, {info['cpu_model']}, threads={info['threads']}"
    )
    print(
        f"median of {repeats} interleaved rounds after {warmup} warm-up runs; ratios vs fp32 of the same run"
    )
    print(_table(rows))
    if kernels and not args.no_kernels:
        print("\nORT optimized-graph op types (per mode, mlp):")
        for mode, mode_ops in kernels["mlp"].items():
            print(f"  {mode:<13} " + ", ".join(f"{op} x{n}" for op, n in mode_ops.items()))
    note = "" if width == TARGET_WIDTH else f"  (width {width}, not {TARGET_WIDTH}: indicative only)"
    print(f"\ntargets (mlp width {width}, batch {TARGET_BATCH}){note}:")
    for c in checks:
        word = "ok    " if c["passed"] else "MISSED"
        print(f"  {word} {c['mode']:<13} {c['metric']:<13} {c['value']:.4f} <= {c['limit']}")
    missed = sum(not c["passed"] for c in checks)
    print(f"{len(checks) - missed}/{len(checks)} targets met; total time {total:.1f} s")
    _print_foreign(foreign)

    _write_json(
        run.json,
        {
            "benchmark": "bench_onnx",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": run.quick,
            "width": width,
            "repeats": repeats,
            "warmup": warmup,
            "batches": list(BATCHES),
            "runtime": info,
            "foreign_busy_cores": foreign,
            "models": {bm.name: bm.description for bm, _ in models},
            "results": rows,
            "kernels": kernels,
            "targets": checks,
            "total_seconds": total,
        },
    )
    print(f"wrote {run.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
