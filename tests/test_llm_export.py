"""export_llm end to end: KV-cache decoders on onnxruntime-genai, LiteRT-LM and step loops.

The reference is always PyTorch's greedy decoding of the same model (HF ``generate`` for the
transformers models, the model's own forward for TinyBitNetLM); every runtime really runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bitnet_export.backends.tflite.flatbuffer import Quant, TflModelBuilder, read_model
from bitnet_export.backends.tflite.lower_bitlinear import XNNPACK_PAD
from bitnet_export.cli import main
from bitnet_export.errors import ExportError
from bitnet_export.llm.export import (
    _float_layers,
    bundle_tflite,
    bundle_tokenizer,
    export_llm,
    llm_info,
    self_check,
)
from bitnet_export.llm.generate import CacheOverflowError, LiteRtLmLoop, OrtGenaiLoop, torch_greedy
from bitnet_export.llm.spec import decoder_spec
from bitnet_export.llm.tokenizer import BOS, EOS, VOCAB_SIZE, encode, write_byte_tokenizer
from bitnet_export.parity.generation import verify_generation
from bitnet_export.training.convert import bitnet_layers, convert_to_bitnet
from bitnet_export.zoo.transformer import TinyBitNetLM, TinyLMConfig
from runtimes.arm.env import find_env
from runtimes.gpu.ort_env import find_site
from runtimes.gpu.vulkan import unavailable_reason
from runtimes.litert_cpu import LiteRtInterpreterAdapter
from runtimes.litert_lm import LiteRtLmAdapter
from runtimes.ort_cpu import OrtCpuAdapter
from runtimes.ort_genai import OrtGenaiAdapter
from runtimes.protocol import RuntimeAdapterError

transformers = pytest.importorskip("transformers", reason="the hf extra: pip install '.[hf]'")

MAX_SEQ = 64
PREFILL = 8
STEPS = 32
ARM = "arm64:neoverse-n1"
#: three prompts: shorter than the prefill length, longer (two prefill chunks + decode), one token
PROMPTS = [
    [BOS, *encode("def f(x):")],
    [BOS, *encode("class Foo(object):\n    pass")],
    [BOS],
]
HF_KW = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=EOS,
)


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Norm weights off 1 so the norms' maths is exercised (seeded)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _hf_bitnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.BitNetForCausalLM(transformers.BitNetConfig(**HF_KW)).eval()
    return convert_to_bitnet(_perturbed(model)).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_byte_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module")
def hf_bitnet() -> torch.nn.Module:
    return _hf_bitnet()


@pytest.fixture(scope="module")
def zoo_lm() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TinyLMConfig(vocab_size=VOCAB_SIZE, max_seq_len=MAX_SEQ)
    return _perturbed(TinyBitNetLM(cfg)).eval()


@pytest.fixture(scope="module")
def exports(
    tmp_path_factory: pytest.TempPathFactory, hf_bitnet: torch.nn.Module, tokenizer: Path
) -> dict[str, Path]:
    """The HF BitNet model in each convention: ORT integer and float kernels, LiteRT-LM int2."""
    out = tmp_path_factory.mktemp("llm")
    export_llm(hf_bitnet, out / "ort", "ort-genai", MAX_SEQ, "int8", tokenizer)
    export_llm(hf_bitnet, out / "ort-float", "ort-genai", MAX_SEQ, "int8", kernels="float")
    export_llm(hf_bitnet, out / "lm.litertlm", "litert-lm", MAX_SEQ, "int2", tokenizer, prefill_len=PREFILL)
    # the GPU delegate's FC computes in float: the per-token quantization as graph ops
    graph = out / "graph.litertlm"
    export_llm(
        hf_bitnet,
        graph,
        "litert-lm",
        MAX_SEQ,
        "int2",
        tokenizer,
        prefill_len=PREFILL,
        activation_quant="graph",
    )
    return {
        "ort": out / "ort",
        "ort-float": out / "ort-float",
        "litert": out / "lm.litertlm",
        "litert-graph": graph,
    }


def _assert_logits_close(report: object) -> None:
    """Logits equal to float rounding, except where a per-token activation quantizer's input
    sits on a rounding boundary (x / s at .5) and one integer code flips: one LSB of one
    activation moves the logits by ~1 %. Measured: at most one such step in 32 on a prompt."""
    rows = report.rows  # type: ignore[attr-defined]
    errors = sorted(r.max_rel_logits for r in rows if r.max_rel_logits is not None)  # litert-lm: text
    assert errors[-1] < 5e-2, errors
    assert errors[len(errors) // 2] < 1e-5, errors


def _assert_all_equal(report: object, steps: int = STEPS) -> None:
    table = report.format_table()  # type: ignore[attr-defined]
    print(table)
    assert report.passed, table  # type: ignore[attr-defined]
    for row in report.rows:  # type: ignore[attr-defined]
        assert row.steps == steps, (row.target, row.prompt, row.steps)


# ----------------------------------------------------------------------------- the files
def test_ort_genai_folder_is_complete(exports: dict[str, Path]) -> None:
    folder = exports["ort"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "genai_config.json",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((folder / "genai_config.json").read_text())
    decoder = config["model"]["decoder"]
    assert config["model"]["context_length"] == MAX_SEQ
    assert config["model"]["eos_token_id"] == [EOS]
    assert (decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"]) == (2, 2, 16)
    record = llm_info(folder)
    assert record["cache_inputs"][:2] == ["past_key_values.0.key", "past_key_values.0.value"]
    # dynamic lengths under onnxruntime-genai's names
    import onnx

    model = onnx.load(str(folder / "model.onnx"))
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input
    }
    assert dims["input_ids"] == ["batch_size", "sequence_length"]
    assert dims["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert dims["past_key_values.1.value"] == ["batch_size", 2, "past_sequence_length", 16]


def test_litert_bundle_has_two_signatures_sharing_weights(exports: dict[str, Path], tokenizer: Path) -> None:
    from ai_edge_litert import schema_py_generated as schema

    data = bundle_tflite(exports["litert"])
    read_model(data)  # the project's reader checks every buffer size (packed INT2 included)
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    sigs = {s.signatureKey.decode(): s for s in model.signatureDefs}
    assert set(sigs) == {"prefill", "decode"}
    assert len(model.subgraphs) == 2
    # each weight buffer once: both subgraphs' INT2 weight tensors point at the same buffers
    int2 = schema.TensorType.INT2
    weights = [{t.buffer for t in sg.tensors if t.type == int2} for sg in model.subgraphs]
    # decode: 7 per block x 2 + lm_head; prefill has no logits, so the last block's o_proj and
    # MLP (which only feed the logits) are dead code and gone
    assert len(weights[1]) == 15 and len(weights[0]) == 9 and weights[0] <= weights[1]
    decode_out = sorted(o.name.decode() for o in sigs["decode"].outputs)
    assert decode_out == sorted(["logits", *[f"kv_cache_{kv}_{i}" for i in range(2) for kv in "kv"]])
    assert bundle_tokenizer(exports["litert"]) == tokenizer.read_bytes()
    record = llm_info(exports["litert"])
    assert (record["max_seq_len"], record["prefill_len"], record["eos_token_ids"]) == (
        MAX_SEQ,
        PREFILL,
        [EOS],
    )


def test_tokenizer_json_round_trips_with_tokenizers(tokenizer: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    text = "def héllo(x):\n\treturn x  # ✓"
    assert tok.encode(text).ids == encode(text)
    assert tok.decode(encode(text)) == text
    assert tok.encode("<bos>a").ids == [BOS, ord("a")]


# ----------------------------------------------------------------------------- generation parity
def test_hf_bitnet_tokens_on_host_runtimes(hf_bitnet: torch.nn.Module, exports: dict[str, Path]) -> None:
    ort = verify_generation(hf_bitnet, exports["ort"], PROMPTS, STEPS, ["ort-genai", "ort-cpu"])
    _assert_all_equal(ort)
    _assert_logits_close(ort)
    lite = verify_generation(hf_bitnet, exports["litert"], PROMPTS, STEPS, ["litert-lm", "litert-builtin"])
    _assert_all_equal(lite)


def test_hf_bitnet_fast_2bit_path_holds(hf_bitnet: torch.nn.Module, tmp_path: Path) -> None:
    """ORT's MatMulNBits (2-bit blocks, int8 activations at accuracy level 4) keeps the tokens,
    with RMSNorm and RoPE fused into opset-23 kernels (the fast path's other speed-up)."""
    res = export_llm(hf_bitnet, tmp_path / "nbits", "ort-genai", MAX_SEQ, "matmulnbits")
    import onnx

    ops = [n.op_type for n in onnx.load(str(res.path / "model.onnx")).graph.node]
    assert "MatMulNBits" in ops and "MatMulInteger" not in ops
    layers = hf_bitnet.config.num_hidden_layers
    # input, post-attention and final norms; BitNet's attn/ffn sub-norms too; q and k per layer
    assert ops.count("RMSNormalization") == 4 * layers + 1 and "ReduceMean" not in ops, ops
    assert ops.count("RotaryEmbedding") == 2 * layers and "Neg" not in ops, ops
    report = verify_generation(hf_bitnet, res.path, PROMPTS, STEPS, ["ort-genai", "ort-cpu"])
    _assert_all_equal(report)
    _assert_logits_close(report)


def test_hf_bitnet_exact_nbits_kernels(hf_bitnet: torch.nn.Module, tmp_path: Path) -> None:
    """kernels="nbits": the exact per-token maths on MatMulNBits (2-bit weights): PyTorch's
    tokens in onnxruntime-genai and the plain loop, logits as close as the integer kernels'
    (bit-equality with MatMulInteger: tests/test_export_onnx_nbits_kernels.py)."""
    res = export_llm(hf_bitnet, tmp_path / "nb", "ort-genai", MAX_SEQ, "int2", kernels="nbits")
    import onnx

    ops = {n.op_type for n in onnx.load(str(res.path / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and "MatMulInteger" not in ops
    report = verify_generation(hf_bitnet, res.path, PROMPTS, STEPS, ["ort-genai", "ort-cpu"])
    _assert_all_equal(report)
    _assert_logits_close(report)


@pytest.mark.skipif(find_env() is None, reason="emulated aarch64 environment missing: run `make arm-env`")
def test_hf_bitnet_tokens_on_emulated_arm(hf_bitnet: torch.nn.Module, exports: dict[str, Path]) -> None:
    ort = verify_generation(hf_bitnet, exports["ort"], PROMPTS, STEPS, [f"{ARM}:ort"])
    _assert_all_equal(ort)
    lite = verify_generation(hf_bitnet, exports["litert"], PROMPTS, STEPS, [f"{ARM}:litert-builtin"])
    _assert_all_equal(lite)
    assert lite.rows[0].info["arch"] == "aarch64" and lite.rows[0].info["emulated"]


@pytest.mark.skipif(
    unavailable_reason() is not None or find_site() is None,
    reason="GPU environments missing: run `make gpu-env`",
)
def test_hf_bitnet_tokens_on_both_gpu_adapters(hf_bitnet: torch.nn.Module, exports: dict[str, Path]) -> None:
    ort = verify_generation(hf_bitnet, exports["ort-float"], PROMPTS, STEPS, ["ort-webgpu"])
    _assert_all_equal(ort)
    assert ort.rows[0].info["provider"] == "WebGpuExecutionProvider"
    _assert_logits_close(ort)
    lite = verify_generation(
        hf_bitnet, exports["litert-graph"], PROMPTS, STEPS, ["litert-gpu", "litert-builtin"]
    )
    _assert_all_equal(lite)
    _assert_logits_close(lite)
    assert lite.rows[0].info["provider"] == "gpu (webgpu/vulkan)"


def test_zoo_lm_both_targets(zoo_lm: torch.nn.Module, tokenizer: Path, tmp_path: Path) -> None:
    ort = export_llm(zoo_lm, tmp_path / "ort", "ort-genai", MAX_SEQ, "int2")
    lite = export_llm(
        zoo_lm,
        tmp_path / "lm.litertlm",
        "litert-lm",
        MAX_SEQ,
        "int2",
        tokenizer,
        prefill_len=PREFILL,
        bos_token_id=BOS,
        eos_token_ids=[EOS],
    )
    assert ort.self_check < 1e-5 and lite.self_check < 1e-5
    _assert_all_equal(verify_generation(zoo_lm, ort.path, PROMPTS, STEPS, ["ort-genai", "ort-cpu"], eos=()))
    _assert_all_equal(verify_generation(zoo_lm, lite.path, PROMPTS, STEPS, ["litert-lm", "litert-builtin"]))


def test_llama_and_qwen3_decoders(tokenizer: Path, tmp_path: Path) -> None:
    """Other Llama-family layouts: plain Llama, Qwen3 (q_norm / k_norm, explicit head_dim)."""
    for cls, cfg in (
        (transformers.LlamaForCausalLM, transformers.LlamaConfig(**HF_KW)),
        (transformers.Qwen3ForCausalLM, transformers.Qwen3Config(**HF_KW, head_dim=16)),
    ):
        torch.manual_seed(0)
        model = convert_to_bitnet(_perturbed(cls(cfg).eval())).eval()
        path = tmp_path / cls.__name__
        export_llm(model, path, "ort-genai", MAX_SEQ)
        _assert_all_equal(
            verify_generation(model, path, PROMPTS[:2], 16, ["ort-genai", "ort-cpu"], eos=()), 16
        )


# ----------------------------------------------------------------------------- cache limits
def test_max_seq_len_reached_everywhere(
    hf_bitnet: torch.nn.Module, exports: dict[str, Path], tmp_path: Path
) -> None:
    """A prompt that leaves room for 6 tokens: every runtime stops after exactly those 6."""
    prompt = [BOS, *encode("x" * (MAX_SEQ - 7))]
    room = MAX_SEQ - len(prompt)
    ref = torch_greedy(hf_bitnet, prompt, STEPS, MAX_SEQ, eos=())
    assert len(ref.tokens) == room and ref.stopped == "max_seq_len"
    ort = verify_generation(hf_bitnet, exports["ort"], [prompt], STEPS, ["ort-genai", "ort-cpu"], eos=())
    lite = verify_generation(
        hf_bitnet, exports["litert"], [prompt], STEPS, ["litert-lm", "litert-builtin"], eos=()
    )
    for report in (ort, lite):
        assert report.passed, report.format_table()
        assert all(r.steps == room for r in report.rows)
    assert all(len(r.tokens) == room for r in ort.rows)
    loop = LiteRtLmLoop(
        lambda sig: LiteRtInterpreterAdapter("builtin", signature=sig), exports["litert"], tmp_path
    )
    got = loop.generate(prompt, STEPS)
    assert got.stopped == "max_seq_len" and got.tokens == ref.tokens


def test_cache_overflow_is_an_error_everywhere(exports: dict[str, Path], tmp_path: Path) -> None:
    full = [BOS, *encode("y" * (MAX_SEQ - 1))]  # MAX_SEQ tokens: no room left
    loop = OrtGenaiLoop(OrtCpuAdapter(), exports["ort"])
    with pytest.raises(CacheOverflowError, match="no room to generate"):
        loop.generate(full, 4)
    genai = OrtGenaiAdapter()
    genai.load(exports["ort"])
    with pytest.raises(RuntimeAdapterError, match=r"max length|max_length"):
        genai.generate(full, 4)
    lite = LiteRtLmLoop(
        lambda sig: LiteRtInterpreterAdapter("builtin", signature=sig), exports["litert"], tmp_path
    )
    with pytest.raises(CacheOverflowError, match="no room to generate"):
        lite.generate(full, 4)
    # a write past the cache end never reaches DYNAMIC_UPDATE_SLICE (which would clamp it)
    caches = {n: np.zeros((1, 2, MAX_SEQ, 16), np.float32) for n in lite.record["cache_inputs"]}
    with pytest.raises(CacheOverflowError, match="overflows the KV cache"):
        lite._step(lite.prefill, [1] * PREFILL, MAX_SEQ - PREFILL + 1, caches)
    engine = LiteRtLmAdapter()
    engine.load(exports["litert"])
    with pytest.raises(RuntimeAdapterError, match="generation failed"):
        engine.generate_text("y" * MAX_SEQ, 4)


def test_prefill_writes_the_cache_rows_it_is_given(
    exports: dict[str, Path], hf_bitnet: torch.nn.Module
) -> None:
    """DYNAMIC_UPDATE_SLICE at input_pos: rows [p, p+8) of every cache change, no other row does."""
    data = bundle_tflite(exports["litert"])
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    prefill = interp.get_signature_runner("prefill")
    names = llm_info(exports["litert"])["cache_inputs"]
    marker = np.full((1, 2, MAX_SEQ, 16), 7.0, np.float32)
    out = prefill(
        tokens=np.arange(1, PREFILL + 1, dtype=np.int32)[None],
        input_pos=np.arange(16, 16 + PREFILL, dtype=np.int32),
        **dict.fromkeys(names, marker),
    )
    for name in names:
        changed = np.flatnonzero((out[name] != 7.0).any(axis=(0, 1, 3)))
        assert changed.tolist() == list(range(16, 16 + PREFILL)), name


# ----------------------------------------------------------------------------- errors
def test_bad_requests_write_nothing(zoo_lm: torch.nn.Module, tokenizer: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="target="):
        export_llm(zoo_lm, tmp_path / "a", "tflite")
    with pytest.raises(ExportError, match="needs a tokenizer"):
        export_llm(zoo_lm, tmp_path / "b.litertlm", "litert-lm", MAX_SEQ, eos_token_ids=[EOS])
    with pytest.raises(ExportError, match="stop token"):
        export_llm(zoo_lm, tmp_path / "c.litertlm", "litert-lm", MAX_SEQ, tokenizer=tokenizer)
    with pytest.raises(ExportError, match="RoPE tables"):
        export_llm(zoo_lm, tmp_path / "d", "ort-genai", MAX_SEQ * 2)
    small = TinyBitNetLM(TinyLMConfig(vocab_size=200)).eval()
    with pytest.raises(ExportError, match="outside the model's vocabulary"):
        export_llm(small, tmp_path / "e", "ort-genai", 32, tokenizer=tokenizer)
    with pytest.raises(ExportError, match="not a decoder LM"):
        export_llm(torch.nn.Linear(4, 4), tmp_path / "f", "ort-genai", 32)
    assert list(tmp_path.iterdir()) == []


class _ScaledEmbeddingLM(TinyBitNetLM):
    """Looks like TinyBitNetLM, computes something else (a Gemma-style embedding scale)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        x = self.embed(input_ids) * 8.0
        for block in self.blocks:
            x = block(x, self.rope_cos[:s], self.rope_sin[:s])
        return self.head(self.norm(x))


def test_self_check_refuses_an_architecture_it_does_not_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _ScaledEmbeddingLM(TinyLMConfig(vocab_size=VOCAB_SIZE)).eval()
    with pytest.raises(ExportError, match="does not model"):
        export_llm(model, tmp_path / "x", "ort-genai", 32)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CLI
def test_cli_export_llm_and_generate(
    tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "lm.py"
    spec.write_text(
        "import torch\n"
        "from bitnet_export.zoo.transformer import TinyBitNetLM, TinyLMConfig\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        f"    model = TinyBitNetLM(TinyLMConfig(vocab_size={VOCAB_SIZE})).eval()\n"
        "    return model, (torch.zeros(1, 4, dtype=torch.long),)\n"
    )
    out = tmp_path / "lm.litertlm"
    args = ["export-llm", f"{spec}:make", "--target", "litert-lm", "--out", str(out), "--max-seq-len", "48"]
    args += ["--weights", "int2", "--tokenizer", str(tokenizer), "--bos", str(BOS), "--eos", str(EOS)]
    assert main(args) == 0
    assert "litert-lm:" in capsys.readouterr().out
    report = tmp_path / "gen.json"
    code = main(
        [
            "generate",
            str(out),
            f"{spec}:make",
            "--prompt",
            "def f(x):",
            "--steps",
            "12",
            "--json",
            str(report),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "litert-lm" in text and "litert-builtin" in text and text.strip().endswith("PASS")
    assert json.loads(report.read_text())["passed"] is True
    assert main(["generate", str(tmp_path / "missing.litertlm"), f"{spec}:make"]) == 2


# ----------------------------------------------------------------------------- the example LM
def test_example_lm_generates_the_same_text_everywhere(tokenizer: Path, tmp_path: Path) -> None:
    """The shipped QAT model (Python stdlib text): 3 prompts x 32 tokens on every runtime."""
    from bitnet_export.demo import LM_PROMPTS
    from bitnet_export.llm.tokenizer import decode
    from bitnet_export.zoo.text_lm import load_pretrained

    model = load_pretrained()
    prompts = [[BOS, *encode(p)] for p in LM_PROMPTS]
    cpu = {
        "ort": (
            export_llm(model, tmp_path / "ort", "ort-genai", 128, "int8", tokenizer),
            ["ort-genai", "ort-cpu"],
        ),
        "lite": (
            export_llm(model, tmp_path / "lm.litertlm", "litert-lm", 128, "int2", tokenizer),
            ["litert-lm", "litert-builtin"],
        ),
    }
    if find_env() is not None:
        cpu["ort"][1].append(f"{ARM}:ort")
        cpu["lite"][1].append(f"{ARM}:litert-builtin")
    if unavailable_reason() is None and find_site() is not None:
        gpu_ort = export_llm(model, tmp_path / "ort-f", "ort-genai", 128, "int8", kernels="float")
        gpu_lite = export_llm(
            model, tmp_path / "g.litertlm", "litert-lm", 128, "int2", tokenizer, activation_quant="graph"
        )
        cpu["gpu-ort"] = (gpu_ort, ["ort-webgpu"])
        cpu["gpu-lite"] = (gpu_lite, ["litert-gpu"])
    for res, targets in cpu.values():
        report = verify_generation(model, res.path, prompts, STEPS, targets)
        _assert_all_equal(report)
        _assert_logits_close(report)
    # the continuation is the model's, not noise: mostly printable Python-looking text
    text = decode(report.reference[0])
    print(repr(LM_PROMPTS[0] + text))
    assert sum(c.isprintable() or c in "\n\t" for c in text) >= 0.9 * len(text)


def test_a_near_tie_is_reported_with_its_margin(tokenizer: Path, tmp_path: Path) -> None:
    """A prompt whose first greedy step is a near-tie (gap 0.0055): LiteRT's float rounding
    before a quantizer picks the runner-up. The report says where and how close it was."""
    from bitnet_export.zoo.text_lm import load_pretrained

    model = load_pretrained()
    res = export_llm(model, tmp_path / "lm.litertlm", "litert-lm", 128, "int2", tokenizer)
    report = verify_generation(
        model, res.path, [[BOS, *encode("    for i in range(")]], 8, ["litert-builtin"]
    )
    row = report.rows[0]
    print(report.format_table())
    if not row.equal:
        assert row.first_divergence == 0 and row.margin is not None and row.margin < 0.01
        assert "first divergent step 0" in report.format_table()


def test_self_check_accepts_a_rounding_flip_and_restores_quantization() -> None:
    # hidden 768, 12 layers, MLP 3072: the static-cache decoder attends over 256 positions,
    # the model over 8; a 1e-7 float difference flips one activation code at position 6 and
    # the quantized logits differ by ~6e-3 of their range (dev VM), the float ones by < 1e-6
    torch.manual_seed(0)
    cfg = TinyLMConfig(
        vocab_size=258, hidden=768, layers=12, heads=12, kv_heads=4, intermediate=3072, max_seq_len=256
    )
    model = TinyBitNetLM(cfg).eval()
    spec = decoder_spec(model, 256)
    worst = self_check(model, spec, 8)
    assert worst < 5e-2
    assert all(layer.enabled for _, layer in bitnet_layers(model))
    with _float_layers(model):
        assert not any(layer.enabled for _, layer in bitnet_layers(model))
        assert self_check(model, spec, 8) <= 1e-4
    assert all(layer.enabled for _, layer in bitnet_layers(model))


# ----------------------------------------------------------------------------- XNNPACK rows
def _fc_model(path: Path, w: np.ndarray, rows: int, dtype: str) -> Path:
    """One hybrid FULLY_CONNECTED ``[rows, K] x [N, K]^T``, unit per-channel weight scales."""
    b = TflModelBuilder()
    n, k = w.shape
    x = b.add_tensor("x", [rows, k])
    y = b.add_tensor("y", [rows, n])
    wt = b.add_constant("w", w, dtype=dtype, quant=Quant([1.0] * n, [0] * n, axis=0))
    b.add_op(
        "FULLY_CONNECTED",
        [x, wt, -1],
        [y],
        fusedActivationFunction=0,
        keepNumDims=False,
        asymmetricQuantizeInputs=False,
        _version={"int8": 9, "int4": 13}[dtype],
    )
    b.inputs, b.input_names, b.outputs, b.output_names = [x], ["x"], [y], ["y"]
    path.write_bytes(b.to_bytes())
    return path


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_xnnpack_quantizes_padded_code_rows_to_themselves(dtype: str, tmp_path: Path) -> None:
    # the mechanism behind activation_quant="xnnpack", against integer numpy: XNNPACK's
    # asymmetric row quantizer changes plain BitNet code rows, and keeps rows whose range
    # the pad makes exactly [-128, 127]
    rng = np.random.default_rng(0)
    rows, k, n = 8, 768, 512
    w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    codes = rng.integers(-127, 128, (rows, k)).astype(np.float32)
    codes[:, 0] = 127  # a code row's absmax is 127
    exact = codes.astype(np.int64) @ w.T.astype(np.int64)
    pad = np.tile(np.asarray([XNNPACK_PAD], np.float32), (rows, 1))
    w_pad = np.concatenate([w, np.zeros((n, len(XNNPACK_PAD)), np.int8)], axis=1)

    def run(model: Path, x: np.ndarray) -> np.ndarray:
        adapter = LiteRtInterpreterAdapter("xnnpack", threads=1)
        adapter.load(model)
        assert adapter.info().provider == "xnnpack"
        return adapter.run({"x": x})["y"]

    plain = run(_fc_model(tmp_path / "plain.tflite", w, rows, dtype), codes)
    padded = run(_fc_model(tmp_path / "padded.tflite", w_pad, rows, dtype), np.concatenate([codes, pad], 1))
    assert np.abs(plain - exact).max() > 1.0  # not BitNet's codes without the pad
    assert np.array_equal(padded, exact.astype(np.float32))


def test_xnnpack_rows_bundle_is_exact_on_xnnpack_kernels(
    hf_bitnet: torch.nn.Module, tokenizer: Path, tmp_path: Path
) -> None:
    for weights in ("int8", "int4"):
        res = export_llm(
            hf_bitnet,
            tmp_path / f"{weights}.litertlm",
            "litert-lm",
            MAX_SEQ,
            weights,
            tokenizer,
            prefill_len=PREFILL,
            activation_quant="xnnpack",
        )
        assert llm_info(res.path)["activation_quant"] == "xnnpack"
        targets = ["litert-lm", "litert-xnnpack"] + ([f"{ARM}:litert-xnnpack"] if weights == "int8" else [])
        _assert_all_equal(verify_generation(hf_bitnet, res.path, PROMPTS, STEPS, targets))
    # builtin kernels quantize the padded rows with absmax 128: refused, never run
    with pytest.raises(RuntimeAdapterError, match=r"activation_quant='xnnpack'.*litert-xnnpack"):
        LiteRtLmLoop(lambda sig: LiteRtInterpreterAdapter("builtin", signature=sig), res.path, tmp_path / "w")
    with pytest.raises(ExportError, match="INT2"):
        export_llm(
            hf_bitnet, tmp_path / "x", "litert-lm", MAX_SEQ, "int2", tokenizer, activation_quant="xnnpack"
        )
    assert not (tmp_path / "x").exists()
