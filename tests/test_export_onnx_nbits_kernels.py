"""ONNX export with ``kernels="nbits"``: BitNet's exact per-token maths on ORT's MatMulNBits.

MatMulNBits re-quantizes its float input per block of 128 with ``amax / 127``; blocks of 127
BitNet codes plus one pad of 127 make that scale exactly 1, so the kernel keeps the codes.
References: PyTorch's inference form (integer maths), the ``kernels="integer"`` file on ORT CPU,
and numpy's integer product.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import bitnet_export as bx
from bitnet_export.api import export_onnx
from bitnet_export.zoo.models import BitNetModel, MixedBlock
from runtimes.ort_cpu import OrtCpuAdapter

PRECISIONS = {"int8": (1.58, 4, 8), "int4": (1.58, 2, 4), "int2": (1.58, 1, 2)}


def _run(path, *xs: np.ndarray) -> list[np.ndarray]:
    ort = OrtCpuAdapter()
    ort.load(path)
    names = [name for name, *_ in ort.input_specs()]
    return list(ort.run(dict(zip(names, xs, strict=True))).values())


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("weights", ["int8", "int4", "int2"])
@pytest.mark.parametrize("kind", ["seed_mlp", "mixed"])
def test_same_numbers_as_the_integer_lowering(tmp_path, kind, weights):
    torch.manual_seed(0)
    model = (
        BitNetModel(784, 256, 10) if kind == "seed_mlp" else MixedBlock(precisions=PRECISIONS[weights])
    ).eval()
    dim = 784 if kind == "seed_mlp" else 32
    example = torch.randn(4, dim)
    nb = export_onnx(model, example, tmp_path / "n.onnx", weights=weights, kernels="nbits")
    itg = export_onnx(model, example, tmp_path / "i.onnx", weights=weights)
    onnx.checker.check_model(str(nb.path), full_check=True)
    ops = _ops(nb.path)
    assert ops.count("MatMulNBits") == len(nb.layers) and "MatMulInteger" not in ops, ops
    meta = {p.key: p.value for p in onnx.load(str(nb.path)).metadata_props}
    assert meta["bitnet_export.kernels"] == '"nbits"'
    x = (torch.randn(64, dim, generator=torch.Generator().manual_seed(2)) * 1.5).numpy()
    (y_nb,), (y_int,) = _run(nb.path, x), _run(itg.path, x)
    np.testing.assert_array_equal(y_nb, y_int)  # two kernels, one result, bit for bit
    if kind == "seed_mlp":  # BitNet layers and ReLU only: PyTorch's integer form, bit for bit
        with torch.no_grad():
            np.testing.assert_array_equal(y_nb, model(torch.from_numpy(x)).numpy())
    report = bx.verify(model, example, nb.path, inputs=torch.from_numpy(x))
    # mixed: LayerNorm / GELU in float, rounded apart from PyTorch's (as the integer file)
    assert report.passed and report.results[0].outputs[0].max_rel <= 1e-5, report.format_table()


@pytest.mark.parametrize(("k", "precision"), [(5, 1.58), (127, 1.58), (128, 8), (300, 4), (1000, 2)])
def test_block_padding_keeps_every_code(tmp_path, k, precision):
    """K below, at and past one block of 127; rows whose codes reach +-qmax and rows far below
    it (the kernel would rescale those without the pad); a 3-D input (batch, tokens, K)."""
    torch.manual_seed(0)
    layer = bx.BitNetLayer(input_dim=k, output_dim=24, precision=precision).eval()
    x = torch.randn(2, 5, k)
    x[0, 0] *= 1e-3
    x[1, 4, : k // 2] *= 100.0  # one large half: the other half's codes are all small
    res = export_onnx(layer, x, tmp_path / "l.onnx", kernels="nbits", weights="int8")
    (got,) = _run(res.path, x.numpy())
    p = layer.quant_params()
    codes = torch.round(x * (p.input.qmax / x.abs().amax(-1, keepdim=True).clamp_min(p.input.eps)))
    acc = codes.numpy().astype(np.int64) @ p.weight.values.astype(np.int64).T
    with torch.no_grad():
        np.testing.assert_array_equal(got, layer(x).numpy())
    scale = (x.abs().amax(-1, keepdim=True).clamp_min(p.input.eps) / p.input.qmax).numpy()
    np.testing.assert_allclose(got, acc * scale * p.weight.scale + p.bias, rtol=1e-5, atol=1e-6)


def test_layers_reading_one_input_share_one_quantizer(tmp_path):
    """q / k / v read the same tensor: one set of codes feeds the three MatMulNBits."""

    class Qkv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (bx.BitNetLayer(input_dim=64, output_dim=n) for n in (64, 32, 32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.q(x), self.k(x) * 2, self.v(x)], dim=-1)

    torch.manual_seed(0)
    model = Qkv().eval()
    x = torch.randn(3, 64)
    for kernels, quantizer in (("nbits", "Round"), ("integer", "QuantizeLinear")):
        res = export_onnx(model, x, tmp_path / f"{kernels}.onnx", kernels=kernels)
        ops = _ops(res.path)
        assert ops.count(quantizer) == 1 and ops.count("ReduceMax") == 1, ops
        (got,) = _run(res.path, x.numpy())
        with torch.no_grad():
            np.testing.assert_array_equal(got, model(x).numpy())


def test_layers_past_the_float_bound_and_static_layers_keep_integer_kernels(tmp_path):
    """8-bit weights at K = 2048: 127 * K' * 127 >= 2^24, block sums could round in float32;
    a static layer: calibrated codes, not per-token ones. Both lower to MatMulInteger, exact."""
    torch.manual_seed(0)
    model = nn.Sequential(
        bx.BitNetLayer(2048, 16, precision=8),
        nn.ReLU(),
        bx.BitNetLayer(16, 16),
        nn.ReLU(),
        bx.BitNetLayer(16, 4),
    ).eval()
    bx.configure_model(model[4], activation_mode="static")
    gen = torch.Generator().manual_seed(1)
    bx.calibrate(model, [torch.randn(16, 2048, generator=gen) for _ in range(2)])
    x = torch.randn(4, 2048)
    res = export_onnx(model, x, tmp_path / "m.onnx", kernels="nbits")
    kernels = [("MatMulNBits" in la["ops"], "MatMulInteger" in la["ops"]) for la in res.layers]
    assert kernels == [(False, True), (True, False), (False, True)], res.layers
    (got,) = _run(res.path, x.numpy())
    report = bx.verify(model, x, res.path)
    assert report.passed and report.results[0].outputs[0].max_abs == 0.0, report.format_table()
    assert np.isfinite(got).all()
