"""Model helpers: conversion with a precision plan, gradual schedule, statistics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from reference import numpy_quant as ref
from torch import nn

from bitnet_export import (
    BitNetLayer,
    GradualQuantization,
    QuantConfigError,
    bitnet_layers,
    configure_model,
    convert_to_bitnet,
    format_statistics,
    layer_statistics,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(x)))


def test_convert_keeps_weights_plan_and_skip():
    net = Net()
    conv = convert_to_bitnet(net, plan={"encoder.2": 4, "encoder.*": 8}, skip=["head"])
    assert isinstance(net.encoder[0], nn.Linear)  # not in place by default
    assert type(conv.head) is nn.Linear
    assert isinstance(conv.encoder[0], BitNetLayer) and conv.encoder[0].precision == 8
    assert conv.encoder[2].precision == 4  # first matching pattern wins
    assert conv.encoder[0].module_path == "encoder.0"
    assert torch.equal(conv.encoder[0].weight, net.encoder[0].weight)
    assert torch.equal(conv.encoder[2].bias, net.encoder[2].bias)
    # with quantization disabled the converted model computes exactly what the float one does
    configure_model(conv, enabled=False)
    x = torch.randn(5, 12)
    assert torch.equal(conv(x), net(x))
    assert [p for p, _ in bitnet_layers(conv)] == ["encoder.0", "encoder.2"]


def test_convert_rejects_patterns_that_match_nothing():
    with pytest.raises(QuantConfigError, match=r"\['encodr.\*'\].*encoder.0"):
        convert_to_bitnet(Net(), plan={"encodr.*": 4})
    with pytest.raises(QuantConfigError, match="precision"):
        convert_to_bitnet(Net(), plan={"head": 3})


def test_convert_inplace_and_options():
    net = Net()
    out = convert_to_bitnet(net, precision=2, inplace=True, activation_bits=6)
    assert out is net and isinstance(net.head, BitNetLayer)
    assert net.head.activation_bits == 6 and net.head.precision == 2


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_gradual_schedule(shape):
    model = convert_to_bitnet(Net())
    sched = GradualQuantization(model, warmup_steps=2, ramp_steps=4, shape=shape)
    seen = [sched.blend_at(s) for s in range(8)]
    assert seen[:3] == [0.0, 0.0, 0.0] and seen[6:] == [1.0, 1.0]
    assert all(a <= b for a, b in itertools.pairwise(seen))
    expected_mid = 0.5 if shape == "linear" else 0.5 - 0.5 * math.cos(math.pi * 0.5)
    assert seen[4] == pytest.approx(expected_mid)
    for _ in range(3):
        sched.step()
    assert all(layer.blend == pytest.approx(seen[3]) for _, layer in bitnet_layers(model))
    state = sched.state_dict()
    other = GradualQuantization(model, warmup_steps=2, ramp_steps=4, shape=shape)
    other.load_state_dict(state)
    assert other.current_step == 3
    with pytest.raises(QuantConfigError):
        GradualQuantization(model, shape="step")  # type: ignore[arg-type]


def test_layer_statistics_match_numpy():
    model = convert_to_bitnet(Net(), plan={"head": 8, "encoder.2": 1})
    stats = {s.module_path: s for s in layer_statistics(model)}
    w = model.encoder[0].weight.detach().numpy()
    q, s = ref.ternary(w)
    s0 = stats["encoder.0"]
    assert s0.sparsity == pytest.approx(float((q == 0).mean()))
    assert s0.clip_rate == pytest.approx(float((np.abs(np.rint(w / s)) > 1).mean()))
    err = ((w - q * s) ** 2).sum()
    assert s0.snr_db == pytest.approx(10 * math.log10((w**2).sum() / err), rel=1e-4)
    assert stats["encoder.2"].clip_rate is None  # binary has no range to clip to
    assert stats["head"].clip_rate == 0.0  # absmax scaling never clips
    assert stats["head"].snr_db > s0.snr_db  # 8 bits is closer than ternary
    table = format_statistics(list(stats.values()))
    assert "encoder.0" in table and "SNR" in table
