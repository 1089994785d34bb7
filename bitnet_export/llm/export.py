"""``export_llm``: a decoder LM with an explicit KV cache, packaged for an on-device runtime.

Data flow::

    model --decoder_spec--> DecoderSpec --self-check--> cache decoder(s)
          --capture (torch.export -> ONNX IR hub, BitLinear nodes)-->
      ort-genai : lower BitLinear (ONNX) -> model.onnx + genai_config.json (+ tokenizer.json)
      litert-lm : lower to TFLite twice (prefill [1, P] and decode [1, 1], weights shared)
                  -> one .tflite with two signatures -> .litertlm bundle (LlmMetadata, tokenizer)

The self-check runs the cache decoder on a prompt (whole prompt, then split in two steps
through the cache) and compares its logits with the model's own forward before anything is
captured: an architecture detail the decoder does not model (a scaled embedding, a
post-norm...) is an error, never a file that generates other tokens.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bitnet_export._io import atomic_write_bytes, check_target, replace_dir, temp_dir
from bitnet_export._version import __version__
from bitnet_export.backends.onnx.lower_bitlinear import KERNELS
from bitnet_export.errors import ExportError
from bitnet_export.llm.decoder import ConcatCacheDecoder, StaticCacheDecoder, cache_names
from bitnet_export.llm.spec import DecoderSpec, decoder_spec

__all__ = ["LLM_TARGETS", "LlmExportResult", "export_llm", "llm_info"]

LLM_TARGETS = ("ort-genai", "litert-lm")
#: ONNX weight modes per kernels choice, and the TFLite ones
_ORT_WEIGHTS = ("int8", "int4", "int2", "matmulnbits")
_TFLITE_WEIGHTS = ("int8", "int4", "int2")
#: max |decoder - model| logits difference accepted by the self-check, relative to max |logits|
_SELF_CHECK_RTOL = 1e-4
METADATA_KEY = "bitnet_export.llm"


@dataclass(frozen=True)
class LlmExportResult:
    """What :func:`export_llm` wrote.

    Attributes:
        path: the folder (``ort-genai``) or ``.litertlm`` bundle (``litert-lm``).
        target: ``ort-genai`` or ``litert-lm``.
        files: every file written (model, config, tokenizer...).
        size_bytes: bytes of the model file(s) (weights included).
        weights: weight storage.
        max_seq_len: KV-cache length (context window).
        prefill_len: LiteRT-LM prefill signature length (``None`` for ort-genai).
        layers: BitNetLayers captured (module paths).
        info: the ``bitnet_export.llm`` record stored in the file.
        seconds: export wall time.
        self_check: max relative logits difference decoder vs model measured before export.
    """

    path: Path
    target: str
    files: tuple[Path, ...]
    size_bytes: int
    weights: str
    max_seq_len: int
    prefill_len: int | None
    layers: tuple[str, ...]
    info: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    self_check: float = 0.0


def _reference_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = (
        model(ids, use_cache=False) if hasattr(model, "config") and hasattr(model, "lm_head") else model(ids)
    )
    logits = getattr(out, "logits", out)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.detach().float()


def _empty_past(spec: DecoderSpec, batch: int, length: int) -> list[torch.Tensor]:
    return [torch.zeros(batch, spec.kv_heads, length, spec.head_dim) for _ in range(2 * len(spec.layers))]


def _decoder_differences(model: nn.Module, spec: DecoderSpec, ids: torch.Tensor) -> list[tuple[str, float]]:
    """``(decoder, max |logits - model's logits| / max |model's logits|)`` for the three cache uses."""
    n = ids.shape[1]
    concat = ConcatCacheDecoder(spec).eval()
    static = StaticCacheDecoder(spec).eval()
    with torch.no_grad():
        ref = _reference_logits(model, ids)
        whole = concat(ids, torch.ones_like(ids), torch.arange(n)[None], *_empty_past(spec, 1, 0))[0]
        cut = max(1, n // 2)
        first = concat(
            ids[:, :cut],
            torch.ones(1, cut, dtype=torch.long),
            torch.arange(cut)[None],
            *_empty_past(spec, 1, 0),
        )
        second = concat(ids[:, cut:], torch.ones_like(ids), torch.arange(cut, n)[None], *first[1:])[0]
        caches = _empty_past(spec, 1, spec.max_positions)
        st = static(ids.int(), torch.arange(n, dtype=torch.int32), *caches)[0]
    scale = float(ref.abs().max()) or 1.0
    out = []
    for name, got in (
        ("whole prompt", whole),
        ("prompt then cached step", torch.cat([first[0], second], dim=1)),
        ("static cache", st),
    ):
        if got.shape != ref.shape:
            raise ExportError(
                f"export_llm: the {name} decoder gives logits {tuple(got.shape)}, "
                f"the model {tuple(ref.shape)}"
            )
        out.append((name, float((got - ref).abs().max()) / scale))
    return out


@contextlib.contextmanager
def _float_layers(model: nn.Module) -> Iterator[None]:
    """Every BitNetLayer of ``model`` computes in float (``enabled=False``) inside; restored after."""
    from bitnet_export.training.convert import bitnet_layers

    layers = [layer for _, layer in bitnet_layers(model)]
    saved = [layer.enabled for layer in layers]
    try:
        for layer in layers:
            layer.enabled = False
        yield
    finally:
        for layer, enabled in zip(layers, saved, strict=True):
            layer.enabled = enabled


def self_check(model: nn.Module, spec: DecoderSpec, n: int) -> float:
    """Max relative logits difference of the cache decoders vs ``model``'s forward on ``n`` tokens.

    The decoders call the model's own modules, so what they can get wrong is the wiring
    around them (embedding scale, norms, attention, RoPE, the cache). The wiring is checked
    with quantization on and, when that differs, again in float: a decoder attends over a
    cache of another length than the model's forward, a float-rounding-level difference
    (1e-7) that can move an activation across a rounding boundary, and one flipped 8-bit
    code moves the logits far more (5.7e-3 of their range measured on a random-weight
    ternary model, hidden 768, 12 layers). A difference that vanishes in float is such a
    flip, not a wiring error; the quantized figure is returned.

    Raises:
        ExportError: above tolerance in float too (the decoder does not compute what the model computes).
    """
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec.vocab_size, (1, n), generator=gen)
    quantized = _decoder_differences(model, spec, ids)
    worst = max(diff for _, diff in quantized)
    if worst <= _SELF_CHECK_RTOL:
        return worst
    with _float_layers(model):
        wiring = _decoder_differences(model, spec, ids)
    for name, diff in wiring:
        if diff > _SELF_CHECK_RTOL:
            raise ExportError(
                f"export_llm: {spec.family}: the KV-cache decoder ({name}) differs from the model's own "
                f"forward by {diff:.2e} of the logits' range (limit {_SELF_CHECK_RTOL:.0e}, with "
                "quantization off): the model has a part export_llm does not model (embedding scale, "
                "post-norms, a different attention or MLP). Nothing was written"
            )
    return worst


def _dim_names(hub: Any, names: Mapping[str, tuple[str, ...]]) -> None:
    """Give the graph inputs' symbolic dims the runtime's names (``batch_size``...)."""
    rename: dict[str, str] = {}
    for value in hub.graph.inputs:
        want = names.get(str(value.name))
        if want is None or value.shape is None:
            continue
        for dim, label in zip(value.shape, want, strict=False):
            if not isinstance(dim, int) and label:
                rename.setdefault(str(dim), label)
    if not rename:
        return
    import onnx_ir as ir

    for value in [*hub.graph.inputs, *hub.graph.outputs]:
        if value.shape is None:
            continue
        dims = [
            ir.SymbolicDim(rename.get(str(d), str(d))) if not isinstance(d, int) else d for d in value.shape
        ]
        value.shape = ir.Shape(dims)


def _genai_config(spec: DecoderSpec, max_seq_len: int, onnx_name: str, layers: int) -> dict[str, Any]:
    eos = list(spec.eos_token_ids)
    return {
        "model": {
            "type": "llama",
            "vocab_size": spec.vocab_size,
            "context_length": max_seq_len,
            "bos_token_id": spec.bos_token_id if spec.bos_token_id is not None else 0,
            "pad_token_id": eos[0] if eos else 0,
            "eos_token_id": eos,
            "decoder": {
                "filename": onnx_name,
                "head_size": spec.head_dim,
                "hidden_size": spec.heads * spec.head_dim,
                "num_attention_heads": spec.heads,
                "num_key_value_heads": spec.kv_heads,
                "num_hidden_layers": layers,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "session_options": {"log_id": "bitnet_export", "provider_options": []},
            },
        },
        "search": {
            "max_length": max_seq_len,
            "min_length": 0,
            "do_sample": False,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def _tokenizer_json(tokenizer: Any) -> bytes | None:
    """``tokenizer.json`` bytes of a path, a ``tokenizers.Tokenizer`` or an HF fast tokenizer."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ExportError(f"export_llm: tokenizer {path} does not exist; give a tokenizer.json path")
        data = path.read_bytes()
    elif hasattr(tokenizer, "backend_tokenizer"):
        data = tokenizer.backend_tokenizer.to_str().encode()
    elif hasattr(tokenizer, "to_str"):
        data = tokenizer.to_str().encode()
    else:
        raise ExportError(
            f"export_llm: tokenizer of type {type(tokenizer).__name__}; give a tokenizer.json path, a "
            "tokenizers.Tokenizer or a transformers fast tokenizer"
        )
    try:
        json.loads(data)
    except ValueError as exc:
        raise ExportError(f"export_llm: the tokenizer is not a tokenizer.json document: {exc}") from exc
    return data


def _check_tokens(spec: DecoderSpec, tokenizer: bytes | None, target: str) -> None:
    """Token ids the runtime will feed must exist in the model's embedding."""
    ids = [i for i in (spec.bos_token_id, *spec.eos_token_ids) if i is not None]
    if tokenizer is not None:
        doc = json.loads(tokenizer)
        ids += [int(t["id"]) for t in doc.get("added_tokens", [])]
        ids += [int(v) for v in (doc.get("model", {}).get("vocab") or {}).values() if isinstance(v, int)]
    bad = sorted({i for i in ids if not 0 <= i < spec.vocab_size})
    if bad:
        raise ExportError(
            f"export_llm: token id(s) {bad[:5]} (tokenizer / bos / eos) are outside the model's vocabulary "
            f"of {spec.vocab_size}; give a tokenizer and special tokens that fit the embedding"
        )
    if target == "litert-lm" and not spec.eos_token_ids:
        raise ExportError(
            "export_llm: LiteRT-LM needs at least one stop token; the model config has no eos_token_id. "
            "Pass eos_token_ids=[...]"
        )


def _record(
    spec: DecoderSpec, target: str, weights: str, max_seq_len: int, prefill: int | None
) -> dict[str, Any]:
    ins, outs = cache_names(len(spec.layers), target)
    return {
        "target": target,
        "family": spec.family,
        "weights": weights,
        "max_seq_len": max_seq_len,
        "prefill_len": prefill,
        "layers": len(spec.layers),
        "heads": spec.heads,
        "kv_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "bos_token_id": spec.bos_token_id,
        "eos_token_ids": list(spec.eos_token_ids),
        "cache_inputs": ins,
        "cache_outputs": outs,
        "cache_layout": "[batch, kv_heads, seq, head_dim]",
    }


def _export_ort(
    spec: DecoderSpec,
    path: Path,
    weights: str,
    kernels: str,
    max_seq_len: int,
    tokenizer: bytes | None,
    say: Callable[[str], None],
) -> tuple[list[Path], int, tuple[str, ...], dict[str, Any]]:
    from torch.export import Dim

    from bitnet_export.backends.onnx.lower_bitlinear import lower_bitlinear_nodes
    from bitnet_export.backends.onnx.writer import save_onnx
    from bitnet_export.capture.capture import capture
    from bitnet_export.passes.annotate import annotate
    from bitnet_export.passes.name_nodes import name_nodes

    decoder = ConcatCacheDecoder(spec).eval()
    n_layers = len(spec.layers)
    ins, outs = cache_names(n_layers, "ort-genai")
    b, s, p, t = 2, 3, 5, 8  # trace sizes > 1 so no dimension specializes
    args = (
        torch.zeros(b, s, dtype=torch.long),
        torch.ones(b, t, dtype=torch.long),
        torch.arange(p, t).repeat(b, 1),
        *_empty_past(spec, b, p),
    )
    # AUTO: torch relates them itself (total = past + sequence); named after capture
    batch = seq = past = total = Dim.AUTO
    dynamic = (
        {0: batch, 1: seq},
        {0: batch, 1: total},
        {0: batch, 1: seq},
        tuple({0: batch, 2: past} for _ in ins),
    )
    # the fast path: opset 23, where torch.onnx writes RMSNorm as RMSNormalization and
    # fuse_rope fuses RoPE; the exact ones keep the op chains PyTorch computes (passes.fuse_rope)
    fast = weights == "matmulnbits"
    opset = 25 if weights == "int2" else 23 if fast else 21
    captured = capture(
        decoder,
        args,
        opset=opset,
        input_names=["input_ids", "attention_mask", "position_ids", *ins],
        output_names=["logits", *outs],
        dynamic_shapes=dynamic,
        log=say,
    )
    hub = captured.model
    _dim_names(
        hub,
        {
            "input_ids": ("batch_size", "sequence_length"),
            "attention_mask": ("batch_size", "total_sequence_length"),
        }
        | {name: ("batch_size", "", "past_sequence_length", "") for name in ins},
    )
    name_nodes(hub)
    say(f"lowering {len(captured.layers)} BitNetLayer(s) with weights={weights}, kernels={kernels}")
    lower_bitlinear_nodes(hub, weights, kernels)
    if fast:
        from bitnet_export.passes.fuse_rope import fuse_rope

        say(f"fast path: {fuse_rope(hub)} rotary embedding(s) fused into RotaryEmbedding")
    record = _record(spec, "ort-genai", weights, max_seq_len, None) | {"kernels": kernels, "opset": opset}
    annotate(
        hub,
        captured.layers,
        {"weights": weights, "kernels": kernels, "outputs": ["logits", *outs], "llm": record},
    )
    with temp_dir(path, folder=True) as work:
        tmp = work / path.name
        tmp.mkdir()
        data = save_onnx(hub, tmp / "model.onnx")
        config = _genai_config(spec, max_seq_len, "model.onnx", n_layers)
        atomic_write_bytes(tmp / "genai_config.json", json.dumps(config, indent=2).encode())
        if tokenizer is not None:
            atomic_write_bytes(tmp / "tokenizer.json", tokenizer)
            tk_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_seq_len}
            atomic_write_bytes(tmp / "tokenizer_config.json", json.dumps(tk_config, indent=2).encode())
        size = (tmp / "model.onnx").stat().st_size + (data.stat().st_size if data else 0)
        names = sorted(f.name for f in tmp.iterdir())
        replace_dir(tmp, path)
    return [path / n for n in names], size, tuple(captured.layers), record


def _export_litert(
    spec: DecoderSpec,
    path: Path,
    weights: str,
    max_seq_len: int,
    prefill_len: int,
    tokenizer: bytes | None,
    activation_quant: str,
    say: Callable[[str], None],
) -> tuple[list[Path], int, tuple[str, ...], dict[str, Any]]:
    from bitnet_export.backends.tflite.convert import lower_graph
    from bitnet_export.backends.tflite.flatbuffer import serialize_signatures
    from bitnet_export.capture.capture import capture
    from bitnet_export.passes.name_nodes import name_nodes

    if tokenizer is None:
        raise ExportError(
            "export_llm: target='litert-lm' needs a tokenizer (LiteRT-LM is text in, text out and its "
            "bundles carry tokenizer.json); pass tokenizer=<tokenizer.json path or tokenizer>"
        )
    try:
        from litert_lm_builder import litertlm_builder as lb
        from litert_lm_builder.runtime.proto import llm_metadata_pb2
    except ImportError as exc:
        raise ExportError(
            "export_llm: target='litert-lm' needs litert-lm-builder (pip install 'bitnet-export[llm]')"
        ) from exc
    n_layers = len(spec.layers)
    ins, outs = cache_names(n_layers, "litert-lm")
    signatures = []
    layer_paths: tuple[str, ...] = ()
    for key, length, logits in (("prefill", prefill_len, False), ("decode", 1, True)):
        say(f"{key} signature: tokens [1, {length}]")
        decoder = StaticCacheDecoder(spec, logits=logits).eval()
        args = (
            torch.zeros(1, length, dtype=torch.int32),
            torch.arange(length, dtype=torch.int32),
            *_empty_past(spec, 1, max_seq_len),
        )
        captured = capture(
            decoder,
            args,
            opset=21,
            input_names=["tokens", "input_pos", *ins],
            output_names=(["logits"] if logits else []) + [f"{o}/updated" for o in outs],
            dynamic_batch=False,
            log=say,
        )
        name_nodes(captured.model)
        builder, _ = lower_graph(captured.model, weights, 1, activation_quant)
        builder.output_names = [n.removesuffix("/updated") for n in builder.output_names]
        signatures.append((key, builder))
        layer_paths = tuple(captured.layers)
        layer_params = captured.layers
    record = _record(spec, "litert-lm", weights, max_seq_len, prefill_len) | {
        "activation_quant": activation_quant
    }
    meta = {
        "bitnet_export.version": __version__,
        "bitnet_export.layers": [p.describe() for p in layer_params.values()],
        "bitnet_export.weights": weights,
        METADATA_KEY: record,
    }
    tflite = serialize_signatures(
        signatures,
        {k: json.dumps(v, sort_keys=True).encode() for k, v in meta.items()},
        f"bitnet_export {__version__}",
    )
    with temp_dir(path) as tmp:
        (tmp / "model.tflite").write_bytes(tflite)
        (tmp / "tokenizer.json").write_bytes(tokenizer)
        msg = llm_metadata_pb2.LlmMetadata()
        if spec.bos_token_id is not None:
            msg.start_token.token_ids.ids.append(int(spec.bos_token_id))
        for eos in spec.eos_token_ids:
            stop = msg.stop_tokens.add()
            stop.token_ids.ids.append(int(eos))
        msg.max_num_tokens = max_seq_len
        (tmp / "llm_metadata.pb").write_bytes(msg.SerializeToString())
        builder_lm = lb.LitertLmFileBuilder()
        builder_lm.add_system_metadata(
            lb.Metadata(key="Authors", value=f"bitnet_export {__version__}", dtype=lb.DType.STRING)
        )
        builder_lm.add_llm_metadata(str(tmp / "llm_metadata.pb"))
        with contextlib.redirect_stdout(io.StringIO()):  # the builder prints its choices
            builder_lm.add_tflite_model(
                str(tmp / "model.tflite"), lb.TfLiteModelType.PREFILL_DECODE, prefer_activation_type="fp32"
            )
        builder_lm.add_hf_tokenizer(str(tmp / "tokenizer.json"))
        with open(tmp / "bundle.litertlm", "wb") as f:
            builder_lm.build(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp / "bundle.litertlm", path)
    return [path], path.stat().st_size, layer_paths, record


def export_llm(
    model: nn.Module,
    path: str | Path,
    target: str = "ort-genai",
    max_seq_len: int = 256,
    weights: str = "int8",
    tokenizer: Any = None,
    *,
    kernels: str = "integer",
    prefill_len: int | None = None,
    bos_token_id: int | None = None,
    eos_token_ids: Sequence[int] | None = None,
    activation_quant: str = "kernel",
    progress: bool = False,
) -> LlmExportResult:
    """Export a decoder LM with an explicit KV cache for an on-device runtime.

    Args:
        model: a ``transformers`` Llama-style causal LM (``BitNetForCausalLM``, or
            ``LlamaForCausalLM`` after :func:`~bitnet_export.training.convert.convert_to_bitnet`)
            or a :class:`~bitnet_export.zoo.transformer.TinyBitNetLM`.
        path: ``ort-genai``: the folder to write (``model.onnx``, ``genai_config.json``,
            ``tokenizer.json``); ``litert-lm``: the ``.litertlm`` bundle. Written atomically.
        target: ``ort-genai`` (Concat KV cache, dynamic lengths) or ``litert-lm`` (static
            caches, ``prefill`` and ``decode`` signatures sharing weights).
        max_seq_len: the context window: KV-cache length (LiteRT-LM) and ``max_length``.
        weights: ``int8`` / ``int4`` / ``int2`` (both targets) or ``matmulnbits`` (ORT's
            2/4-bit contrib kernel: the fast path, per-token activations through ORT's
            block quantizer).
        tokenizer: ``tokenizer.json`` path, a ``tokenizers.Tokenizer`` or a fast HF tokenizer;
            required for ``litert-lm`` (its bundles carry the tokenizer).
        kernels: ONNX only: ``integer`` (CPU), ``float`` (the same integer maths in float
            ops, for ORT's WebGPU EP) or ``nbits`` (the same maths on ORT's MatMulNBits
            kernel, exact, fastest on CPU; ``int8``/``int4``/``int2`` weights).
        prefill_len: LiteRT-LM prefill signature length (default ``min(32, max_seq_len)``).
        bos_token_id: start token (default: the model config's ``bos_token_id``).
        eos_token_ids: stop tokens (default: the config's ``eos_token_id``); LiteRT-LM
            needs at least one.
        activation_quant: litert-lm only: ``kernel`` (the hybrid FC kernel quantizes each
            token's activations: exact on LiteRT's builtin kernels, which also run INT2 FCs
            inside LiteRT-LM) or ``graph`` (the quantization as graph ops: exact where the FC
            computes in float, i.e. LiteRT's GPU delegate; more ops on the CPU) or ``xnnpack``
            (``graph`` with each code row padded to the range [-128, 127], so XNNPACK's
            asymmetric row quantizer keeps the codes: exact on XNNPACK, the kernel LiteRT-LM's
            CPU backend uses, and on the GPU delegate; not on builtin kernels; int8/int4
            weights, static shapes).
        progress: print steps to stderr.

    Returns:
        An :class:`LlmExportResult`.

    Raises:
        ExportError: unknown target/weights, a model that is not a decoder LM this exporter
            understands, a decoder that does not match the model's forward, unsupported ops.
            Nothing is written then.
    """
    import sys

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[export_llm] {msg}", file=sys.stderr)

    if target not in LLM_TARGETS:
        raise ExportError(f"export_llm: target={target!r}; choose one of {', '.join(LLM_TARGETS)}")
    allowed = _ORT_WEIGHTS if target == "ort-genai" else _TFLITE_WEIGHTS
    if weights not in allowed:
        raise ExportError(f"export_llm: weights={weights!r} for {target}; choose one of {', '.join(allowed)}")
    if kernels not in KERNELS:
        raise ExportError(f"export_llm: kernels={kernels!r}; choose one of {', '.join(KERNELS)}")
    if target == "litert-lm" and kernels != "integer":
        raise ExportError("export_llm: kernels= applies to ort-genai only (TFLite lowers its own kernels)")
    if activation_quant not in ("kernel", "graph", "xnnpack"):
        raise ExportError(
            f"export_llm: activation_quant={activation_quant!r}; choose kernel, graph or xnnpack"
        )
    if activation_quant != "kernel" and target != "litert-lm":
        raise ExportError("export_llm: activation_quant= applies to litert-lm (ONNX: use kernels='float')")
    if activation_quant == "xnnpack" and weights not in ("int8", "int4"):
        raise ExportError(
            f"export_llm: activation_quant='xnnpack' with weights={weights!r}: XNNPACK runs int8 and "
            "INT4 FULLY_CONNECTED only (it leaves INT2 to LiteRT's builtin kernel, where the padded "
            "rows are not exact); use weights='int8' or 'int4', or activation_quant='kernel' for int2"
        )
    if prefill_len is not None and target != "litert-lm":
        raise ExportError(
            "export_llm: prefill_len= applies to litert-lm only (ort-genai takes any prompt length)"
        )
    prefill = min(32, max_seq_len) if prefill_len is None else int(prefill_len)
    if not 1 <= prefill <= max_seq_len:
        raise ExportError(f"export_llm: prefill_len={prefill} must be in 1..max_seq_len={max_seq_len}")
    check_target(Path(path), folder=target == "ort-genai")  # before any work: no symlink/device
    tok = _tokenizer_json(tokenizer)
    was_training = model.training
    model.eval()
    try:
        spec = decoder_spec(model, max_seq_len)
        if bos_token_id is not None:
            spec.bos_token_id = int(bos_token_id)
        if eos_token_ids is not None:
            spec.eos_token_ids = tuple(int(i) for i in eos_token_ids)
        _check_tokens(spec, tok, target)
        say(
            f"{spec.family}: {len(spec.layers)} layers, {spec.heads} heads ({spec.kv_heads} kv), "
            f"vocab {spec.vocab_size}"
        )
        check = self_check(model, spec, min(8, max_seq_len))
        say(f"self-check: decoder == model forward (max rel diff {check:.1e})")
        path = Path(path)
        if target == "ort-genai":
            files, size, layers, record = _export_ort(spec, path, weights, kernels, max_seq_len, tok, say)
        else:
            files, size, layers, record = _export_litert(
                spec, path, weights, max_seq_len, prefill, tok, activation_quant, say
            )
    finally:
        model.train(was_training)
    return LlmExportResult(
        path=path,
        target=target,
        files=tuple(files),
        size_bytes=size,
        weights=weights,
        max_seq_len=max_seq_len,
        prefill_len=prefill if target == "litert-lm" else None,
        layers=layers,
        info=record,
        seconds=time.perf_counter() - t0,
        self_check=check,
    )


def llm_info(path: str | Path) -> dict[str, Any]:
    """The ``bitnet_export.llm`` record of an exported folder / bundle (what the loops need)."""
    path = Path(path)
    if path.is_dir():
        import onnx_ir as ir

        props = dict(ir.load(path / "model.onnx").metadata_props)
        if METADATA_KEY not in props:
            raise ExportError(f"{path}: model.onnx has no {METADATA_KEY} record; export it with export_llm")
        return dict(json.loads(props[METADATA_KEY]))
    from bitnet_export.backends.tflite.flatbuffer import read_metadata

    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.tflite"
        model_file.write_bytes(bundle_tflite(path))
        meta = read_metadata(model_file)
    if METADATA_KEY not in meta:
        raise ExportError(
            f"{path}: the bundle's model has no {METADATA_KEY} record; export it with export_llm"
        )
    return dict(json.loads(meta[METADATA_KEY]))


def bundle_tokenizer(path: str | Path) -> bytes | None:
    """The ``tokenizer.json`` shipped with an export (folder or bundle), or ``None``."""
    path = Path(path)
    if path.is_dir():
        f = path / "tokenizer.json"
        return f.read_bytes() if f.is_file() else None
    packed = _bundle_section(path, "*HF_Tokenizer_Zlib*")  # uint64 size, then zlib data
    return None if packed is None else zlib.decompress(packed[8:])


def bundle_tflite(path: str | Path) -> bytes:
    """The TFLite model inside a ``.litertlm`` bundle (the file LiteRT-LM runs)."""
    data = _bundle_section(path, "*.tflite")
    if data is None:
        raise ExportError(f"{path}: no TFLite model in the bundle")
    return data


def _bundle_section(path: str | Path, pattern: str) -> bytes | None:
    try:
        from litert_lm_builder import litertlm_builder as lb
    except ImportError as exc:
        raise ExportError(
            "reading a .litertlm bundle needs litert-lm-builder (pip install 'bitnet-export[llm]')"
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        try:
            lb.unpack_litertlm_file(str(path), tmp)
        except Exception as exc:
            raise ExportError(f"{path}: not a readable .litertlm bundle: {exc}") from exc
        found = sorted(Path(tmp).rglob(pattern))
        return found[0].read_bytes() if found else None
