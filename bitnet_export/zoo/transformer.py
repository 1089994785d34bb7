"""A tiny BitNet decoder language model built from the project's own modules.

The architecture of BitNet b1.58 / Llama at toy size: token embedding, pre-norm blocks of
RMSNorm -> grouped-query self-attention with rotary position embeddings (RoPE) and a causal
mask -> RMSNorm -> gated MLP (squared ReLU, as BitNet b1.58), a final RMSNorm and a head.
Every projection is a :class:`~bitnet_export.layers.bitnet.BitNetLayer`. ``forward`` returns
the logits ``[batch, seq, vocab]`` of every position (no KV cache: a logits model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bitnet_export.layers.bitnet import BitNetLayer

__all__ = ["RMSNorm", "TinyBitNetLM", "TinyLMConfig", "TransformerBlock", "factory"]


@dataclass(frozen=True)
class TinyLMConfig:
    """Sizes of :class:`TinyBitNetLM` (defaults: ~60k parameters, 2 layers, width 64)."""

    vocab_size: int = 256
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    max_seq_len: int = 64
    rope_theta: float = 10000.0
    eps: float = 1e-5
    precision: float | int | str = 1.58
    #: the tokenizer's begin-of-sequence id (None: the model has none), for exporters' configs
    bos_token_id: int | None = None
    #: the ids that end generation (empty: none), for exporters' configs
    eos_token_ids: tuple[int, ...] = ()


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis (as Llama / BitNet)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized ``x``."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rope_tables(cfg: TinyLMConfig) -> tuple[torch.Tensor, torch.Tensor]:
    head_dim = cfg.hidden // cfg.heads
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32), inv)
    angles = torch.cat([angles, angles], dim=-1)  # [T, head_dim], halves rotated together
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    """Grouped-query causal self-attention with RoPE; q/k/v/o are BitNetLayers."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        if cfg.hidden % cfg.heads or cfg.heads % cfg.kv_heads:
            raise ValueError("TinyLMConfig: hidden must divide by heads, heads by kv_heads")
        self.heads, self.kv_heads = cfg.heads, cfg.kv_heads
        self.head_dim = cfg.hidden // cfg.heads
        p = cfg.precision
        self.q_proj = BitNetLayer(cfg.hidden, cfg.heads * self.head_dim, precision=p, bias=False)
        self.k_proj = BitNetLayer(cfg.hidden, cfg.kv_heads * self.head_dim, precision=p, bias=False)
        self.v_proj = BitNetLayer(cfg.hidden, cfg.kv_heads * self.head_dim, precision=p, bias=False)
        self.o_proj = BitNetLayer(cfg.heads * self.head_dim, cfg.hidden, precision=p, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, S, hidden]``; ``cos``/``sin`` ``[S, head_dim]`` for positions ``0..S-1``."""
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        out = F.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim))


class TransformerBlock(nn.Module):
    """Pre-norm decoder block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        p = cfg.precision
        self.attn_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.gate_proj = BitNetLayer(cfg.hidden, cfg.intermediate, precision=p, bias=False)
        self.up_proj = BitNetLayer(cfg.hidden, cfg.intermediate, precision=p, bias=False)
        self.down_proj = BitNetLayer(cfg.intermediate, cfg.hidden, precision=p, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """One block over ``x`` ``[B, S, hidden]``."""
        x = x + self.attn(self.attn_norm(x), cos, sin)
        h = self.mlp_norm(x)
        return x + self.down_proj(F.relu(self.gate_proj(h)).square() * self.up_proj(h))


class TinyBitNetLM(nn.Module):
    """The tiny BitNet decoder (see the module docstring)."""

    def __init__(self, cfg: TinyLMConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or TinyLMConfig()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.head = BitNetLayer(cfg.hidden, cfg.vocab_size, precision=cfg.precision, bias=False)
        cos, sin = _rope_tables(cfg)
        self.rope_cos: torch.Tensor
        self.rope_sin: torch.Tensor
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, S, vocab]`` of token ids ``[B, S]`` (int64, ``S <= max_seq_len``)."""
        s = input_ids.shape[1]
        cos, sin = self.rope_cos[:s], self.rope_sin[:s]
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))


def factory() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``(TinyBitNetLM(), (token ids [1, 16],))`` with seeded weights, for the CLI and tests."""
    torch.manual_seed(0)
    model = TinyBitNetLM().eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    return model, (ids,)
