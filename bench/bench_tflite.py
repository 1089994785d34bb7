"""Latency and file size of every TFLite export mode against the fp32 TFLite export of the same model.

Models: the same two as ``bench_onnx.py`` (imported from it): a 4-layer BitNet MLP (width 4096,
ternary, no bias, ReLU between layers, seed 0) and the digits MLP of ``bitnet_export.zoo.digits``
(BitNet, seeded, untrained). Each mode is exported once with ``export_tflite`` at batch 1 (the
file's tensors have a static batch of 1, its signature a free ``-1`` batch) and run at batch 1 and
64 through the ``runtimes`` LiteRT adapters, threads=2. The batch-64 runs resize the interpreter:
that happens once, in the first warm-up call (timed apart as ``first_run_ms``), and a batch-64
export was measured to run exactly as fast as a resized batch-1 one (157 ms both, int8-dynamic).

Kernels, chosen per mode and checked after loading (the adapters refuse silent fallbacks):

* ``fp32`` and the full-integer ``*-static`` modes: ``litert-xnnpack``, the fast path that is
  exact for int8. Where XNNPACK does not take the whole graph, the row falls back to
  ``litert-builtin`` (note ``fallback``), and when XNNPACK still takes the FULLY_CONNECTED ops an
  extra ``partial`` row runs ``litert-xnnpack`` with ``allow_partial=True`` (XNNPACK plus builtin
  kernels for the ops it refused).
* hybrid ``*-dynamic`` modes: ``litert-builtin`` only. XNNPACK would take int8/int4 hybrid FCs but
  quantizes rows asymmetrically: not BitNet's per-token maths.
* ``fp32`` also on ``litert-builtin``, for context (note ``context``).

Timing: warm-up runs, then ``--repeats`` rounds; each round runs every row once, in an order
rotated from round to round, so that machine noise hits every row alike. Reported: the median
latency and its ratio to the fp32 (XNNPACK) median of the same model and batch measured in the
same rounds; file size and its ratio to the fp32 file.

This is a report, not a test: it exits 0 even when the target is missed and prints ``MISSED``.

Usage::

    .venv/bin/python bench/bench_tflite.py [--quick] [--json OUT] [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The models, the run settings, the JSON writer and the busy-core meter are bench_onnx's, so that both reports
# measure the same models the same way (bench/ is on sys.path when this file runs as a script).
from bench_onnx import (
    CALIBRATION_BATCHES,
    TARGET_BATCH,
    TARGET_MODEL,
    TARGET_WIDTH,
    BenchModel,
    _Clock,
    _digits,
    _mlp,
    _parse_run,
    _print_foreign,
    _quiet_export_logs,
    _write_json,
)
from torch import nn

import bitnet_export
from bitnet_export.api import export_tflite
from runtimes import RuntimeAdapter, make_adapter
from runtimes.protocol import RuntimeAdapterError

THREADS = 2  # the dev VM has 2 cores
BATCHES = (1, 64)
EXPORT_BATCH = 1  # TFLite keeps a -1 batch in the signature; the adapters resize to 64
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_tflite.json"
#: A batch-64 output row may differ from the same input run alone by summation order only.
BATCH_CHECK_RTOL = 1e-2


@dataclass(frozen=True)
class Mode:
    """An export mode and the LiteRT kernel set its main row asks for."""

    name: str
    activation: str | None  # activation mode of the BitNetLayers; None: the float model
    weights: str  # export_tflite(weights=...)
    kernel: str  # "xnnpack" (fp32, full-integer) or "builtin" (hybrid: BitNet's maths)


MODES = (
    Mode("fp32", None, "int8", "xnnpack"),  # enabled=False: float FCs, weights= unused
    Mode("int8-static", "static", "int8", "xnnpack"),
    Mode("int4-static", "static", "int4", "xnnpack"),
    Mode("int2-static", "static", "int2", "xnnpack"),
    Mode("int8-dynamic", "dynamic", "int8", "builtin"),
    Mode("int4-dynamic", "dynamic", "int4", "builtin"),
    Mode("int2-dynamic", "dynamic", "int2", "builtin"),
)
FP32 = "fp32"
TARGET_MODE = "int8-static"
TARGET_LIMIT = 0.35
INFO_MODES = ("int8-dynamic",)  # shown against the same bound, informational


@dataclass
class Variant:
    """One timed row: an exported mode loaded with one kernel set."""

    mode: str
    role: str  # "main", "fallback" (XNNPACK refused, builtin), "partial", "context"
    target: str  # adapter target name
    adapter: RuntimeAdapter
    input_name: str
    file_bytes: int
    export_seconds: float
    refusal: str | None = None  # why XNNPACK did not take the whole graph

    @property
    def key(self) -> str:
        return self.mode if self.role in ("main", "fallback") else f"{self.mode}/{self.role}"


def _configured(bm: BenchModel, base: nn.Module, mode: Mode) -> nn.Module:
    """A copy of ``base`` set up for ``mode`` (float, static calibrated, or dynamic)."""
    model = copy.deepcopy(base)
    if mode.activation is None:
        return bitnet_export.configure_model(model, enabled=False)
    bitnet_export.configure_model(model, activation_mode=mode.activation)
    if mode.activation == "static":
        g = torch.Generator().manual_seed(1)  # as bench_onnx
        bitnet_export.calibrate(model, [bm.sample(g, 16) for _ in range(CALIBRATION_BATCHES)])
    return model


def _load(target: str, path: Path, **kwargs: Any) -> tuple[RuntimeAdapter, str]:
    adapter = make_adapter(target, threads=THREADS, **kwargs)
    adapter.load(path)
    ((name, shape, _),) = adapter.input_specs()
    if isinstance(shape[0], int):
        raise RuntimeError(f"{path.name}: batch dimension is fixed ({shape}) in the signature")
    return adapter, name


def _refused_ops(adapter: RuntimeAdapter) -> tuple[str, bool]:
    """Ops XNNPACK left to builtin kernels (``RELU x3``) and whether it took any FULLY_CONNECTED."""
    details = adapter.info().details
    left = Counter(str(op).split(" ", 1)[0] for op in details.get("undelegated_ops", []))
    took_fc = "FULLY_CONNECTED" in details.get("delegated_ops", [])
    return ", ".join(f"{op} x{n}" for op, n in sorted(left.items())), took_fc


def _variants(mode: Mode, path: Path, file_bytes: int, seconds: float) -> list[Variant]:
    """Load ``path`` on the kernel set(s) the policy asks for (see the module docstring)."""

    def variant(
        role: str, target: str, loaded: tuple[RuntimeAdapter, str], refusal: str | None = None
    ) -> Variant:
        return Variant(mode.name, role, target, loaded[0], loaded[1], file_bytes, seconds, refusal)

    if mode.kernel == "builtin":
        return [variant("main", "litert-builtin", _load("litert-builtin", path))]
    try:
        xnnpack = _load("litert-xnnpack", path)
    except RuntimeAdapterError as exc:
        builtin = _load("litert-builtin", path)
        try:
            partial = _load("litert-xnnpack", path, allow_partial=True)
        except RuntimeAdapterError:  # XNNPACK took nothing at all
            return [variant("fallback", "litert-builtin", builtin, " ".join(str(exc).split()))]
        refused, took_fc = _refused_ops(partial[0])
        out = [variant("fallback", "litert-builtin", builtin, refused)]
        if took_fc:
            out.append(variant("partial", "litert-xnnpack", partial, refused))
        return out
    out = [variant("main", "litert-xnnpack", xnnpack)]
    if mode.name == FP32:
        out.append(variant("context", "litert-builtin", _load("litert-builtin", path)))
    return out


def _export_all(bm: BenchModel, folder: Path, log: Callable[[str], None]) -> list[Variant]:
    base = bm.build()
    example = bm.sample(torch.Generator().manual_seed(2), EXPORT_BATCH)
    loaded: list[Variant] = []
    for mode in MODES:
        model = _configured(bm, base, mode)
        path = folder / f"{bm.name}-{mode.name}.tflite"
        res = export_tflite(model, example, path, weights=mode.weights)
        del model
        variants = _variants(mode, path, res.size_bytes, res.seconds)
        kernels = ", ".join(f"{v.role}={v.adapter.info().provider}" for v in variants)
        log(
            f"  exported {bm.name}/{mode.name}: {res.size_bytes / 1e6:.2f} MB in {res.seconds:.1f} s; "
            f"{kernels}"
        )
        for v in variants:
            if v.refusal:
                log(f"    XNNPACK refused the whole graph ({v.role}): left {v.refusal}")
        loaded += variants
    return loaded


def _output(adapter: RuntimeAdapter, name: str, x: np.ndarray) -> np.ndarray:
    (y,) = adapter.run({name: x}).values()
    return np.asarray(y)


def _time_variants(
    loaded: list[Variant], x: np.ndarray, repeats: int, warmup: int, out_features: int
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, np.ndarray]]:
    """Interleaved timing: ``repeats`` rounds, every variant once per round (rotated order).

    Returns the times, the first call's time per variant (it resizes when the batch changed) and
    the warm-up outputs.
    """
    first: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for v in loaded:
        t0 = time.perf_counter()
        y = _output(v.adapter, v.input_name, x)
        first[v.key] = (time.perf_counter() - t0) * 1e3
        for _ in range(warmup - 1):
            y = _output(v.adapter, v.input_name, x)
        if y.shape != (x.shape[0], out_features) or not np.isfinite(y).all():
            raise RuntimeError(f"{v.key}: bad output {y.shape}, finite={np.isfinite(y).all()}")
        outputs[v.key] = y
    times: dict[str, list[float]] = {v.key: [] for v in loaded}
    for r in range(repeats):
        shift = r % len(loaded)
        for v in loaded[shift:] + loaded[:shift]:
            feed = {v.input_name: x}
            t0 = time.perf_counter()
            v.adapter.run(feed)
            times[v.key].append(time.perf_counter() - t0)
    return times, first, outputs


def _bench_model(
    bm: BenchModel, out_features: int, repeats: int, warmup: int, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_tflite_") as tmp:
        loaded = _export_all(bm, Path(tmp), log)
        fp32_bytes = next(v.file_bytes for v in loaded if v.key == FP32)
        x_big = bm.sample(torch.Generator().manual_seed(3), max(BATCHES)).numpy()
        alone: dict[str, np.ndarray] = {}  # batch-1 outputs of x_big[:1]
        for batch in BATCHES:
            x = np.ascontiguousarray(x_big[:batch])
            t0 = time.perf_counter()
            times, first, outputs = _time_variants(loaded, x, repeats, warmup, out_features)
            log(f"  timed {bm.name} batch {batch}: {time.perf_counter() - t0:.1f} s")
            if batch == 1:
                alone = outputs
            fp32_ms = statistics.median(times[FP32]) * 1e3
            for v in loaded:
                ms = [t * 1e3 for t in times[v.key]]
                med = statistics.median(ms)
                ref = alone[v.key][0]
                diff = float(np.abs(outputs[v.key][0] - ref).max())
                scale = float(np.abs(ref).max()) or 1.0
                if diff > BATCH_CHECK_RTOL * scale:
                    log(
                        f"  WARNING {bm.name}/{v.key}: row 0 at batch {batch} differs from "
                        f"batch 1 by {diff:.3g}"
                    )
                rows.append(
                    {
                        "model": bm.name,
                        "batch": batch,
                        "mode": v.mode,
                        "role": v.role,
                        "kernel": v.adapter.info().provider,
                        "target": v.target,
                        "latency_ms": med,
                        "latency_ms_min": min(ms),
                        "latency_ms_max": max(ms),
                        "latency_ratio": med / fp32_ms,
                        "first_run_ms": first[v.key],
                        "row0_vs_batch1_max_abs": diff,
                        "file_bytes": v.file_bytes,
                        "size_ratio": v.file_bytes / fp32_bytes,
                        "export_seconds": v.export_seconds,
                    }
                )
        runtimes = [
            {
                "model": bm.name,
                "mode": v.mode,
                "role": v.role,
                "target": v.target,
                "xnnpack_refused": v.refusal,
                "runtime": v.adapter.info().as_dict(),  # after the batch-64 resize
            }
            for v in loaded
        ]
        del loaded  # release the interpreters before the folder goes
    return rows, runtimes


def _check_target(rows: list[dict[str, Any]], width: int) -> list[dict[str, Any]]:
    checks = []
    for r in rows:
        if (r["model"], r["batch"]) != (TARGET_MODEL, TARGET_BATCH):
            continue
        if r["mode"] != TARGET_MODE and r["mode"] not in INFO_MODES:
            continue
        main = r["mode"] == TARGET_MODE and r["role"] in ("main", "fallback")
        value = float(r["latency_ratio"])
        checks.append(
            {
                "mode": r["mode"],
                "role": r["role"],
                "kernel": r["kernel"],
                "metric": "latency_ratio",
                "limit": TARGET_LIMIT,
                "model": TARGET_MODEL,
                "width": width,
                "batch": TARGET_BATCH,
                "value": value,
                "passed": value <= TARGET_LIMIT,
                "informational": not main,
                "indicative_only": width != TARGET_WIDTH,
            }
        )
    return checks


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'model':<7} {'batch':>5} {'mode':<13} {'kernel':<16} {'latency ms':>11} {'x fp32':>7} "
        f"{'file MB':>9} {'size x':>7}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        note = "" if r["role"] == "main" else r["role"]
        lines.append(
            f"{r['model']:<7} {r['batch']:>5} {r['mode']:<13} {r['kernel']:<16} {r['latency_ms']:>11.3f} "
            f"{r['latency_ratio']:>7.3f} {r['file_bytes'] / 1e6:>9.3f} {r['size_ratio']:>7.4f}  {note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (a missed target is reported, not failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    _, run = _parse_run(parser, argv, DEFAULT_JSON)
    repeats, warmup, width = run.repeats, run.warmup, run.width
    _quiet_export_logs()
    clock = _Clock()
    log = clock.log

    models = [(_mlp(width), width), (_digits(), 10)]
    rows: list[dict[str, Any]] = []
    runtimes: list[dict[str, Any]] = []
    for bm, out_features in models:
        log(f"{bm.name}: {bm.description}")
        model_rows, model_runtimes = _bench_model(bm, out_features, repeats, warmup, log)
        rows += model_rows
        runtimes += model_runtimes
    checks = _check_target(rows, width)
    total, foreign = clock.finish()  # foreign: cores other processes kept busy (distorts ratios)
    info = runtimes[0]["runtime"]

    print()
    print(f"LiteRT {info['version']}, {info['cpu_model']}, threads={THREADS} on {os.cpu_count()} cores")
    print(
        f"median of {repeats} interleaved rounds after {warmup} warm-up runs; ratios vs fp32 "
        "(xnnpack) of the same run; one export per mode at batch 1, resized to 64"
    )
    print(_table(rows))
    print("\nnotes: fallback = XNNPACK refused the whole graph, builtin kernels ran it; partial = XNNPACK")
    print("with the refused ops on builtin kernels (allow_partial); context = fp32 on builtin kernels.")
    for r in runtimes:
        if r["xnnpack_refused"] and r["role"] == "fallback":
            print(f"  XNNPACK refused {r['model']}/{r['mode']}: left {r['xnnpack_refused']}")
    note = "" if width == TARGET_WIDTH else f"  (width {width}, not {TARGET_WIDTH}: indicative only)"
    print(f"\ntarget ({TARGET_MODEL} width {width}, batch {TARGET_BATCH}){note}:")
    for c in checks:
        word = "ok    " if c["passed"] else "MISSED"
        if c["informational"]:
            word = "(info) " + ("ok" if c["passed"] else "over")
        label = f"{c['mode']} [{c['kernel']}]"
        print(f"  {word:<11} {label:<34} latency_ratio {c['value']:.4f} <= {c['limit']}")
    binding = [c for c in checks if not c["informational"]]
    missed = sum(not c["passed"] for c in binding)
    print(f"{len(binding) - missed}/{len(binding)} targets met; total time {total:.1f} s")
    _print_foreign(foreign)

    _write_json(
        run.json,
        {
            "benchmark": "bench_tflite",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": run.quick,
            "width": width,
            "repeats": repeats,
            "warmup": warmup,
            "threads": THREADS,
            "cpu_count": os.cpu_count(),
            "batches": list(BATCHES),
            "export_batch": EXPORT_BATCH,
            "foreign_busy_cores": foreign,
            "models": {bm.name: bm.description for bm, _ in models},
            "runtimes": runtimes,
            "results": rows,
            "targets": checks,
            "total_seconds": total,
        },
    )
    print(f"wrote {run.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
