"""The quantizer formulas, as pure functions on (detached) torch tensors.

Each weight quantizer returns ``(codes, scale)`` with integer-valued float32 ``codes`` of the
weight's shape and a float32 ``scale`` of shape ``[out, 1]`` (per channel) or ``[1, 1]``
(per tensor), so that the dequantized weight is ``codes * scale``. Rounding is
``torch.round``: round half to even, as ONNX ``QuantizeLinear`` and ``Round``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Literal

import torch

from bitnet_export.quant.params import Granularity

__all__ = [
    "RoundingMode",
    "activation_qrange",
    "activation_rounding",
    "dequantize_static",
    "output_requantization",
    "quantize_dynamic_per_token",
    "quantize_static",
    "quantize_weight",
    "quantize_weight_binary",
    "quantize_weight_int",
    "quantize_weight_ternary",
    "requantize_output",
    "round_activation",
    "static_qparams",
    "weight_qrange",
]


RoundingMode = Literal["half_even", "half_away"]
_ACTIVATION_ROUNDING: list[RoundingMode] = ["half_even"]


@contextlib.contextmanager
def activation_rounding(mode: RoundingMode) -> Iterator[None]:
    """Temporarily round activations ``half_even`` (BitNet / ``torch.round`` / ONNX, the default)
    or ``half_away`` from zero (``std::round``: TFLite's quantization kernels).

    The two differ only on exact ``.5`` ties, which do occur in practice (e.g. ternary-weighted
    hidden activations); the parity engine uses ``half_away`` for its TFLite reference.
    """
    _ACTIVATION_ROUNDING.append(mode)
    try:
        yield
    finally:
        _ACTIVATION_ROUNDING.pop()


_OUTPUT_REQUANT: list[Mapping[str, tuple[float, int]]] = [{}]


@contextlib.contextmanager
def output_requantization(outputs: Mapping[str, tuple[float, int]]) -> Iterator[None]:
    """Temporarily quantize the outputs of the named static layers to int8 and back.

    ``outputs`` maps module paths to ``(scale, zero_point)``. A TFLite full-integer
    FULLY_CONNECTED produces int8: where a static layer's output leaves the int8 chain (it
    feeds float ops), the file requantizes it to the layer's calibrated output range. The
    parity engine's reference for such a file does the same (rounding in the current
    :func:`activation_rounding` mode), so it computes what the file specifies.
    """
    _OUTPUT_REQUANT.append(outputs)
    try:
        yield
    finally:
        _OUTPUT_REQUANT.pop()


def requantize_output(module_path: str, y: torch.Tensor) -> torch.Tensor:
    """``y`` through int8 at the layer's recorded output scale, inside :func:`output_requantization`."""
    qp = _OUTPUT_REQUANT[-1].get(module_path)
    if qp is None:
        return y
    scale, zero_point = qp
    return dequantize_static(quantize_static(y, scale, zero_point, 8), scale, zero_point)


def round_activation(v: torch.Tensor) -> torch.Tensor:
    """Round activation codes in the current :func:`activation_rounding` mode."""
    if _ACTIVATION_ROUNDING[-1] == "half_away":
        return torch.sign(v) * torch.floor(v.abs() + 0.5)
    return torch.round(v)


def _reduce_abs_mean(w: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    if granularity == "per_channel":
        return w.abs().mean(dim=1, keepdim=True)
    return w.abs().mean().reshape(1, 1)


def quantize_weight_ternary(
    w: torch.Tensor, eps: float, granularity: Granularity = "per_tensor"
) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58 absmean quantizer.

    ``s = max(mean(|W|), eps)``, ``Wq = clip(round(W / s), -1, 1)``, ``W ~= Wq * s``.
    """
    scale = _reduce_abs_mean(w, granularity).clamp_min(eps)
    codes = torch.clamp(torch.round(w / scale), -1.0, 1.0)
    return codes, scale


def quantize_weight_binary(
    w: torch.Tensor, eps: float, granularity: Granularity = "per_tensor"
) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet (2023) binary quantizer.

    ``Wq = sign(W - mean(W))`` with ``sign(v) = +1 if v > 0 else -1`` (the paper's Sign, never
    0), scale ``beta = mean(|W|)``. ``eps`` is unused: there is no division, and an all-zero
    weight gives ``beta = 0`` and therefore an all-zero dequantized weight.
    """
    del eps  # no division in this quantizer
    centre = w.mean(dim=1, keepdim=True) if granularity == "per_channel" else w.mean().reshape(1, 1)
    codes = torch.where(w - centre > 0, 1.0, -1.0).to(w.dtype)
    scale = _reduce_abs_mean(w, granularity)
    return codes, scale


def quantize_weight_int(
    w: torch.Tensor, bits: int, eps: float, granularity: Granularity = "per_channel"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax k-bit quantizer.

    ``qmax = 2^(k-1) - 1``, ``s = max(max|W|, eps) / qmax``, ``Wq = clip(round(W / s), -qmax, qmax)``.
    """
    qmax = float(2 ** (bits - 1) - 1)
    if granularity == "per_channel":
        absmax = w.abs().amax(dim=1, keepdim=True)
    else:
        absmax = w.abs().amax().reshape(1, 1)
    scale = absmax.clamp_min(eps) / qmax
    codes = torch.clamp(torch.round(w / scale), -qmax, qmax)
    return codes, scale


def weight_qrange(precision: float | int) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of the codes of a weight precision."""
    if precision in (1.58, 1):
        return -1, 1
    qmax = 2 ** (int(precision) - 1) - 1
    return -qmax, qmax


def quantize_weight(
    w: torch.Tensor, precision: float | int, eps: float, granularity: Granularity
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to the quantizer of ``precision`` (1.58, 1, 2, 4, 8)."""
    if precision == 1.58:
        return quantize_weight_ternary(w, eps, granularity)
    if precision == 1:
        return quantize_weight_binary(w, eps, granularity)
    return quantize_weight_int(w, int(precision), eps, granularity)


def activation_qrange(bits: int) -> tuple[int, int]:
    """Signed integer range of ``bits``-bit activations: ``(-2^(b-1), 2^(b-1)-1)``."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def quantize_dynamic_per_token(x: torch.Tensor, bits: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet per-token absmax activation quantizer.

    ``gamma = qmax / max(max|x|, eps)`` over the last dim, ``q = clip(round(x * gamma), qmin, qmax)``.

    Returns:
        ``(codes, gamma)``; ``x ~= codes / gamma``. ``gamma`` keeps the last dim as size 1.
    """
    qmin, qmax = activation_qrange(bits)
    absmax = x.abs().amax(dim=-1, keepdim=True).clamp_min(eps)
    # a true float32 division: torch computes `python_scalar / tensor` as reciprocal * scalar
    # (two roundings), which differs from ONNX Div / numpy in the last bit
    gamma = torch.full_like(absmax, float(qmax)) / absmax
    codes = torch.clamp(round_activation(x * gamma), qmin, qmax)
    return codes, gamma


def static_qparams(lo: float, hi: float, bits: int, symmetric: bool, eps: float) -> tuple[float, int]:
    """Scale and zero point of a static per-tensor range (float32 arithmetic).

    Symmetric: ``scale = max(max(|lo|, |hi|), eps) / qmax``, zero point 0.
    Asymmetric (TFLite int8 activations): the range is widened to contain 0,
    ``scale = max(hi - lo, eps) / (qmax - qmin)``, ``zp = clip(qmin - round(lo / scale), qmin, qmax)``.
    """
    qmin, qmax = activation_qrange(bits)
    lo_t = torch.tensor(lo, dtype=torch.float32)
    hi_t = torch.tensor(hi, dtype=torch.float32)
    if symmetric:
        absmax = torch.maximum(lo_t.abs(), hi_t.abs()).clamp_min(eps)
        return float(absmax / qmax), 0
    lo_t = torch.clamp(lo_t, max=0.0)
    hi_t = torch.clamp(hi_t, min=0.0)
    scale = (hi_t - lo_t).clamp_min(eps) / float(qmax - qmin)
    zp = int(torch.clamp(qmin - torch.round(lo_t / scale), qmin, qmax))
    return float(scale), zp


def quantize_static(x: torch.Tensor, scale: float, zero_point: int, bits: int) -> torch.Tensor:
    """ONNX ``QuantizeLinear`` semantics: ``clip(round(x / scale) + zp, qmin, qmax)`` (codes as float)."""
    qmin, qmax = activation_qrange(bits)
    s = torch.tensor(scale, dtype=torch.float32)
    return torch.clamp(round_activation(x / s) + zero_point, qmin, qmax)


def dequantize_static(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """ONNX ``DequantizeLinear`` semantics: ``(q - zp) * scale``."""
    s = torch.tensor(scale, dtype=torch.float32)
    return (codes - zero_point) * s


def integer_matmul(qx: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
    """Exact ``qx @ qw^T`` of integer-valued tensors, returned as float32.

    Float32 sums of integers are exact below 2^24; above that bound the product is taken in
    float64 (exact to 2^53) and rounded once to float32, as ONNX ``Cast(int32 -> float)`` does.
    """
    k = qx.shape[-1]
    bound = k * float(qx.abs().max() if qx.numel() else 0) * float(qw.abs().max() if qw.numel() else 0)
    if bound < 2**24:
        return torch.matmul(qx, qw.t())
    return torch.matmul(qx.double(), qw.double().t()).float()


def linear_dynamic_int(
    x: torch.Tensor,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    eps: float,
) -> torch.Tensor:
    """BitNet linear in integer form: ``y = (q_x @ Wq^T) * ((m / qmax) * s_w) + bias``.

    ``m = max(max|x|, eps)`` per row and ``q_x = round(x * (qmax / m))`` (BitNet's
    ``gamma = qmax / m``). The rescale multiplies the exact integer accumulator once by the
    per-row-and-channel factor ``(m / qmax) * s_w[c]``: the op order of TFLite's hybrid
    FULLY_CONNECTED kernel (measured bit-exact on LiteRT's builtin and reference kernels) and
    of the ONNX lowering, so PyTorch, ONNX Runtime and LiteRT produce the same float32 values.
    """
    codes, _gamma = quantize_dynamic_per_token(x, bits, eps)
    _, qmax = activation_qrange(bits)
    m = x.abs().amax(dim=-1, keepdim=True).clamp_min(eps)
    row_scale = m / torch.full_like(m, float(qmax))  # a true division (see quantize_dynamic_per_token)
    y = integer_matmul(codes, w_codes) * (row_scale * w_scale.reshape(-1))
    return y if bias is None else y + bias


def linear_static_int(
    x: torch.Tensor,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    bits: int,
) -> torch.Tensor:
    """Static-activation linear in integer form: ``y = ((q_x - zp) @ Wq^T) * (s_x * s_w) + bias``.

    The order of ONNX Runtime's ``MatMulIntegerToFloat`` (int32 accumulator, one multiply by
    the combined float32 scale, then the bias).
    """
    codes = quantize_static(x, scale, zero_point, bits) - zero_point
    combined = torch.tensor(scale, dtype=torch.float32) * w_scale.reshape(-1)
    y = integer_matmul(codes, w_codes) * combined
    return y if bias is None else y + bias
