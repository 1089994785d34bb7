"""Independent numpy implementations of the published quantizer formulas (test oracle).

Written from the formulas in the issue / papers, not from bitnet_export's code. float32
throughout, round half to even (np.rint), like the implementation under test is required to.
"""

from __future__ import annotations

import numpy as np

EPS = np.float32(1e-5)


def ternary(w: np.ndarray, per_channel: bool = False, eps: np.float32 = EPS):
    """BitNet b1.58: s = mean|W| (>= eps), Wq = clip(round(W/s), -1, 1)."""
    a = np.abs(w)
    s = a.mean(axis=1, keepdims=True) if per_channel else np.array([[a.mean()]], np.float32)
    s = np.maximum(s, eps).astype(np.float32)
    q = np.clip(np.rint(w / s), -1, 1)
    return q.astype(np.int8), s


def binary(w: np.ndarray, per_channel: bool = False):
    """BitNet 2023: Wq = Sign(W - mean(W)) (Sign(0) = -1), beta = mean|W|."""
    alpha = w.mean(axis=1, keepdims=True) if per_channel else np.array([[w.mean()]], np.float32)
    q = np.where(w - alpha > 0, 1, -1).astype(np.int8)
    a = np.abs(w)
    beta = a.mean(axis=1, keepdims=True) if per_channel else np.array([[a.mean()]], np.float32)
    return q, beta.astype(np.float32)


def kbit(w: np.ndarray, bits: int, per_channel: bool = True, eps: np.float32 = EPS):
    """Symmetric absmax: qmax = 2^(k-1)-1, s = max|W| / qmax, Wq = clip(round(W/s), -qmax, qmax)."""
    qmax = 2 ** (bits - 1) - 1
    m = np.abs(w).max(axis=1, keepdims=True) if per_channel else np.array([[np.abs(w).max()]])
    s = (np.maximum(m.astype(np.float32), eps) / np.float32(qmax)).astype(np.float32)
    q = np.clip(np.rint(w / s), -qmax, qmax)
    return q.astype(np.int8), s


def per_token(x: np.ndarray, bits: int = 8, eps: np.float32 = EPS):
    """BitNet activations: gamma = Qp / max|x| per row, q = clip(round(x*gamma), -Qp-1, Qp)."""
    qp = 2 ** (bits - 1) - 1
    m = np.maximum(np.abs(x).max(axis=-1, keepdims=True), eps).astype(np.float32)
    gamma = (np.float32(qp) / m).astype(np.float32)
    q = np.clip(np.rint(x * gamma), -qp - 1, qp)
    return q.astype(np.int32), gamma


def static_params(lo: float, hi: float, bits: int = 8, symmetric: bool = False, eps: np.float32 = EPS):
    """Scale/zero point of a per-tensor range (TFLite-style asymmetric or symmetric int8)."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if symmetric:
        return np.float32(max(max(abs(lo32), abs(hi32)), eps) / np.float32(qmax)), 0
    lo32, hi32 = min(lo32, np.float32(0)), max(hi32, np.float32(0))
    scale = np.float32(max(np.float32(hi32 - lo32), eps) / np.float32(qmax - qmin))
    zp = int(np.clip(qmin - np.rint(lo32 / scale), qmin, qmax))
    return scale, zp


def static_quantize(x: np.ndarray, scale: np.float32, zp: int, bits: int = 8) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round(x / scale) + zp)."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return np.clip(np.rint(x / np.float32(scale)) + zp, qmin, qmax).astype(np.int32)


def minmax_observer(batches):
    lo, hi = np.inf, -np.inf
    for b in batches:
        lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
    return lo, hi


def moving_average_observer(batches, momentum: float = 0.1):
    lo = hi = None
    for b in batches:
        bl, bh = np.float32(b.min()), np.float32(b.max())
        if lo is None:
            lo, hi = bl, bh
        else:
            lo = np.float32(lo + np.float32(momentum) * (bl - lo))
            hi = np.float32(hi + np.float32(momentum) * (bh - hi))
    return float(lo), float(hi)
