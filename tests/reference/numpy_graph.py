"""Integer numpy references of the exported BitLinear graphs (test oracle).

Built from the recorded LayerQuantParams and the documented op semantics, not from the
lowering code: int64 accumulation, then the float32 rescale ops.
"""

from __future__ import annotations

import numpy as np


def static_layer(x: np.ndarray, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (y float32, integer accumulator, accumulator LSB per channel)."""
    a = p.input
    q = np.clip(np.rint(x / np.float32(a.scale)) + a.zero_point, a.qmin, a.qmax).astype(np.int64)
    acc = (q - a.zero_point) @ p.weight.values.astype(np.int64).T
    lsb = (np.float32(a.scale) * np.broadcast_to(p.weight.scale, (p.out_features,))).astype(np.float32)
    y = acc.astype(np.float32) * lsb
    if p.bias is not None:
        y = y + p.bias
    return y.astype(np.float32), acc, lsb


def dynamic_layer(x: np.ndarray, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (y float32, integer accumulator, gamma per row)."""
    a = p.input
    m = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(a.eps)).astype(np.float32)
    gamma = (np.float32(a.qmax) / m).astype(np.float32)  # quantization: x * qmax / m
    q = np.clip(np.rint(x * gamma), a.qmin, a.qmax).astype(np.int64)
    acc = q @ p.weight.values.astype(np.int64).T
    factor = (m / np.float32(a.qmax)).astype(np.float32) * p.weight.scale.reshape(-1)
    y = (acc.astype(np.float32) * factor).astype(np.float32)
    if p.bias is not None:
        y = y + p.bias
    return y.astype(np.float32), acc, gamma
