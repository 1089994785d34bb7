"""Range observers for static activation quantization.

An observer watches float tensors during calibration and keeps a running ``[min, max]``.
Its state lives in buffers, so it is part of ``state_dict()`` and reloads bit-identically.
"""

from __future__ import annotations

import torch
from torch import nn

from bitnet_export.errors import QuantConfigError
from bitnet_export.quant.params import OBSERVERS, ObserverKind

__all__ = ["RangeObserver"]


class RangeObserver(nn.Module):
    """Per-tensor range observer.

    ``minmax``: the running minimum and maximum of everything observed.
    ``moving_average``: the first batch sets the range, every later batch moves it by
    ``momentum``: ``min <- min + momentum * (batch_min - min)`` (same for max).

    Args:
        kind: ``"minmax"`` or ``"moving_average"``.
        momentum: update factor of the moving average, in ``(0, 1]``.
    """

    min_val: torch.Tensor
    max_val: torch.Tensor
    batches: torch.Tensor

    def __init__(self, kind: ObserverKind = "minmax", momentum: float = 0.1) -> None:
        super().__init__()
        self.kind: ObserverKind = kind
        self.momentum = momentum
        self.configure(kind, momentum)
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("batches", torch.tensor(0, dtype=torch.int64))

    def configure(self, kind: str, momentum: float) -> None:
        """Change the observer kind or momentum (the observed range is kept)."""
        if kind not in OBSERVERS:
            raise QuantConfigError(
                f"observer={kind!r} is not supported; choose one of {', '.join(OBSERVERS)}"
            )
        if not 0.0 < float(momentum) <= 1.0:
            raise QuantConfigError(f"observer_momentum={momentum!r} must be in (0, 1]")
        self.kind = kind  # type: ignore[assignment]
        self.momentum = float(momentum)

    @property
    def has_data(self) -> bool:
        """True once at least one batch was observed."""
        return int(self.batches) > 0

    def reset(self) -> None:
        """Forget everything observed."""
        self.min_val.zero_()
        self.max_val.zero_()
        self.batches.zero_()

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the range with one batch (NaN/Inf in ``x`` are rejected by the caller)."""
        lo = x.detach().amin().to(torch.float32)
        hi = x.detach().amax().to(torch.float32)
        if not self.has_data:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
        elif self.kind == "minmax":
            self.min_val.copy_(torch.minimum(self.min_val, lo))
            self.max_val.copy_(torch.maximum(self.max_val, hi))
        else:
            self.min_val.add_(self.momentum * (lo - self.min_val))
            self.max_val.add_(self.momentum * (hi - self.max_val))
        self.batches.add_(1)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, momentum={self.momentum}"
