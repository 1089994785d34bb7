"""Decode tokens/s, prefill latency, file size and export cost of a ~100M BitNet LM exported with
``export_llm``, per weight mode, on ONNX Runtime (``ort-genai`` folder) and LiteRT (``litert-lm``
bundle), against the fp32 export of the same model measured in the same run.

Model: ``zoo.transformer.TinyBitNetLM`` at hidden 768, 12 layers, 12 heads (4 KV heads), MLP
3072, vocab 258 (the project's byte-level tokenizer), max_seq_len 256: 104M parameters, ternary
(precision 1.58), seeded random weights (random weights run exactly as fast as trained ones).
``--vocab N`` sets another vocabulary: the token embedding stays float32 in every export (only
the BitNetLayers are quantized), so a large vocabulary weighs on the size ratio; the report
shows it with and without the embedding. Export modes:

==========  =============  ===================  =========================================
row         ort-genai      litert-lm            what
==========  =============  ===================  =========================================
fp32        float MatMul   float FC             ``configure_model(enabled=False)``: baseline
int8        ``int8``       ``int8``             exact BitNet maths, int8 weights
2bit-fast   ``matmulnbits``  ``int2``           the fast 2-bit path of each runtime
int2        ``int2``       (= 2bit-fast)        ternary weights stored in 2 bits on ORT
int8-nbits  ``int8``,      --                   exact BitNet maths on MatMulNBits' 8-bit
            ``nbits``                           kernel (``kernels="nbits"``): int8's numbers
int2-nbits  ``int2``,      --                   the same on its 2-bit kernel
            ``nbits``
int8-xnn    --             int8, xnnpack        exact on XNNPACK (padded code rows)
int4-xnn    --             int4, xnnpack        the same with INT4 weights
==========  =============  ===================  =========================================

Every export runs in its own subprocess (the model is rebuilt there with the same seed), so its
peak RSS (``ru_maxrss``: Python, torch, the model and the export) is its own.

Timing, per thread count: every row is loaded (ORT ``InferenceSession``, CPU provider; LiteRT
``Interpreter`` with builtin kernels, ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``, which are BitNet's
exact per-token maths for hybrid FCs, and with the default XNNPACK delegate, ``AUTO``, for
reference), warmed up, then timed in ``--rounds`` rounds; each round runs every row once, in an
order rotated per round, so the VM's noise hits all rows alike. One run of a row: a prefill of
``--prompt`` tokens (ORT: one call with S=prompt on an empty cache; LiteRT: the ``prefill``
signature on zero caches), then ``--steps`` greedy decode calls of one token each, the KV cache
carried from call to call (ORT: ``present.*`` -> ``past_key_values.*``; LiteRT: the
``kv_cache_*`` arrays go in and out of the signature runner as numpy arrays, a copy each way per
call: that is the runner's API). Decode tok/s = steps / time of the decode calls; the median over
rounds is reported, with its ratio to the fp32 row of the same runtime (LiteRT: fp32 on XNNPACK,
the default float path; also against fp32 on builtin kernels) in the same run.

A report, not a test: it exits 0 even when a target is missed and prints ``MISSED`` lines.

Usage::

    .venv/bin/python bench/bench_llm.py [--quick] [--threads 1 2] [--rounds N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# The busy-core meter, the clock and the JSON writer are bench_onnx's (bench/ is on sys.path when
# this file runs as a script; the smoke test puts it there).
from bench_onnx import _Clock, _cpu_seconds, _quiet_export_logs, _write_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_llm.json"
TARGET_THREADS = 1


@dataclass(frozen=True)
class LmSize:
    """``TinyLMConfig`` sizes of the benchmarked model (vocab must hold the byte tokenizer's 258), and
    its weights' seed; a torch-free mirror, so the timing process never imports torch. Every field
    but ``seed`` is passed to ``TinyLMConfig`` by name."""

    vocab_size: int = 258
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    kv_heads: int = 4
    intermediate: int = 3072
    max_seq_len: int = 256
    seed: int = 0

    def describe(self) -> str:
        return (
            f"TinyBitNetLM hidden {self.hidden}, {self.layers} layers, {self.heads} heads "
            f"({self.kv_heads} kv), MLP {self.intermediate}, vocab {self.vocab_size}, "
            f"max_seq_len {self.max_seq_len}, ternary, seed {self.seed}"
        )


FULL = LmSize()
QUICK = LmSize(vocab_size=258, hidden=256, layers=4, heads=4, kv_heads=2, intermediate=704, max_seq_len=128)


@dataclass(frozen=True)
class Export:
    """One exported file: target, ``weights=``, float model or not."""

    target: str  # "ort-genai" | "litert-lm"
    mode: str  # row name: fp32 | int8 | 2bit-fast | int2
    weights: str
    float_model: bool = False
    activation_quant: str = "kernel"  # litert-lm: "xnnpack" pads the code rows for XNNPACK
    kernels: str = "integer"  # ort-genai: "nbits" runs the exact maths on MatMulNBits

    @property
    def runtime(self) -> str:
        return "ort" if self.target == "ort-genai" else "litert"

    @property
    def key(self) -> str:
        return f"{self.runtime}/{self.mode}"


EXPORTS: tuple[Export, ...] = (
    Export("ort-genai", "fp32", "int8", float_model=True),  # weights= unused: no BitNetLayer is on
    Export("ort-genai", "int8", "int8"),
    Export("ort-genai", "2bit-fast", "matmulnbits"),
    Export("ort-genai", "int2", "int2"),
    # exact, the same numbers as int8 / int2: the per-token codes on MatMulNBits' block kernel
    Export("ort-genai", "int8-nbits", "int8", kernels="nbits"),
    Export("ort-genai", "int2-nbits", "int2", kernels="nbits"),
    Export("litert-lm", "fp32", "int8", float_model=True),
    Export("litert-lm", "int8", "int8"),
    Export("litert-lm", "2bit-fast", "int2"),  # also the ternary storage row of LiteRT
    # exact on XNNPACK (and in LiteRT-LM's engine): the code rows padded to [-128, 127]
    Export("litert-lm", "int8-xnn", "int8", activation_quant="xnnpack"),
    Export("litert-lm", "int4-xnn", "int4", activation_quant="xnnpack"),
)
#: the files whose size is checked against the 2-bit target (ternary weights in 2 bits)
TERNARY_FILES = ("ort/2bit-fast", "ort/int2", "litert/2bit-fast")
SIZE_LIMIT = 0.08
#: decode tok/s ratio vs fp32 at 1 thread: (row key, minimum, informational)
#: ORT: the exact int8 row is int8 weights on MatMulNBits (kernels="nbits"), faster than
#: MatMulInteger (int8, shown as (info); 3.12x vs 2.31x measured): the same numbers, bit for bit
#: LiteRT: the exact int8 row is XNNPACK's (padded rows); LiteRT has no fast INT2 kernel
#: (XNNPACK leaves INT2 FCs to builtin), so its fastest exact ternary path, INT4 on XNNPACK,
#: stands for the 2-bit one; the builtin rows are shown as (info)
SPEED_TARGETS = (
    ("ort/int8-nbits", 3.0, False),
    ("ort/int8", 3.0, True),
    ("ort/int2-nbits", 6.0, True),
    ("ort/2bit-fast", 6.0, False),
    ("litert/int8-xnn [xnnpack]", 3.0, False),
    ("litert/int4-xnn [xnnpack]", 6.0, False),
    ("litert/int8 [builtin]", 3.0, True),
    ("litert/2bit-fast [builtin]", 6.0, True),
)


class Meter:
    """Wall time and how many cores *other* processes kept busy since creation (``/proc/stat``).

    This process and its children (the export subprocesses) count as its own: bench_onnx's
    ``_Clock`` counts only the process itself, and would call the exports foreign load.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._busy = _cpu_seconds()
        self._own = _own_cpu()

    def foreign(self) -> float | None:
        """Foreign busy cores on average; None off Linux."""
        end = _cpu_seconds()
        if not (self._busy and end):
            return None
        wall = time.perf_counter() - self.start
        return max(0.0, (end[0] - self._busy[0]) - (_own_cpu() - self._own)) / wall


def _own_cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        use = resource.getrusage(who)
        total += use.ru_utime + use.ru_stime
    return total


# ------------------------------------------------------------------------------------ export
def build_model(size: LmSize) -> Any:
    """The seeded ``TinyBitNetLM`` of ``size`` (eval mode)."""
    import torch

    from bitnet_export.zoo.transformer import TinyBitNetLM, TinyLMConfig

    torch.manual_seed(size.seed)
    sizes = {k: v for k, v in asdict(size).items() if k != "seed"}
    cfg = TinyLMConfig(**sizes)
    return TinyBitNetLM(cfg).eval()


def export_one(size: LmSize, exp: Export, path: Path, tokenizer: Path, prefill_len: int) -> dict[str, Any]:
    """Build the model, export it as ``exp`` to ``path``; sizes, times and this process's peak RSS."""
    import bitnet_export
    from bitnet_export.llm.export import export_llm
    from bitnet_export.llm.tokenizer import BOS, EOS

    t0 = time.perf_counter()
    model = build_model(size)
    params = sum(p.numel() for p in model.parameters())
    if exp.float_model:
        bitnet_export.configure_model(model, enabled=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t1 = time.perf_counter()
    res = export_llm(
        model,
        path,
        exp.target,
        size.max_seq_len,
        exp.weights,
        tokenizer,
        bos_token_id=BOS,
        eos_token_ids=[EOS],
        prefill_len=prefill_len if exp.target == "litert-lm" else None,
        activation_quant=exp.activation_quant,
        kernels=exp.kernels,
    )
    seconds = time.perf_counter() - t1
    return {
        "key": exp.key,
        "params": params,
        "path": str(res.path),
        "size_bytes": res.size_bytes,
        "files": [str(f) for f in res.files],
        "layers_quantized": len(res.layers),
        "prefill_len": res.prefill_len,
        "export_seconds": seconds,
        "build_seconds": t1 - t0,
        "rss_before_export_bytes": before,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "self_check": res.self_check,
    }


def _export_child(payload: str) -> int:
    """Entry of the export subprocess: one JSON line on stdout."""
    _quiet_export_logs()
    spec = json.loads(payload)
    out = export_one(
        LmSize(**spec["size"]),
        Export(**spec["export"]),
        Path(spec["path"]),
        Path(spec["tok"]),
        spec["prefill"],
    )
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def export_all(
    size: LmSize,
    folder: Path,
    exports: Sequence[Export],
    log: Callable[[str], None],
    prefill_len: int,
    isolate: bool = True,
) -> dict[str, dict[str, Any]]:
    """Export every mode into ``folder``; each in a subprocess when ``isolate`` (own peak RSS)."""
    from bitnet_export.llm.tokenizer import write_byte_tokenizer

    tok = write_byte_tokenizer(folder / "tokenizer.json")
    results: dict[str, dict[str, Any]] = {}
    for exp in exports:
        path = folder / (f"{exp.runtime}-{exp.mode}" + (".litertlm" if exp.target == "litert-lm" else ""))
        if isolate:
            payload = json.dumps(
                {
                    "size": asdict(size),
                    "export": asdict(exp),
                    "path": str(path),
                    "tok": str(tok),
                    "prefill": prefill_len,
                }
            )
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--_export", payload],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(
                    f"export {exp.key} (weights={exp.weights}) failed (rc {proc.returncode}):\n"
                    f"{proc.stderr[-4000:]}"
                )
            res = json.loads(lines[-1][len("RESULT ") :])
        else:
            res = export_one(size, exp, path, tok, prefill_len)
        res["isolated"] = isolate
        results[exp.key] = res
        log(
            f"  exported {exp.key:<17} weights={exp.weights:<11} {res['size_bytes'] / 1e6:8.1f} MB in "
            f"{res['export_seconds']:5.1f} s, peak RSS {res['peak_rss_bytes'] / 2**20:6.0f} MiB"
        )
    return results


# ------------------------------------------------------------------------------------ runners
@dataclass
class Run:
    """One timed pass: prefill, then greedy decode steps."""

    prefill_s: float
    decode_s: list[float]
    tokens: list[int]
    #: per step: (top-1 - top-2 logit) / max |logit|: how close the greedy choice was to a tie
    margins: list[float] = field(default_factory=list)


def _pick(logits: np.ndarray) -> tuple[int, float]:
    """Greedy token of a logits row and its relative margin over the runner-up."""
    row = np.asarray(logits, np.float32)
    top2 = np.partition(row, -2)[-2:]
    return int(row.argmax()), float((top2[1] - top2[0]) / (np.abs(row).max() or 1.0))


class OrtRow:
    """An ``ort-genai`` export's ``model.onnx`` in an ORT CPU session (one thread count)."""

    runtime = "ort"

    def __init__(self, key: str, folder: Path, record: dict[str, Any], threads: int) -> None:
        import onnxruntime as ort

        self.key, self.kernel = key, "cpu"
        self.record = record
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"]
        )

    def run(self, prompt: Sequence[int], first: int, steps: int) -> Run:
        r = self.record
        past = {n: np.zeros((1, r["kv_heads"], 0, r["head_dim"]), np.float32) for n in r["cache_inputs"]}
        names = ["logits", *r["cache_outputs"]]
        s = len(prompt)
        feed = {
            "input_ids": np.array([list(prompt)], np.int64),
            "attention_mask": np.ones((1, s), np.int64),
            "position_ids": np.arange(s, dtype=np.int64)[None],
            **past,
        }
        t0 = time.perf_counter()
        out = self.session.run(names, feed)
        prefill = time.perf_counter() - t0
        pos, tok = s, first
        times, tokens, margins = [], [], []
        for _ in range(steps):
            feed = {
                "input_ids": np.array([[tok]], np.int64),
                "attention_mask": np.ones((1, pos + 1), np.int64),
                "position_ids": np.array([[pos]], np.int64),
                **dict(zip(r["cache_inputs"], out[1:], strict=True)),
            }
            t0 = time.perf_counter()
            out = self.session.run(names, feed)
            times.append(time.perf_counter() - t0)
            tok, margin = _pick(out[0][0, -1])
            tokens.append(tok)
            margins.append(margin)
            pos += 1
        return Run(prefill, times, tokens, margins)


class LiteRtRow:
    """A ``litert-lm`` bundle's TFLite model in one Interpreter; ``prefill``/``decode`` runners."""

    runtime = "litert"

    def __init__(self, key: str, model: Path, record: dict[str, Any], threads: int, kernel: str) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = {
            "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            "xnnpack": OpResolverType.AUTO,
        }[kernel]
        self.key, self.kernel = f"{key} [{kernel}]", kernel
        self.record = record
        self.interp = Interpreter(
            model_path=str(model), experimental_op_resolver_type=resolver, num_threads=threads
        )
        self.prefill = self.interp.get_signature_runner("prefill")
        self.decode = self.interp.get_signature_runner("decode")
        self.chunk = int(record["prefill_len"])

    def ops(self) -> dict[str, Any]:
        """Subgraph 0 (``prefill``; ``decode`` has the same ops plus the head): op counts, XNNPACK
        partitions and the ops they left to builtin kernels. Call after a run (delegation is
        applied at the first allocation)."""
        from runtimes._worker_side import delegate_placement

        nodes = self.interp._get_ops_details()
        placed = delegate_placement(nodes)
        left = Counter(op.split(" ", 1)[0] for op in placed["undelegated_ops"])
        return {
            "ops_subgraph0": dict(
                sorted(Counter(str(d["op_name"]) for d in nodes if d["op_name"] != "DELEGATE").items())
            ),
            "delegate_partitions": placed["delegate_nodes"],
            "undelegated": dict(sorted(left.items())) if placed["delegate_nodes"] else {},
        }

    def run(self, prompt: Sequence[int], first: int, steps: int) -> Run:
        r = self.record
        if len(prompt) != self.chunk:
            raise ValueError(f"{self.key}: the prompt must be the prefill length {self.chunk}")
        shape = (1, r["kv_heads"], r["max_seq_len"], r["head_dim"])
        caches = {n: np.zeros(shape, np.float32) for n in r["cache_inputs"]}
        t0 = time.perf_counter()
        out = self.prefill(
            tokens=np.array([list(prompt)], np.int32),
            input_pos=np.arange(self.chunk, dtype=np.int32),
            **caches,
        )
        prefill = time.perf_counter() - t0
        caches = {n: out[n] for n in r["cache_inputs"]}
        pos, tok = self.chunk, first
        times, tokens, margins = [], [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = self.decode(
                tokens=np.array([[tok]], np.int32), input_pos=np.array([pos], np.int32), **caches
            )
            times.append(time.perf_counter() - t0)
            tok, margin = _pick(out["logits"][0, -1])
            caches = {n: out[n] for n in r["cache_inputs"]}
            tokens.append(tok)
            margins.append(margin)
            pos += 1
        return Run(prefill, times, tokens, margins)


Row = OrtRow | LiteRtRow


def ort_kernels(
    folder: Path, steps: int, prompt: Sequence[int], first: int, record: dict[str, Any]
) -> dict[str, Any]:
    """What ORT really runs, 1 thread: op types of its optimized graph, and time per op type over
    ``steps`` profiled decode calls (ORT's profiler; these calls are not part of the timings)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bench_llm_opt_") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "opt.data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(Path(tmp) / "opt.onnx"), load_external_data=False).graph
        op_types = dict(sorted(Counter(n.op_type for n in graph.node).items()))
        row = OrtRow.__new__(OrtRow)
        row.key, row.kernel, row.record, row.session = "profile", "cpu", record, sess
        row.run(prompt, first, steps)
        prof = json.loads(Path(sess.end_profiling()).read_text())
    # the prefill call is profiled too: keep the decode calls (the last `steps` model_run events)
    runs = [e for e in prof if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start = runs[-steps]["ts"] if len(runs) >= steps else 0
    per_op: Counter[str] = Counter()
    total = 0.0
    for e in prof:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            per_op[e["args"]["op_name"]] += e["dur"]
            total += e["dur"]
    wall = sum(e["dur"] for e in runs[-steps:]) if runs else 0.0
    return {
        "op_types": op_types,
        "decode_us_per_op_type": {k: v / steps for k, v in per_op.most_common()},
        "decode_kernel_us_per_step": total / steps,
        "decode_run_us_per_step": wall / steps,
    }


def load_rows(
    exports: dict[str, dict[str, Any]], threads: int, workdir: Path, xnnpack: bool = True
) -> list[Row]:
    """Every export loaded for ``threads`` threads (LiteRT: builtin, and XNNPACK when asked)."""
    from bitnet_export.llm.export import bundle_tflite, llm_info

    rows: list[Row] = []
    for key, res in exports.items():
        path = Path(res["path"])
        record = llm_info(path)
        if key.startswith("ort/"):
            rows.append(OrtRow(key, path, record, threads))
            continue
        model = workdir / (path.stem + ".tflite")
        if not model.exists():
            model.write_bytes(bundle_tflite(path))
        kernels = ("xnnpack",) if record.get("activation_quant") == "xnnpack" else ("builtin", "xnnpack")
        for kernel in kernels if xnnpack else tuple(k for k in kernels if k == "builtin"):
            rows.append(LiteRtRow(key, model, record, threads, kernel))
    return rows


def time_rows(
    rows: Sequence[Row], prompt: Sequence[int], first: int, steps: int, rounds: int, warmup_steps: int
) -> dict[str, list[Run]]:
    """Warm every row up, then ``rounds`` rounds of every row once (order rotated per round)."""
    for row in rows:
        row.run(prompt, first, warmup_steps)
    runs: dict[str, list[Run]] = {row.key: [] for row in rows}
    for r in range(rounds):
        shift = r % len(rows)
        for row in [*rows[shift:], *rows[:shift]]:
            runs[row.key].append(row.run(prompt, first, steps))
    return runs


def _lead(a: Sequence[int], b: Sequence[int]) -> int:
    """Leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def summarize(
    rows: Sequence[Row], runs: dict[str, list[Run]], threads: int, exports: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One result row per loaded row; ratios against the fp32 rows of the same runs."""
    out: list[dict[str, Any]] = []
    stats: dict[str, dict[str, float]] = {}
    for row in rows:
        rr = runs[row.key]
        tps = [len(r.decode_s) / sum(r.decode_s) for r in rr]
        stats[row.key] = {
            "decode_tok_s": statistics.median(tps),
            "prefill_ms": statistics.median(r.prefill_s * 1e3 for r in rr),
        }
    tokens = {row.key: runs[row.key][0].tokens for row in rows}
    for row in rows:
        rr = runs[row.key]
        base_key = "ort/fp32"
        if row.runtime == "litert":
            base_key = (
                "litert/fp32 [xnnpack]" if "litert/fp32 [xnnpack]" in stats else "litert/fp32 [builtin]"
            )
        same_kernel = base_key if row.runtime == "ort" else f"litert/fp32 [{row.kernel}]"
        export_key = row.key.split(" ")[0]
        fp32_file = exports[f"{row.runtime}/fp32"]["size_bytes"]
        ref_tokens = "ort/fp32" if export_key.endswith("/fp32") else "ort/int8"
        s, b, k = stats[row.key], stats.get(base_key), stats.get(same_kernel)
        tps = [len(r.decode_s) / sum(r.decode_s) for r in rr]
        out.append(
            {
                "threads": threads,
                "runtime": row.runtime,
                "row": row.key,
                "export": export_key,
                "kernel": row.kernel,
                "weights": export_key.split("/")[1],
                "decode_tok_s": s["decode_tok_s"],
                "decode_tok_s_min": min(tps),
                "decode_tok_s_max": max(tps),
                "decode_ms_per_token": 1e3 / s["decode_tok_s"],
                "prefill_ms": s["prefill_ms"],
                "baseline": base_key if b else None,
                "decode_x_fp32": s["decode_tok_s"] / b["decode_tok_s"] if b else None,
                "prefill_x_fp32": s["prefill_ms"] / b["prefill_ms"] if b else None,
                "baseline_same_kernel": same_kernel if k else None,
                "decode_x_fp32_same_kernel": s["decode_tok_s"] / k["decode_tok_s"] if k else None,
                "file_bytes": exports[export_key]["size_bytes"],
                "size_x_fp32": exports[export_key]["size_bytes"] / fp32_file,
                "tokens_ref": ref_tokens if ref_tokens in tokens else None,
                "tokens_same_as_ref": _lead(tokens[row.key], tokens[ref_tokens])
                if ref_tokens in tokens
                else None,
                "tokens_steps": len(tokens[row.key]),
                "tokens_stable_over_rounds": all(r.tokens == rr[0].tokens for r in rr),
                "tokens": tokens[row.key],
                **_divergence(rr[0], runs[ref_tokens][0] if ref_tokens in runs else None),
            }
        )
    return out


def _divergence(run: Run, ref: Run | None) -> dict[str, Any]:
    """Where a row's greedy tokens leave the reference's, and how close both choices were to a
    tie there (relative top-1 - top-2 margins; ~1e-3 and below: a near-tie that float summation
    order alone can flip)."""
    if ref is None:
        return {}
    step = _lead(run.tokens, ref.tokens)
    if step >= min(len(run.tokens), len(ref.tokens)):
        return {"diverge_step": None}
    return {
        "diverge_step": step,
        "margin_at_diverge": run.margins[step],
        "ref_margin_at_diverge": ref.margins[step],
        "ref_median_margin": statistics.median(ref.margins),
    }


def check_targets(
    results: list[dict[str, Any]],
    exports: dict[str, dict[str, Any]],
    indicative: bool,
    embedding_bytes: int = 0,
) -> list[dict[str, Any]]:
    """Size and decode-speed targets (speed at ``TARGET_THREADS``); ``informational`` rows (the
    size without the float embedding) are shown, not counted."""
    checks: list[dict[str, Any]] = []

    def add(row: str, metric: str, op: str, limit: float, value: float, **extra: Any) -> None:
        passed = value <= limit if op == "<=" else value >= limit
        checks.append(
            {"row": row, "metric": metric, "op": op, "limit": limit, "value": value, "passed": passed,
             "indicative_only": indicative, "informational": False, **extra}
        )  # fmt: skip

    for key in TERNARY_FILES:
        if key not in exports:
            continue
        fp32 = exports[f"{key.split('/')[0]}/fp32"]["size_bytes"]
        size = exports[key]["size_bytes"]
        add(key, "size_x_fp32", "<=", SIZE_LIMIT, size / fp32)
        if embedding_bytes:
            value = (size - embedding_bytes) / (fp32 - embedding_bytes)
            add(key, "size_x_fp32 w/o emb", "<=", SIZE_LIMIT, value, informational=True)
    for key, limit, info in SPEED_TARGETS:
        found = [r for r in results if r["row"] == key and r["threads"] == TARGET_THREADS]
        if not found or found[0]["decode_x_fp32"] is None:
            continue
        add(key, f"decode_x_fp32@{TARGET_THREADS}t", ">=", limit, found[0]["decode_x_fp32"],
            baseline=found[0]["baseline"], informational=info)  # fmt: skip
        same = found[0]["decode_x_fp32_same_kernel"]
        if found[0]["baseline_same_kernel"] != found[0]["baseline"] and same is not None:
            add(key, f"decode_x_fp32@{TARGET_THREADS}t", ">=", limit, same,
                baseline=found[0]["baseline_same_kernel"], informational=True)  # fmt: skip
    return checks


# ------------------------------------------------------------------------------------ report
def export_table(exports: dict[str, dict[str, Any]], embedding_bytes: int) -> str:
    """Files, export cost; ``x w/o emb``: size ratio without the float embedding (both files)."""
    head = (
        f"{'export':<17} {'file MB':>9} {'size x':>7} {'x w/o emb':>9} {'export s':>9} "
        f"{'peak RSS MiB':>13} {'RSS before':>11}"
    )
    lines = [head, "-" * len(head)]
    for key, e in exports.items():
        fp32 = exports[f"{key.split('/')[0]}/fp32"]["size_bytes"]
        size = e["size_bytes"]
        lines.append(
            f"{key:<17} {size / 1e6:>9.1f} {size / fp32:>7.4f} "
            f"{(size - embedding_bytes) / (fp32 - embedding_bytes):>9.4f} {e['export_seconds']:>9.1f} "
            f"{e['peak_rss_bytes'] / 2**20:>13.0f} {e['rss_before_export_bytes'] / 2**20:>11.0f}"
        )
    return "\n".join(lines)


def speed_table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'thr':>3} {'row':<27} {'decode tok/s':>12} {'x fp32':>7} {'x fp32 same kern':>16} "
        f"{'prefill ms':>11} {'x fp32':>7} {'tokens=ref':>11}"
    )
    lines = [head, "-" * len(head)]

    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for r in results:
        same = f"{r['tokens_same_as_ref']}/{r['tokens_steps']}" if r["tokens_ref"] else "-"
        lines.append(
            f"{r['threads']:>3} {r['row']:<27} {r['decode_tok_s']:>12.1f} {f(r['decode_x_fp32'], '.2f'):>7} "
            f"{f(r['decode_x_fp32_same_kernel'], '.2f'):>16} {r['prefill_ms']:>11.1f} "
            f"{f(r['prefill_x_fp32'], '.2f'):>7} {same:>11}"
        )
    return "\n".join(lines)


@dataclass
class Settings:
    size: LmSize
    threads: tuple[int, ...]
    rounds: int
    steps: int
    prompt_len: int
    warmup_steps: int
    quick: bool
    xnnpack: bool = True
    isolate: bool = True
    profile_steps: int = 8
    exports: tuple[Export, ...] = EXPORTS
    extra: dict[str, Any] = field(default_factory=dict)


def bench(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Export, load and time everything; the result document (without the run's timing)."""
    size = settings.size
    prompt_gen = np.random.default_rng(3)
    # token ids of the byte tokenizer's range, so every row sees the same ids
    prompt = [int(t) for t in prompt_gen.integers(0, 256, settings.prompt_len)]
    first = int(prompt_gen.integers(0, 256))
    if settings.prompt_len + settings.steps > size.max_seq_len:
        raise ValueError("prompt + steps exceed max_seq_len")
    results: list[dict[str, Any]] = []
    kernels: dict[str, Any] = {}
    foreign: dict[int, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="bench_llm_") as tmp:
        folder = Path(tmp)
        log(f"model: {size.describe()}")
        exports = export_all(size, folder, settings.exports, log, settings.prompt_len, settings.isolate)
        params = next(iter(exports.values()))["params"]
        log(f"  {params / 1e6:.1f}M parameters")
        for key, res in exports.items():
            if key.startswith("ort/") and settings.profile_steps:
                kernels[key] = ort_kernels(
                    Path(res["path"]), settings.profile_steps, prompt, first, _info(res)
                )
        for threads in settings.threads:
            t0 = time.perf_counter()
            rows = load_rows(exports, threads, folder, settings.xnnpack)
            log(f"  loaded {len(rows)} rows at {threads} thread(s) in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            meter = Meter()
            runs = time_rows(rows, prompt, first, settings.steps, settings.rounds, settings.warmup_steps)
            foreign[threads] = meter.foreign()
            for row in rows:
                if isinstance(row, LiteRtRow) and row.key not in kernels:
                    kernels[row.key] = row.ops()
            log(
                f"  timed {settings.rounds} rounds at {threads} thread(s) in {time.perf_counter() - t0:.1f} s"
            )
            results += summarize(rows, runs, threads, exports)
            del rows, runs  # free sessions/interpreters before the next thread count
    embedding_bytes = size.vocab_size * size.hidden * 4
    checks = check_targets(results, exports, settings.quick, embedding_bytes)
    return {
        "model": size.describe(),
        "size": asdict(size),
        "params": params,
        "embedding_bytes": embedding_bytes,
        "prompt_tokens": settings.prompt_len,
        "decode_steps": settings.steps,
        "rounds": settings.rounds,
        "threads": list(settings.threads),
        "exports": exports,
        "results": results,
        "kernels": kernels,
        "targets": checks,
        "foreign_busy_cores_timing": foreign,
    }


def _info(res: dict[str, Any]) -> dict[str, Any]:
    from bitnet_export.llm.export import llm_info

    return llm_info(Path(res["path"]))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("onnxruntime", "ai-edge-litert", "torch"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def print_report(doc: dict[str, Any]) -> None:
    print()
    v = doc["versions"]
    print(
        f"{doc['model']}: {doc['params'] / 1e6:.1f}M parameters; onnxruntime {v['onnxruntime']}, "
        f"ai-edge-litert {v['ai-edge-litert']}, {doc['cpu_model']}, {doc['cpu_count']} cores"
    )
    print(export_table(doc["exports"], doc["embedding_bytes"]))
    print(
        f"(the token embedding, {doc['embedding_bytes'] / 1e6:.1f} MB, stays float32 in every file: "
        "'x w/o emb' leaves it out of both sides)"
    )
    print(
        f"\nprompt {doc['prompt_tokens']} tokens, {doc['decode_steps']} greedy decode steps; median of "
        f"{doc['rounds']} interleaved rounds; ratios vs fp32 of the same run (litert: fp32 [xnnpack]; "
        "'same kern': vs fp32 on the row's own kernels)"
    )
    print("litert caches go in and out of the signature runner as numpy arrays (a copy each way per call)")
    print(speed_table(doc["results"]))
    first = doc["threads"][0]
    for r in doc["results"]:
        if r["threads"] == first and r.get("diverge_step") is not None:
            print(
                f"  {r['row']}: greedy tokens leave {r['tokens_ref']}'s at step {r['diverge_step']}; "
                f"relative top-2 margin there {r['margin_at_diverge']:.1e} "
                f"(ref {r['ref_margin_at_diverge']:.1e}, ref median {r['ref_median_margin']:.1e})"
            )
    for key, k in doc["kernels"].items():
        if "op_types" in k:
            top = list(k["decode_us_per_op_type"].items())[:6]
            print(
                f"\n{key}: ORT optimized graph: " + ", ".join(f"{o} x{n}" for o, n in k["op_types"].items())
            )
            print(
                f"  1-thread decode step, profiled: {k['decode_run_us_per_step'] / 1e3:.2f} ms run, "
                f"{k['decode_kernel_us_per_step'] / 1e3:.2f} ms in kernels: "
                + ", ".join(f"{o} {us / 1e3:.2f}" for o, us in top)
            )
        else:
            print(
                f"\n{key}: LiteRT ops (subgraph 0): "
                + ", ".join(f"{o} x{n}" for o, n in k["ops_subgraph0"].items())
            )
            if k["delegate_partitions"]:
                left = ", ".join(f"{o} x{n}" for o, n in k["undelegated"].items()) or "nothing"
                print(f"  XNNPACK: {k['delegate_partitions']} partition(s); left to builtin kernels: {left}")
    note = "  (--quick: indicative only)" if doc["quick"] else ""
    print(f"\ntargets{note}:")
    for c in doc["targets"]:
        word = "ok    " if c["passed"] else "MISSED"
        if c["informational"]:
            word = "(info) " + ("ok" if c["passed"] else "over" if c["op"] == "<=" else "under")
        base = f" (vs {c['baseline']})" if c.get("baseline") else ""
        print(f"  {word:<12} {c['row']:<27} {c['metric']:<19} {c['value']:.4f} {c['op']} {c['limit']}{base}")
    binding = [c for c in doc["targets"] if not c["informational"]]
    missed = sum(not c["passed"] for c in binding)
    print(f"{len(binding) - missed}/{len(binding)} targets met; total time {doc['total_seconds']:.1f} s")


def _print_load(whole: float | None, timing: dict[int, float | None]) -> None:
    """Say how busy other processes kept the machine; warn when the timings are suspect."""
    if whole is None:
        return
    during = ", ".join(f"{t} thread(s): {v:.2f}" for t, v in timing.items() if v is not None)
    print(
        f"other processes kept {whole:.2f} of {os.cpu_count()} cores busy during the run "
        f"({during} while timing)"
    )
    if any(v is not None and v > 0.2 for v in timing.values()):
        print(
            "WARNING: other processes competed for the cores while timing; the ratios (2 threads above "
            "all) are unreliable: rerun on an idle machine"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (missed targets are reported, not failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_export"]:
        return _export_child(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small model, fewer steps/rounds (smoke run)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="decode steps per run (default 64, quick 16)")
    parser.add_argument("--prompt", type=int, default=32, help="prompt = LiteRT prefill length (default 32)")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 258)")
    parser.add_argument("--no-xnnpack", action="store_true", help="skip the LiteRT XNNPACK reference rows")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file ({DEFAULT_JSON})")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    steps = args.steps if args.steps is not None else (16 if args.quick else 64)
    if rounds < 1 or steps < 1 or args.prompt < 1 or min(args.threads) < 1:
        parser.error("--rounds, --steps, --prompt and --threads must be >= 1")
    size = QUICK if args.quick else FULL
    if args.vocab is not None and args.vocab < 258:
        parser.error("--vocab must hold the byte tokenizer's 258 ids")
    size = LmSize(
        **{
            **asdict(size),
            "max_seq_len": max(size.max_seq_len, args.prompt + steps),
            "vocab_size": args.vocab or size.vocab_size,
        }
    )
    settings = Settings(
        size=size,
        threads=tuple(args.threads),
        rounds=rounds,
        steps=steps,
        prompt_len=args.prompt,
        warmup_steps=2 if args.quick else 4,
        quick=args.quick,
        xnnpack=not args.no_xnnpack,
    )
    _quiet_export_logs()
    clock, meter = _Clock(), Meter()
    doc = bench(settings, clock.log)
    total, foreign = time.perf_counter() - meter.start, meter.foreign()
    doc |= {
        "benchmark": "bench_llm",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "versions": _versions(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "foreign_busy_cores": foreign,
        "total_seconds": total,
    }
    print_report(doc)
    _print_load(foreign, doc["foreign_busy_cores_timing"])
    _write_json(args.json, doc)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
