"""Integer numpy reference of TFLite's int8 FULLY_CONNECTED chain (test oracle).

TFLite int8 FC: ``acc = sum((q_x - zp_x) * q_w) + bias_q`` (int32 bias at scale
``s_x * s_w[c]``), then requantization with one rounding: ``q_out = clip(round_half_even(acc *
M) + zp_out)`` with ``M = float32(s_x * s_w[c] / s_out)``, the "single rounding" that LiteRT's
reference kernels and XNNPACK implement (FIELD_NOTES). Written from that contract, not from the
backend's code.
"""

from __future__ import annotations

import numpy as np


def quantize(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return np.clip(np.rint(x / np.float32(scale)) + zp, -128, 127).astype(np.int64)


def fc_int8(q: np.ndarray, p, out_scale: float, out_zp: int) -> np.ndarray:
    """One full-integer FC of BitNetLayer params ``p`` on int8 codes ``q`` (input quant of p)."""
    a = p.input
    s_w = np.broadcast_to(p.weight.scale, (p.out_features,)).astype(np.float32)
    bias_scale = (np.float32(a.scale) * s_w).astype(np.float32)
    acc = (q - a.zero_point) @ p.weight.values.astype(np.int64).T
    if p.bias is not None:
        acc = acc + np.rint(p.bias.astype(np.float64) / bias_scale).astype(np.int64)
    m = (np.float64(a.scale) * s_w.astype(np.float64) / np.float64(out_scale)).astype(np.float32)
    return np.clip(np.rint(acc.astype(np.float32) * m) + out_zp, -128, 127).astype(np.int64)
