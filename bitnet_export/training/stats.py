"""Per-layer statistics for monitoring quantization-aware training."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from bitnet_export.quant.functional import weight_qrange
from bitnet_export.training.convert import bitnet_layers, name_layers

__all__ = ["LayerStats", "format_statistics", "layer_statistics"]


@dataclass(frozen=True)
class LayerStats:
    """Weight-quantization health of one BitNetLayer.

    Attributes:
        module_path: where the layer is in the model.
        precision: weight precision.
        granularity: weight scale granularity.
        sparsity: fraction of weight codes equal to 0 (ternary: the "zero" state).
        clip_rate: fraction of weights whose code was clipped to the range
            (``round(W/s)`` outside ``qmin..qmax``); ``None`` for binary, which has no range.
        snr_db: ``10 log10(sum W^2 / sum (W - Wq*s)^2)``; ``inf`` when quantization is exact.
        scale_mean: mean weight scale.
    """

    module_path: str
    precision: float | int
    granularity: str
    sparsity: float
    clip_rate: float | None
    snr_db: float
    scale_mean: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@torch.no_grad()
def layer_statistics(model: nn.Module) -> list[LayerStats]:
    """Compute :class:`LayerStats` for every BitNetLayer of ``model``."""
    out = []
    for path, layer in bitnet_layers(name_layers(model)):
        w = layer.weight.detach().float()
        codes, scale = layer.quantize_weight()
        clip_rate: float | None = None
        if layer.precision != 1:
            unclipped = torch.round(w / scale)
            qmin, qmax = weight_qrange(layer.precision)
            clip_rate = float(((unclipped < qmin) | (unclipped > qmax)).float().mean())
        err = float(((w - codes * scale) ** 2).sum())
        sig = float((w**2).sum())
        snr = math.inf if err == 0.0 else 10.0 * math.log10(max(sig, 1e-30) / err)
        out.append(
            LayerStats(
                module_path=path,
                precision=layer.precision,
                granularity=layer.granularity,
                sparsity=float((codes == 0).float().mean()),
                clip_rate=clip_rate,
                snr_db=snr,
                scale_mean=float(scale.mean()),
            )
        )
    return out


def format_statistics(stats: list[LayerStats]) -> str:
    """A fixed-width table of :func:`layer_statistics` for the terminal."""
    header = f"{'layer':<24} {'prec':>5} {'gran':>11} {'sparsity':>8} {'clip':>7} {'SNR dB':>7}"
    rows = [header, "-" * len(header)]
    for s in stats:
        clip = "-" if s.clip_rate is None else f"{s.clip_rate:.4f}"
        rows.append(
            f"{s.module_path or '<root>':<24} {s.precision!s:>5} {s.granularity:>11} "
            f"{s.sparsity:>8.4f} {clip:>7} {s.snr_db:>7.2f}"
        )
    return "\n".join(rows)
