"""What a decoder LM is made of: the modules a KV-cache decoder calls, found by structure.

:func:`decoder_spec` reads a model into a :class:`DecoderSpec` (embedding, per-layer norms and
projections, final norm, head, RoPE tables, head counts). Two families are understood:

* transformers' Llama-style causal LMs (``LlamaForCausalLM``, ``BitNetForCausalLM`` and their
  relatives: ``model.embed_tokens``, ``model.layers[i].self_attn.{q,k,v,o}_proj``,
  ``input_layernorm`` / ``post_attention_layernorm``, ``mlp.{gate,up,down}_proj``, optional
  ``attn_sub_norm`` / ``ffn_sub_norm`` (BitNet), ``q_norm`` / ``k_norm`` (Qwen3), biases), with
  RoPE tables computed by the model's own ``rotary_emb`` (every RoPE scaling type);
* the project's :class:`~bitnet_export.zoo.transformer.TinyBitNetLM`.

A model that looks like neither is refused with what was missing. Looking right is not proof:
:func:`bitnet_export.llm.export.export_llm` also checks that the cache decoder's logits equal
the model's own forward before it writes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bitnet_export.errors import ExportError

__all__ = ["DecoderSpec", "LayerSpec", "decoder_spec"]

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LayerSpec:
    """One decoder block: ``x + o(attn(norm1(x)))`` then ``x + down(act(gate(h)) * up(h))``."""

    input_norm: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    o: nn.Module
    post_norm: nn.Module
    gate: nn.Module
    up: nn.Module
    down: nn.Module
    act: Fn
    q_norm: nn.Module | None = None  # per head, before RoPE (Qwen3)
    k_norm: nn.Module | None = None
    attn_sub_norm: nn.Module | None = None  # before o_proj (BitNet)
    ffn_sub_norm: nn.Module | None = None  # before down_proj (BitNet)


@dataclass
class DecoderSpec:
    """A decoder LM's parts. ``cos``/``sin``: RoPE tables ``[positions, head_dim]``."""

    family: str
    embed: nn.Embedding
    layers: list[LayerSpec]
    norm: nn.Module
    head: nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    cos: torch.Tensor
    sin: torch.Tensor
    vocab_size: int
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def max_positions(self) -> int:
        """Positions the RoPE tables cover."""
        return int(self.cos.shape[0])


def _squared_relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


def _zoo_spec(model: Any, max_seq_len: int) -> DecoderSpec:
    cfg = model.config
    head_dim = cfg.hidden // cfg.heads
    if max_seq_len > cfg.max_seq_len:
        raise ExportError(
            f"export_llm: max_seq_len={max_seq_len} exceeds TinyBitNetLM's RoPE tables "
            f"(config.max_seq_len={cfg.max_seq_len}); build the model with a larger max_seq_len"
        )
    layers = [
        LayerSpec(
            input_norm=b.attn_norm,
            q=b.attn.q_proj,
            k=b.attn.k_proj,
            v=b.attn.v_proj,
            o=b.attn.o_proj,
            post_norm=b.mlp_norm,
            gate=b.gate_proj,
            up=b.up_proj,
            down=b.down_proj,
            act=_squared_relu,
        )
        for b in model.blocks
    ]
    return DecoderSpec(
        family="bitnet_export.TinyBitNetLM",
        embed=model.embed,
        layers=layers,
        norm=model.norm,
        head=model.head,
        heads=cfg.heads,
        kv_heads=cfg.kv_heads,
        head_dim=head_dim,
        scaling=head_dim**-0.5,
        cos=model.rope_cos[:max_seq_len].detach().clone(),
        sin=model.rope_sin[:max_seq_len].detach().clone(),
        vocab_size=cfg.vocab_size,
        bos_token_id=getattr(cfg, "bos_token_id", None),
        eos_token_ids=tuple(getattr(cfg, "eos_token_ids", ()) or ()),
    )


def _need(obj: object, name: str, where: str, missing: list[str]) -> Any:
    found = getattr(obj, name, None)
    if found is None:
        missing.append(f"{where}.{name}")
    return found


def _hf_spec(model: Any, max_seq_len: int) -> DecoderSpec:
    config = model.config
    base = model.model
    missing: list[str] = []
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        _need(base, name, "model", missing)
    _need(model, "lm_head", "", missing)
    if missing:
        raise ExportError(
            f"export_llm: {type(model).__name__} is not a Llama-style causal LM (missing "
            f"{', '.join(missing)}); export_llm understands LlamaForCausalLM / BitNetForCausalLM "
            "relatives and TinyBitNetLM"
        )
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and window < max_seq_len:
        raise ExportError(
            f"export_llm: {type(model).__name__} uses sliding-window attention (window {window}) "
            f"below max_seq_len={max_seq_len}; the cache decoder attends to the whole cache. Use "
            f"max_seq_len <= {window}"
        )
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    layers = []
    for i, block in enumerate(base.layers):
        where = f"model.layers.{i}"
        attn = _need(block, "self_attn", where, missing)
        mlp = _need(block, "mlp", where, missing)
        if attn is None or mlp is None:
            break
        parts = {
            n: _need(attn, n, f"{where}.self_attn", missing) for n in ("q_proj", "k_proj", "v_proj", "o_proj")
        }
        parts |= {
            n: _need(mlp, n, f"{where}.mlp", missing) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")
        }
        norms = {n: _need(block, n, where, missing) for n in ("input_layernorm", "post_attention_layernorm")}
        if missing:
            break
        layers.append(
            LayerSpec(
                input_norm=norms["input_layernorm"],
                q=parts["q_proj"],
                k=parts["k_proj"],
                v=parts["v_proj"],
                o=parts["o_proj"],
                post_norm=norms["post_attention_layernorm"],
                gate=parts["gate_proj"],
                up=parts["up_proj"],
                down=parts["down_proj"],
                act=parts["act_fn"],
                q_norm=getattr(attn, "q_norm", None),
                k_norm=getattr(attn, "k_norm", None),
                attn_sub_norm=getattr(attn, "attn_sub_norm", None),
                ffn_sub_norm=getattr(mlp, "ffn_sub_norm", None),
            )
        )
    if missing:
        raise ExportError(
            f"export_llm: {type(model).__name__}'s decoder blocks are not Llama-style (missing "
            f"{', '.join(missing[:4])}); export_llm understands LlamaForCausalLM / "
            "BitNetForCausalLM relatives and TinyBitNetLM"
        )
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_seq_len > int(limit):
        raise ExportError(
            f"export_llm: max_seq_len={max_seq_len} exceeds the model's max_position_embeddings={limit}"
        )
    pos = torch.arange(max_seq_len)[None]
    probe = torch.zeros(1, max_seq_len, head_dim)
    with torch.no_grad():
        cos, sin = base.rotary_emb(probe, pos)
    eos = getattr(config, "eos_token_id", None)
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))
    attn0 = base.layers[0].self_attn
    scaling = float(getattr(attn0, "scaling", head_dim**-0.5))
    return DecoderSpec(
        family=f"transformers.{type(model).__name__}",
        embed=base.embed_tokens,
        layers=layers,
        norm=base.norm,
        head=model.lm_head,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        scaling=scaling,
        cos=cos[0].detach().to(torch.float32).clone(),
        sin=sin[0].detach().to(torch.float32).clone(),
        vocab_size=int(config.vocab_size),
        bos_token_id=getattr(config, "bos_token_id", None),
        eos_token_ids=eos_ids,
    )


def decoder_spec(model: nn.Module, max_seq_len: int) -> DecoderSpec:
    """The :class:`DecoderSpec` of ``model`` with RoPE tables for ``max_seq_len`` positions.

    Raises:
        ExportError: the model is not a decoder LM this module understands (what is missing).
    """
    from bitnet_export.zoo.transformer import TinyBitNetLM

    if max_seq_len < 2:
        raise ExportError(f"export_llm: max_seq_len={max_seq_len}; give at least 2")
    if isinstance(model, TinyBitNetLM):
        return _zoo_spec(model, max_seq_len)
    if hasattr(model, "model") and hasattr(model, "config") and hasattr(model, "lm_head"):
        return _hf_spec(model, max_seq_len)
    raise ExportError(
        f"export_llm: {type(model).__name__} is not a decoder LM export_llm understands; give a "
        "transformers LlamaForCausalLM / BitNetForCausalLM (after convert_to_bitnet) or a TinyBitNetLM"
    )
