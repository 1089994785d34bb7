"""passes.fuse_rope: RoPE op chains -> ONNX RotaryEmbedding (opset 23), and torch.onnx's own
RMSNorm -> RMSNormalization at opset 23 that the fast path relies on (and its absence at 21/25,
where the exact paths keep PyTorch's op chain).

Reference: the unfused graph torch exported, on ORT CPU (the fused kernel rounds differently:
float32 rounding, never more); chains that must not fuse stay as they are.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from bitnet_export.passes.fuse_rope import fuse_rope
from bitnet_export.zoo.transformer import RMSNorm

HEADS, SEQ, DIM, POSITIONS = 4, 5, 16, 32


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _tables(halves_equal: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (10000 ** (torch.arange(0, DIM, 2, dtype=torch.float32) / DIM))
    angles = torch.outer(torch.arange(POSITIONS, dtype=torch.float32), inv)
    second = angles if halves_equal else angles * 1.5
    full = torch.cat([angles, second], dim=-1)
    return full.cos(), full.sin()


class Block(nn.Module):
    """Both RMSNorm spellings (ours: ``x * r * w``; HF Llama: ``w * (x * r)``) and HF's RoPE."""

    def __init__(self, halves_equal: bool = True, leak_rotated: bool = False) -> None:
        super().__init__()
        self.ours = RMSNorm(HEADS * DIM)
        self.hf = LlamaRMSNorm(HEADS * DIM, eps=1e-6)
        with torch.no_grad():
            self.ours.weight.uniform_(0.5, 1.5)
            self.hf.weight.uniform_(0.5, 1.5)
        cos, sin = _tables(halves_equal)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.leak_rotated = leak_rotated

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, s, _ = x.shape
        h = self.hf(self.ours(x))
        t = h.view(b, s, HEADS, DIM).transpose(1, 2)
        cos = F.embedding(position_ids, self.cos).unsqueeze(1)
        sin = F.embedding(position_ids, self.sin).unsqueeze(1)
        rotated = _rotate_half(t)
        out = (t * cos + rotated * sin,)
        if self.leak_rotated:  # an intermediate of the chain is read elsewhere too
            out += (rotated + 1.0,)
        return out


def _export(model: nn.Module, opset: int = 23) -> tuple[ir.Model, tuple[np.ndarray, np.ndarray]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, SEQ, HEADS * DIM, generator=gen)
    pos = torch.arange(3, 3 + SEQ).repeat(2, 1)
    program = torch.onnx.export(model.eval(), (x, pos), dynamo=True, opset_version=opset, verbose=False)
    assert program is not None
    return program.model, (x.numpy(), pos.numpy())


def _run(model: ir.Model, feeds: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    proto = ir.serde.serialize_model(model)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip([i.name for i in sess.get_inputs()], feeds, strict=True)))


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


@pytest.mark.parametrize(("opset", "fused"), [(21, False), (23, True), (25, False)])
def test_torch_writes_rmsnorm_as_one_op_at_opset_23_only(opset, fused):
    """Both spellings (ours ``x * r * w``, HF Llama's ``w * (x * r)``). export_llm relies on
    this: the fast path exports at 23, the exact ones at 21 / 25 keep the op chain."""
    ops = _ops(_export(Block(), opset=opset)[0])
    assert ops.count("RMSNormalization") == (2 if fused else 0), ops
    assert ("ReduceMean" in ops) != fused


def test_fuses_rope_with_the_same_numbers():
    model, feeds = _export(Block())
    before = _run(model, feeds)
    assert fuse_rope(model) == 1
    ops = _ops(model)
    assert ops.count("RotaryEmbedding") == 1, ops
    assert not {"Neg", "Concat", "Slice", "Gather"} & set(ops), ops  # dead gathers removed too
    after = _run(model, feeds)
    # float32 rounding of another kernel only
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-5)
    assert np.abs(after[0]).max() > 0.1


def test_chains_that_must_not_fuse_stay():
    # below opset 23 there is no RotaryEmbedding
    model, _ = _export(Block(), opset=21)
    assert fuse_rope(model) == 0
    # a table whose halves differ is not HF's rotate_half layout
    model, feeds = _export(Block(halves_equal=False))
    before = _run(model, feeds)
    assert fuse_rope(model) == 0 and "RotaryEmbedding" not in _ops(model)
    np.testing.assert_array_equal(_run(model, feeds)[0], before[0])
    # a rotated half that is also an output stays (its Concat has another reader)
    model, feeds = _export(Block(leak_rotated=True))
    before = _run(model, feeds)
    assert fuse_rope(model) == 0
    after = _run(model, feeds)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
