"""The decoder with an explicit KV cache, in the two conventions on-device runtimes use.

Both modules call the model's own modules (BitNetLayers, norms, embedding, head) through a
:class:`~bitnet_export.llm.spec.DecoderSpec`, so every BitNetLayer is captured and lowered
exactly as the logits exporters do. What differs is the cache:

* :class:`ConcatCacheDecoder` (onnxruntime-genai): ``past_key_values.{i}.key/value``
  ``[B, kv_heads, past, head_dim]`` in, ``present.{i}.key/value`` = past ++ new out; the mask
  comes from ``attention_mask`` ``[B, past + S]`` and ``position_ids``.
* :class:`StaticCacheDecoder` (LiteRT-LM): full-length caches ``kv_cache_{k,v}_{i}``
  ``[1, kv_heads, max_seq_len, head_dim]`` updated in place at ``input_pos`` (one
  ``bitnet_export::cache_update`` node, DYNAMIC_UPDATE_SLICE in TFLite); key ``j`` is visible
  to a query at position ``p`` when ``j <= p``, so stale rows past the write are never read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitnet_export.llm.cache_op import cache_update
from bitnet_export.llm.spec import DecoderSpec

__all__ = ["ConcatCacheDecoder", "StaticCacheDecoder", "cache_names"]

#: additive mask value of a hidden key (finite: a fully hidden row gives a uniform softmax, not NaN)
_HIDDEN = torch.finfo(torch.float32).min


def cache_names(layers: int, convention: str) -> tuple[list[str], list[str]]:
    """Cache input and output names per convention (``ort-genai`` or ``litert-lm``)."""
    if convention == "ort-genai":
        ins = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
        outs = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
        return ins, outs
    ins = [f"kv_cache_{kv}_{i}" for i in range(layers) for kv in ("k", "v")]
    return ins, list(ins)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class _Decoder(nn.Module):
    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        # the model's modules, registered so .eval()/capture see them under stable paths
        self.embed = spec.embed
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    k: m
                    for k, m in {
                        "input_norm": layer.input_norm,
                        "q_proj": layer.q,
                        "k_proj": layer.k,
                        "v_proj": layer.v,
                        "o_proj": layer.o,
                        "post_norm": layer.post_norm,
                        "gate_proj": layer.gate,
                        "up_proj": layer.up,
                        "down_proj": layer.down,
                        "q_norm": layer.q_norm,
                        "k_norm": layer.k_norm,
                        "attn_sub_norm": layer.attn_sub_norm,
                        "ffn_sub_norm": layer.ffn_sub_norm,
                    }.items()
                    if isinstance(m, nn.Module)
                }
            )
            for layer in spec.layers
        )
        self.norm = spec.norm
        self.head = spec.head
        self.group = spec.heads // spec.kv_heads
        self.rope_cos: torch.Tensor
        self.rope_sin: torch.Tensor
        self.register_buffer("rope_cos", spec.cos.clone(), persistent=False)
        self.register_buffer("rope_sin", spec.sin.clone(), persistent=False)

    def _qkv(
        self, i: int, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q ``[B, H, S, D]``, k and v ``[B, KV, S, D]`` with RoPE applied to q and k."""
        spec, layer = self.spec, self.spec.layers[i]
        b, s, _ = h.shape
        q = layer.q(h).view(b, s, spec.heads, spec.head_dim)
        k = layer.k(h).view(b, s, spec.kv_heads, spec.head_dim)
        v = layer.v(h).view(b, s, spec.kv_heads, spec.head_dim)
        if layer.q_norm is not None:
            q = layer.q_norm(q)
        if layer.k_norm is not None:
            k = layer.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        return q, k, v

    def _attend(
        self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Grouped-query attention of q over the whole cache, then (sub-norm and) o_proj.

        The ``group`` query heads that share a kv head are folded into the query rows
        (``[B, H, S, D]`` is ``[B, KV, group * S, D]`` in memory), so k and v are never
        repeated: no broadcast / repeat op in the graph (LiteRT's GPU delegate has none).
        ``mask`` is ``[B or 1, 1, group * S, T]`` (rows in the same order).
        """
        spec, layer = self.spec, self.spec.layers[i]
        b, _, s, d = q.shape
        group = spec.heads // spec.kv_heads
        q = q.contiguous().reshape(b, spec.kv_heads, group * s, d)
        scores = (q @ k.transpose(-1, -2)) * spec.scaling + mask
        out = (torch.softmax(scores, dim=-1) @ v).reshape(b, spec.heads, s, d)
        out = out.transpose(1, 2).reshape(b, s, spec.heads * d)
        if layer.attn_sub_norm is not None:
            out = layer.attn_sub_norm(out)
        return layer.o(out)

    def _mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.spec.layers[i]
        h = layer.post_norm(x)
        inner = layer.act(layer.gate(h)) * layer.up(h)
        if layer.ffn_sub_norm is not None:
            inner = layer.ffn_sub_norm(inner)
        return x + layer.down(inner)


class ConcatCacheDecoder(_Decoder):
    """onnxruntime-genai's decoder: ``(input_ids, attention_mask, position_ids, *past)`` ->
    ``(logits, *present)``; the past of layer ``i`` is ``past[2i]`` (key), ``past[2i+1]``."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Logits ``[B, S, V]`` and the present caches (past ++ this step's keys / values)."""
        cos = F.embedding(position_ids, self.rope_cos).unsqueeze(1)  # [B, 1, S, D]
        sin = F.embedding(position_ids, self.rope_sin).unsqueeze(1)
        total = attention_mask.shape[1]
        keys = torch.arange(total, device=input_ids.device)
        rows = position_ids.repeat(1, self.group)  # query row g * S + s is position s
        visible = (keys[None, None, :] <= rows[:, :, None]) & (attention_mask[:, None, :] > 0)
        mask = torch.where(visible, 0.0, _HIDDEN).unsqueeze(1)  # [B, 1, group * S, T]
        x = self.embed(input_ids)
        present: list[torch.Tensor] = []
        for i, layer in enumerate(self.spec.layers):
            h = layer.input_norm(x)
            q, k, v = self._qkv(i, h, cos, sin)
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            present += [k, v]
            x = x + self._attend(i, q, k, v, mask)
            x = self._mlp(i, x)
        return (self.head(self.norm(x)), *present)


class StaticCacheDecoder(_Decoder):
    """LiteRT-LM's decoder: ``(tokens [1, S] int32, input_pos [S] int32, *caches)`` ->
    ``(logits, *caches)`` (``logits`` left out when ``logits=False``, as prefill needs none)."""

    def __init__(self, spec: DecoderSpec, logits: bool = True) -> None:
        super().__init__(spec)
        self.logits = logits
        self.cache_len = spec.max_positions

    def forward(
        self, tokens: torch.Tensor, input_pos: torch.Tensor, *caches: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Logits ``[1, S, V]`` (if asked) and every cache with this step's rows written."""
        cos = F.embedding(input_pos, self.rope_cos)  # [S, D], broadcast over [1, H, S, D]
        sin = F.embedding(input_pos, self.rope_sin)
        keys = torch.arange(self.cache_len, device=tokens.device, dtype=input_pos.dtype)
        rows = input_pos.repeat(self.group)  # query row g * S + s is position s
        visible = keys[None, :] <= rows[:, None]  # [group * S, C]
        mask = torch.where(visible, 0.0, _HIDDEN)[None, None]  # [1, 1, group * S, C]
        start = input_pos[:1]
        x = self.embed(tokens.reshape(-1)).unsqueeze(0)  # 1-D gather indices (LiteRT GPU needs them)
        written: list[torch.Tensor] = []
        for i, layer in enumerate(self.spec.layers):
            h = layer.input_norm(x)
            q, k, v = self._qkv(i, h, cos, sin)
            k = cache_update(caches[2 * i], k, start, 2)
            v = cache_update(caches[2 * i + 1], v, start, 2)
            written += [k, v]
            x = x + self._attend(i, q, k, v, mask)
            x = self._mlp(i, x)
        if not self.logits:
            return tuple(written)
        return (self.head(self.norm(x)), *written)
