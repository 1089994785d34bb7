"""Gradual quantization: move every BitNetLayer's ``blend`` from 0 (float) to 1 (quantized)."""

from __future__ import annotations

import math
from typing import Literal

from torch import nn

from bitnet_export.errors import QuantConfigError
from bitnet_export.training.convert import bitnet_layers

__all__ = ["GradualQuantization"]


class GradualQuantization:
    """A blend schedule: ``warmup_steps`` in float, then a ramp of ``ramp_steps`` to fully quantized.

    Call :meth:`step` once per optimizer step; it sets ``blend`` on every BitNetLayer.

    Args:
        model: the model whose BitNetLayers are scheduled.
        warmup_steps: steps at ``blend = 0``.
        ramp_steps: steps of the ramp from 0 to 1 (0: jump to 1 after the warm-up).
        shape: ``"linear"`` or ``"cosine"`` (slow start and end).

    Raises:
        QuantConfigError: negative step counts or an unknown shape.
    """

    def __init__(
        self,
        model: nn.Module,
        warmup_steps: int = 0,
        ramp_steps: int = 1000,
        shape: Literal["linear", "cosine"] = "linear",
    ) -> None:
        if warmup_steps < 0 or ramp_steps < 0:
            raise QuantConfigError(
                f"GradualQuantization: warmup_steps={warmup_steps} and ramp_steps={ramp_steps} must be >= 0"
            )
        if shape not in ("linear", "cosine"):
            raise QuantConfigError(f"GradualQuantization: shape={shape!r}; choose 'linear' or 'cosine'")
        self.model = model
        self.warmup_steps = warmup_steps
        self.ramp_steps = ramp_steps
        self.shape = shape
        self.current_step = 0
        self.apply()

    def blend_at(self, step: int) -> float:
        """The blend factor at ``step`` (0 = float, 1 = quantized)."""
        t = step - self.warmup_steps
        if t < 0:
            return 0.0
        if self.ramp_steps == 0 or t >= self.ramp_steps:
            return 1.0
        frac = t / self.ramp_steps
        if self.shape == "cosine":
            return 0.5 - 0.5 * math.cos(math.pi * frac)
        return frac

    def apply(self) -> float:
        """Set the current step's blend on every layer and return it."""
        blend = self.blend_at(self.current_step)
        for _, layer in bitnet_layers(self.model):
            layer.configure_quantization(blend=blend)
        return blend

    def step(self) -> float:
        """Advance one step and apply it; returns the new blend."""
        self.current_step += 1
        return self.apply()

    def state_dict(self) -> dict[str, int]:
        """The schedule's position, for checkpoints."""
        return {"current_step": self.current_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the position saved by :meth:`state_dict` and apply it."""
        self.current_step = int(state["current_step"])
        self.apply()
