"""Smoke test of ``bench/bench_llm.py`` on a tiny LM: real exports, real ORT and LiteRT calls.

It checks the report's structure and that every ratio is taken against the fp32 row of the same
run (same thread count, same runtime), not the timings themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_lm_builder")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_llm

TINY = bench_llm.LmSize(
    vocab_size=300, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, max_seq_len=32
)
PROMPT, STEPS = 8, 4
ROWS = ("ort/fp32", "ort/int8", "ort/int8-nbits", "litert/fp32")


@pytest.fixture(scope="module")
def doc() -> dict:
    settings = bench_llm.Settings(
        size=TINY,
        threads=(1,),
        rounds=2,
        steps=STEPS,
        prompt_len=PROMPT,
        warmup_steps=1,
        quick=True,
        isolate=False,  # exports in this process: a subprocess per export costs seconds each
        profile_steps=2,
        exports=tuple(e for e in bench_llm.EXPORTS if e.key in ROWS),
    )
    return bench_llm.bench(settings, lambda msg: None)


def test_rows_and_ratios_against_the_same_run(doc: dict) -> None:
    rows = {r["row"]: r for r in doc["results"]}
    assert set(rows) == {
        "ort/fp32",
        "ort/int8",
        "ort/int8-nbits",
        "litert/fp32 [builtin]",
        "litert/fp32 [xnnpack]",
    }
    for r in rows.values():
        assert r["threads"] == 1 and r["decode_tok_s"] > 0 and r["prefill_ms"] > 0
        base = rows[r["baseline"]]
        assert r["decode_x_fp32"] == pytest.approx(r["decode_tok_s"] / base["decode_tok_s"])
        assert r["prefill_x_fp32"] == pytest.approx(r["prefill_ms"] / base["prefill_ms"])
        same = rows[r["baseline_same_kernel"]]
        assert r["decode_x_fp32_same_kernel"] == pytest.approx(r["decode_tok_s"] / same["decode_tok_s"])
        assert r["tokens_steps"] == STEPS and r["tokens_stable_over_rounds"]
    assert rows["ort/fp32"]["decode_x_fp32"] == 1.0
    assert rows["ort/int8"]["baseline"] == "ort/fp32"
    assert rows["litert/fp32 [builtin]"]["baseline"] == "litert/fp32 [xnnpack]"
    assert rows["litert/fp32 [builtin]"]["baseline_same_kernel"] == "litert/fp32 [builtin]"
    # the same float model on both runtimes: the same greedy tokens
    assert rows["litert/fp32 [builtin]"]["tokens_same_as_ref"] == STEPS
    assert rows["ort/int8"]["size_x_fp32"] < 1.0
    # kernels="nbits" computes int8's numbers: the same greedy tokens
    assert rows["ort/int8-nbits"]["tokens_same_as_ref"] == STEPS


def test_exports_kernels_and_targets(doc: dict) -> None:
    assert doc["params"] > 0 and doc["embedding_bytes"] == TINY.vocab_size * TINY.hidden * 4
    for e in doc["exports"].values():
        assert e["size_bytes"] > 0 and e["export_seconds"] > 0 and e["peak_rss_bytes"] > 0
    assert doc["exports"]["ort/fp32"]["layers_quantized"] == 0  # quantization off: float MatMuls
    assert doc["exports"]["ort/int8"]["layers_quantized"] == 7 * TINY.layers + 1
    assert "MatMulInteger" in doc["kernels"]["ort/int8"]["op_types"]
    assert "MatMulInteger" not in doc["kernels"]["ort/fp32"]["op_types"]
    assert doc["kernels"]["litert/fp32 [xnnpack]"]["delegate_partitions"] >= 1
    assert doc["kernels"]["litert/fp32 [builtin]"]["delegate_partitions"] == 0
    ops = doc["kernels"]["ort/int8-nbits"]["op_types"]
    assert "MatMulNBits" in ops and "MatMulInteger" not in ops
    (check,) = [c for c in doc["targets"] if not c["informational"]]  # only the exact int8 speed applies
    assert check["row"] == "ort/int8-nbits" and check["baseline"] == "ort/fp32"
    row = next(r for r in doc["results"] if r["row"] == "ort/int8-nbits")
    assert check["value"] == row["decode_x_fp32"] and check["passed"] == (check["value"] >= 3.0)
