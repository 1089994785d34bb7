"""Per-output error metrics between a reference array and a runtime's array.

Everything is computed in float64, whatever the dtypes of the inputs. A comparison that
cannot say anything about parity (empty arrays, shapes that differ, NaN/Inf values, a
reference that is all zeros or constant) is not an error: :func:`compare` returns metrics
whose ``degenerate`` field says why, and :class:`~bitnet_export.parity.report.Tolerance`
always counts a degenerate comparison as a violation.

Errors in LSBs are measured against the *output* quantization step ``scale``: a scalar
(per tensor) or a 1-D array with one step per channel of the last axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitnet_export.errors import QuantConfigError

__all__ = ["OutputMetrics", "compare", "json_float"]

#: ``|got - ref| / scale`` at or above this counts in ``OutputMetrics.lsb_count``.
HALF_LSB = 0.5


def json_float(value: float) -> float | str:
    """Make a float JSON-safe: ``inf``/``-inf``/``nan`` become the strings ``"inf"``/``"-inf"``/``"nan"``.

    Args:
        value: any float.

    Returns:
        The float itself when finite, otherwise its string spelling.
    """
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


@dataclass(frozen=True)
class OutputMetrics:
    """How far one runtime output is from the reference.

    Attributes:
        name: output name.
        shape: shape of the reference output.
        max_abs: ``max |got - ref|``.
        max_rel: ``max_abs / max |ref|``, relative to the reference's range; ``0.0`` when
            ``max_abs`` is 0, ``inf`` when ``max |ref|`` is 0 and ``max_abs`` is not.
        mean_abs: ``mean |got - ref|``.
        lsb: ``max |got - ref| / scale`` over elements, in output quantization steps; None when
            no scale was given.
        lsb_count: number of elements with ``|got - ref| / scale >= 0.5``, i.e. off by at least
            half a step (those that can land on another quantized value); None when no scale.
        cosine: cosine similarity of the flattened arrays; NaN when either has zero norm
            (undefined, and NaN never satisfies a tolerance).
        snr_db: ``10 * log10(sum ref^2 / sum (got - ref)^2)``; ``inf`` when identical.
        top1_agreement: fraction of rows (all axes but the last) whose argmax over the last
            axis agrees; None when the output is 0-d or the last axis has size 1.
        degenerate: why the comparison is meaningless, or None. Several reasons are joined
            with ``"; "``.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    lsb: float | None
    lsb_count: int | None
    cosine: float
    snr_db: float
    top1_agreement: float | None
    degenerate: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: non-finite floats are the strings ``"inf"``, ``"-inf"``, ``"nan"``.

        Returns:
            A dict of plain Python values; ``shape`` is a list.
        """
        return {
            "name": self.name,
            "shape": list(self.shape),
            "max_abs": json_float(self.max_abs),
            "max_rel": json_float(self.max_rel),
            "mean_abs": json_float(self.mean_abs),
            "lsb": None if self.lsb is None else json_float(self.lsb),
            "lsb_count": self.lsb_count,
            "cosine": json_float(self.cosine),
            "snr_db": json_float(self.snr_db),
            "top1_agreement": None if self.top1_agreement is None else json_float(self.top1_agreement),
            "degenerate": self.degenerate,
        }


def _scale_array(name: str, scale: float | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Validate ``scale`` and return it as float64, broadcastable to ``shape`` on the last axis."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size != 1:
        channels = shape[-1] if shape else None
        if s.ndim != 1 or s.shape[0] != channels:
            raise QuantConfigError(
                f"parity compare of output {name!r}: scale of shape {s.shape} does not fit the output "
                f"shape {shape}; give a scalar or a 1-D array with one step per channel of the last "
                f"axis ({channels if channels is not None else 'none: the output is 0-d'})"
            )
    else:
        s = s.reshape(())
    if not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise QuantConfigError(
            f"parity compare of output {name!r}: every output quantization step must be finite and "
            f"> 0, got {s.tolist()}"
        )
    return s


def _nan_metrics(name: str, shape: tuple[int, ...], has_scale: bool, reason: str) -> OutputMetrics:
    nan = float("nan")
    return OutputMetrics(
        name=name,
        shape=shape,
        max_abs=nan,
        max_rel=nan,
        mean_abs=nan,
        lsb=nan if has_scale else None,
        lsb_count=None,
        cosine=nan,
        snr_db=nan,
        top1_agreement=None,
        degenerate=reason,
    )


def _degenerate_reasons(ref: np.ndarray, got: np.ndarray) -> list[str]:
    reasons = []
    bad_got = int(np.count_nonzero(~np.isfinite(got)))
    if bad_got:
        reasons.append(f"got has {bad_got} NaN/Inf values")
    bad_ref = int(np.count_nonzero(~np.isfinite(ref)))
    if bad_ref:
        reasons.append(f"reference has {bad_ref} NaN/Inf values")
    elif not np.any(ref):
        reasons.append("reference is all zeros")
    elif ref.size > 1 and np.all(ref == ref.flat[0]):
        reasons.append(f"reference is constant ({float(ref.flat[0])!r} everywhere)")
    return reasons


def compare(
    name: str, ref: np.ndarray, got: np.ndarray, scale: float | np.ndarray | None = None
) -> OutputMetrics:
    """Measure how far ``got`` is from ``ref``.

    Never raises on the arrays themselves: a shape mismatch, an empty output, NaN/Inf values or
    an all-zero / constant reference give metrics with ``degenerate`` set (and NaN numbers for
    a shape mismatch or an empty output). A single-element reference is not "constant".

    Args:
        name: output name, carried into the metrics.
        ref: reference output.
        got: the runtime's output.
        scale: output quantization step, a scalar or a 1-D array with one step per channel of
            the last axis; None when the output is not quantized (then ``lsb`` and
            ``lsb_count`` are None).

    Returns:
        The metrics of this output.

    Raises:
        QuantConfigError: when ``scale`` is not positive and finite, or its shape fits neither a
            scalar nor the last axis of ``ref``.
    """
    r = np.asarray(ref, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64)
    shape = tuple(int(d) for d in r.shape)
    s = None if scale is None else _scale_array(name, scale, shape)

    if r.shape != g.shape:
        reason = f"shape mismatch: ref {shape} vs got {tuple(int(d) for d in g.shape)}"
        return _nan_metrics(name, shape, s is not None, reason)
    if r.size == 0:
        return _nan_metrics(name, shape, s is not None, f"empty output of shape {shape}")

    reasons = _degenerate_reasons(r, g)
    with np.errstate(all="ignore"):  # NaN/Inf in got are reported as degenerate, not warned about
        diff = np.abs(g - r)
        max_abs = float(np.max(diff))
        ref_max = float(np.max(np.abs(r)))
        if max_abs == 0.0:
            max_rel = 0.0
        elif ref_max == 0.0:
            max_rel = math.inf
        else:
            max_rel = max_abs / ref_max
        mean_abs = float(np.mean(diff))

        lsb: float | None = None
        lsb_count: int | None = None
        if s is not None:
            steps = diff / s  # s is () or (C,): broadcasts on the last axis
            lsb = float(np.max(steps))
            lsb_count = int(np.count_nonzero(steps >= HALF_LSB))

        rf, gf = r.ravel(), g.ravel()
        norms = float(np.linalg.norm(rf)) * float(np.linalg.norm(gf))
        cosine = float(np.dot(rf, gf)) / norms if norms > 0.0 else math.nan

        signal = float(np.sum(r * r))
        noise = float(np.sum(diff * diff))
        if noise == 0.0:
            snr_db = math.inf
        elif signal == 0.0:
            snr_db = -math.inf
        else:
            snr_db = 10.0 * math.log10(signal / noise)

    top1: float | None = None
    if r.ndim >= 1 and r.shape[-1] > 1:
        rows_r = r.reshape(-1, r.shape[-1])
        rows_g = g.reshape(-1, g.shape[-1])
        top1 = float(np.mean(np.argmax(rows_r, axis=-1) == np.argmax(rows_g, axis=-1)))

    return OutputMetrics(
        name=name,
        shape=shape,
        max_abs=max_abs,
        max_rel=max_rel,
        mean_abs=mean_abs,
        lsb=lsb,
        lsb_count=lsb_count,
        cosine=cosine,
        snr_db=snr_db,
        top1_agreement=top1,
        degenerate="; ".join(reasons) or None,
    )
