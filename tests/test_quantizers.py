"""Every quantizer of BitNetLayer against the independent numpy formulas in reference/."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import numpy_quant as ref

from bitnet_export import BitNetLayer, calibrate

IN, OUT = 96, 48


def _layer(precision, **opts) -> BitNetLayer:
    layer = BitNetLayer(IN, OUT, precision=precision, **opts)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(OUT, IN) * 0.05)
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(OUT) * 0.1)
    return layer


def _weight_ref(precision, w, per_channel):
    if precision == 1.58:
        return ref.ternary(w, per_channel)
    if precision == 1:
        return ref.binary(w, per_channel)
    return ref.kbit(w, precision, per_channel)


CASES = [
    (1.58, "per_tensor"),
    (1.58, "per_channel"),
    (1, "per_tensor"),
    (1, "per_channel"),
    (2, "per_channel"),
    (4, "per_channel"),
    (8, "per_channel"),
    (2, "per_tensor"),
    (4, "per_tensor"),
    (8, "per_tensor"),
]


@pytest.mark.parametrize(("precision", "granularity"), CASES)
def test_weight_quantizer_matches_numpy(precision, granularity):
    layer = _layer(precision, granularity=granularity)
    w = layer.weight.detach().numpy()
    q_ref, s_ref = _weight_ref(precision, w, granularity == "per_channel")
    qp = layer.quant_params().weight
    np.testing.assert_array_equal(qp.values, q_ref)
    np.testing.assert_allclose(qp.scale, s_ref.reshape(-1), rtol=1e-6)
    assert qp.values.min() >= qp.qmin and qp.values.max() <= qp.qmax
    # the codes really use the range (a quantizer returning zeros would not pass)
    n_codes = len(np.unique(qp.values))
    assert n_codes == {1.58: 3, 1: 2, 2: 3}[precision] if precision in (1.58, 1, 2) else n_codes > 4


def test_default_granularity_follows_published_schemes():
    assert BitNetLayer(4, 4).granularity == "per_tensor"  # ternary: one absmean scale
    assert BitNetLayer(4, 4, precision="binary").granularity == "per_tensor"
    assert BitNetLayer(4, 4, precision=4).granularity == "per_channel"
    layer = BitNetLayer(4, 4, precision=8, granularity="per_tensor")
    assert layer.granularity == "per_tensor"


@pytest.mark.parametrize(("precision", "granularity"), CASES)
@pytest.mark.parametrize("bits", [8, 4])
def test_dynamic_per_token_forward_matches_numpy(precision, granularity, bits):
    layer = _layer(precision, granularity=granularity, activation_bits=bits)
    x = torch.randn(5, 7, IN) * 3.0
    x[0, 0] = 0.0  # an all-zero token must quantize to zeros, not NaN
    y = layer(x).detach().numpy()

    w = layer.weight.detach().numpy()
    q_w, s_w = _weight_ref(precision, w, granularity == "per_channel")
    q_x, gamma = ref.per_token(x.numpy(), bits)
    x_deq = q_x.astype(np.float32) / gamma
    y_ref = x_deq @ (q_w.astype(np.float32) * s_w).T + layer.bias.detach().numpy()
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[0, 0], layer.bias.detach().numpy(), rtol=0, atol=0)
    # integer form: acc = q_x @ q_w^T exactly, then one rescale
    acc = q_x.astype(np.int64) @ q_w.astype(np.int64).T
    y_int = acc / gamma.astype(np.float64) * s_w.reshape(-1).astype(np.float64)
    np.testing.assert_allclose(y, y_int + layer.bias.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("observer", ["minmax", "moving_average"])
def test_static_per_tensor_matches_numpy(symmetric, observer):
    layer = _layer(4, activation_mode="static", symmetric=symmetric, observer=observer, observer_momentum=0.2)
    batches = [torch.randn(16, IN) * (1.0 + i) + 0.5 for i in range(4)]
    calibrate(layer, batches)

    np_batches = [b.numpy() for b in batches]
    if observer == "minmax":
        lo, hi = ref.minmax_observer(np_batches)
    else:
        lo, hi = ref.moving_average_observer(np_batches, 0.2)
    scale, zp = ref.static_params(lo, hi, symmetric=symmetric)
    p = layer.quant_params().input
    assert p.mode == "static"
    np.testing.assert_allclose(p.observed_min, lo, rtol=1e-6)
    np.testing.assert_allclose(p.observed_max, hi, rtol=1e-6)
    np.testing.assert_allclose(p.scale, scale, rtol=1e-6)
    assert p.zero_point == zp
    if symmetric:
        assert zp == 0
    else:
        assert zp != 0  # a shifted range gives a non-trivial zero point

    x = torch.randn(9, IN) * 8.0  # wider than calibrated: some values saturate
    y = layer(x).detach().numpy()
    q_x = ref.static_quantize(x.numpy(), p.scale, p.zero_point)
    assert (q_x == 127).any() or (q_x == -128).any()
    x_deq = (q_x - p.zero_point).astype(np.float32) * np.float32(p.scale)
    q_w, s_w = ref.kbit(layer.weight.detach().numpy(), 4)
    y_ref = x_deq @ (q_w.astype(np.float32) * s_w).T + layer.bias.detach().numpy()
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


def test_static_output_range_is_recorded():
    layer = _layer(8, activation_mode="static")
    x = torch.randn(32, IN)
    calibrate(layer, [x])
    with torch.no_grad():
        y_float_acts = torch.nn.functional.linear(
            x, torch.from_numpy(layer.quant_params().weight.dequantize()), layer.bias
        )
    out = layer.quant_params().output
    assert out is not None
    np.testing.assert_allclose(out.observed_min, float(y_float_acts.min()), rtol=1e-5)
    np.testing.assert_allclose(out.observed_max, float(y_float_acts.max()), rtol=1e-5)


@pytest.mark.parametrize("precision", [1.58, 1, 2, 4, 8])
def test_all_zero_weight_and_input_give_zeros_not_nan(precision):
    layer = BitNetLayer(16, 8, precision=precision, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
    y = layer(torch.randn(3, 16))
    assert torch.equal(y, torch.zeros(3, 8))
    layer2 = BitNetLayer(16, 8, precision=precision, bias=False)
    y2 = layer2(torch.zeros(3, 16))
    assert torch.equal(y2, torch.zeros(3, 8))
    y2.sum().backward()
    assert torch.isfinite(layer2.weight.grad).all()
