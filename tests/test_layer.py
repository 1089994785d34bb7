"""BitNetLayer behaviour: seed API, STE/backward, options, calibration, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bitnet_export
from bitnet_export import BitNetLayer, NotCalibratedError, QuantConfigError, calibrate
from bitnet_export.layers.bitnet import QUANT_OPTIONS


def test_seed_api_and_package_export():
    from bitnet_export.layers.bitnet import BitNetLayer as Seed

    assert Seed is bitnet_export.BitNetLayer
    layer = Seed(input_dim=512, output_dim=256, precision=8)
    x = torch.randn(1, 512)
    out = layer.forward(x)
    assert out.shape == (1, 256)
    assert torch.equal(out, layer(x))
    assert layer.weight.shape == (256, 512) and layer.bias.shape == (256,)
    assert BitNetLayer(8, 4, bias=False).bias is None
    assert BitNetLayer(8, 4).precision == 1.58  # ternary by default
    assert BitNetLayer(8, 4, precision="ternary").precision == 1.58
    assert BitNetLayer(8, 4, precision="binary").precision == 1


@pytest.mark.parametrize("bad", [3, 16, 0, 1.5, "int3", None, True])
def test_invalid_precision_lists_allowed_values(bad):
    with pytest.raises(ValueError, match=r"1\.58 \(or 'ternary'\), 1 \(or 'binary'\), 2, 4, 8"):
        BitNetLayer(8, 4, precision=bad)


def test_unknown_option_lists_valid_ones():
    layer = BitNetLayer(8, 4)
    with pytest.raises(QuantConfigError) as err:
        layer.configure_quantization(activation_bitz=8)
    for name in QUANT_OPTIONS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("activation_bits", 9),
        ("activation_bits", 8.0),
        ("activation_mode", "per_channel"),
        ("granularity", "per_row"),
        ("symmetric", 1),
        ("eps", 0.0),
        ("eps", float("nan")),
        ("observer", "histogram"),
        ("observer_momentum", 0.0),
        ("enabled", "yes"),
        ("blend", 1.5),
        ("blend", -0.1),
    ],
)
def test_invalid_option_values_raise_and_change_nothing(option, value):
    layer = BitNetLayer(8, 4)
    before = layer.quant_config()
    with pytest.raises(QuantConfigError, match=option):
        layer.configure_quantization(precision=4, **{option: value})
    assert layer.quant_config() == before  # validated as a whole before applying


def test_configure_returns_self_and_applies():
    layer = BitNetLayer(8, 4).configure_quantization(precision=4, activation_bits=6, blend=0.5)
    cfg = layer.quant_config()
    assert cfg["precision"] == 4 and cfg["activation_bits"] == 6 and cfg["blend"] == 0.5
    assert layer.granularity == "per_channel"  # follows the new precision


def test_wrong_input_shape_names_the_module():
    model = bitnet_export.convert_to_bitnet(nn.Sequential(nn.Linear(8, 4)))
    with pytest.raises(ValueError, match=r"BitNetLayer '0'.*input_dim=8"):
        model(torch.randn(2, 7))


def _grads(layer: BitNetLayer, x: torch.Tensor, g: torch.Tensor):
    xa = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    layer(xa).backward(g)
    auto = (xa.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad)
    layer.zero_grad(set_to_none=True)
    layer(x)
    gx = layer.backward(g)
    manual = (gx, layer.weight.grad, None if layer.bias is None else layer.bias.grad)
    return auto, manual


@pytest.mark.parametrize("precision", [1.58, 1, 2, 4, 8])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("blend", [1.0, 0.3])
@pytest.mark.parametrize("shape", [(6, 40), (3, 5, 40)])
def test_backward_equals_autograd(precision, mode, blend, shape):
    layer = BitNetLayer(40, 24, precision=precision, activation_mode=mode, blend=blend, bias=precision != 1)
    if mode == "static":
        calibrate(layer, [torch.randn(16, 40)])
    x = torch.randn(*shape) * 2.0  # static: beyond the calibrated range, so clipping happens
    g = torch.randn(*shape[:-1], 24)
    auto, manual = _grads(layer, x, g)
    for a, m in zip(auto, manual, strict=True):
        if a is None:
            assert m is None
            continue
        assert torch.equal(a, m), (a - m).abs().max()
    if mode == "static" and blend == 1.0:
        # clipped STE: saturated inputs get no gradient
        assert (auto[0] == 0).any()


def test_backward_accumulates_like_autograd():
    layer = BitNetLayer(10, 5)
    x, g = torch.randn(4, 10), torch.randn(4, 5)
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.clone()
    layer(x)
    layer.backward(g)
    torch.testing.assert_close(layer.weight.grad, 2 * first)


def test_backward_errors():
    layer = BitNetLayer(10, 5)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(torch.randn(2, 5))
    layer(torch.randn(2, 10))
    with pytest.raises(ValueError, match="grad_output shape"):
        layer.backward(torch.randn(3, 5))


def test_ste_trains_the_latent_weights():
    torch.manual_seed(1)
    layer = BitNetLayer(16, 4, precision=1.58)
    target = nn.Linear(16, 4)
    x = torch.randn(256, 16)
    y = target(x).detach()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    first = last = None
    for _ in range(200):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        last = loss.item()
    assert last < 0.5 * first


def test_blend_interpolates_between_float_and_quantized():
    layer = BitNetLayer(32, 8, precision=2)
    x = torch.randn(4, 32)
    y_q = layer(x)
    y_f = F.linear(x, layer.weight, layer.bias)
    layer.configure_quantization(blend=0.0)
    assert torch.equal(layer(x), y_f)
    layer.configure_quantization(blend=1.0, enabled=False)
    assert torch.equal(layer(x), y_f)
    layer.configure_quantization(enabled=True, blend=0.5)
    y_half = layer(x)
    # linear in the blended inputs: not the average of the outputs, but strictly between
    assert not torch.allclose(y_half, y_f) and not torch.allclose(y_half, y_q)
    assert (y_half - y_f).abs().max() < (y_q - y_f).abs().max()


def test_static_mode_requires_calibration_and_names_the_fix():
    model = bitnet_export.convert_to_bitnet(
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), activation_mode="static"
    )
    with pytest.raises(NotCalibratedError, match=r"'0'.*bitnet_export.calibrate"):
        model(torch.randn(2, 8))
    with pytest.raises(NotCalibratedError):
        model[0].quant_params()
    calibrate(model, [torch.randn(4, 8)])
    assert model(torch.randn(2, 8)).shape == (2, 2)


def test_calibration_rejects_nan():
    layer = BitNetLayer(4, 2, activation_mode="static")
    bad = torch.tensor([[1.0, float("nan"), 0.0, 0.0]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        calibrate(layer, [bad])
    assert not layer.calibrating


def test_quant_params_are_frozen():
    params = BitNetLayer(8, 4).quant_params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.in_features = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        params.weight.values[0, 0] = 1
    assert params.weight.values.dtype == np.int8
    assert params.describe()["weight"]["scheme"] == "ternary"


def _model(mode: str) -> nn.Module:
    base = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    model = bitnet_export.convert_to_bitnet(
        base,
        plan={"0": 8, "2": 4},
        precision="ternary",
        activation_mode=mode,
        observer="moving_average",
    )
    if mode == "static":
        calibrate(model, [torch.randn(8, 20) for _ in range(3)])
    return model


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_checkpoint_reloads_bit_identically(tmp_path, mode):
    model = _model(mode)
    x = torch.randn(16, 20)
    y = model(x)
    path = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), path)

    # a fresh model built with *default* options: the config comes from the checkpoint
    fresh = bitnet_export.convert_to_bitnet(
        nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    )
    fresh.load_state_dict(torch.load(path, weights_only=False))
    assert torch.equal(fresh(x), y)
    for (_, a), (_, b) in zip(
        bitnet_export.bitnet_layers(model), bitnet_export.bitnet_layers(fresh), strict=True
    ):
        pa, pb = a.quant_params(), b.quant_params()
        assert pa.describe() == pb.describe()
        np.testing.assert_array_equal(pa.weight.values, pb.weight.values)
        np.testing.assert_array_equal(pa.weight.scale, pb.weight.scale)
    assert fresh[0].precision == 8 and fresh[2].precision == 4 and fresh[4].precision == 1.58
