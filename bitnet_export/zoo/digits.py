"""The default embedded example: an MLP on scikit-learn's bundled 8x8 digits data set.

The data ships inside scikit-learn (no download). Pixels (0..16) are scaled to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bitnet_export.layers.bitnet import BitNetLayer

__all__ = ["DigitsData", "DigitsMLP", "accuracy", "factory", "load_digits", "train"]

IN_FEATURES = 64
CLASSES = 10


@dataclass(frozen=True)
class DigitsData:
    """Train/test split of the digits data set as float32 tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> DigitsData:
    """Load the bundled digits data, stratified split with a fixed seed."""
    try:
        from sklearn.datasets import load_digits as _load
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the digits example needs scikit-learn: pip install 'bitnet-export[examples]'"
        ) from exc
    x, y = _load(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitsData(
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr).long(),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te).long(),
    )


class DigitsMLP(nn.Module):
    """64 -> hidden -> hidden -> 10 MLP with ReLU; ``bitnet=True`` uses BitNetLayers.

    Args:
        hidden: hidden width.
        bitnet: use BitNetLayers (QAT) instead of ``nn.Linear``.
        precision: weight precision of the BitNetLayers.
        **options: quantization options for the BitNetLayers.
    """

    def __init__(
        self,
        hidden: int = 128,
        bitnet: bool = False,
        precision: float | int | str = 1.58,
        **options: Any,
    ) -> None:
        super().__init__()

        def linear(i: int, o: int) -> nn.Module:
            if bitnet:
                return BitNetLayer(i, o, precision=precision, **options)
            return nn.Linear(i, o)

        self.fc1 = linear(IN_FEATURES, hidden)
        self.fc2 = linear(hidden, hidden)
        self.head = linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, 10]`` of a ``[batch, 64]`` input."""
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.head(x)


def train(
    model: nn.Module,
    data: DigitsData,
    epochs: int = 60,
    lr: float = 3e-3,
    seed: int = 0,
    batch_size: int = 64,
) -> nn.Module:
    """Train with Adam and cross-entropy, deterministic for a given seed."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    n = data.x_train.shape[0]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    model.eval()
    return float((model(x).argmax(dim=-1) == y).float().mean())


def factory(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A trained BitNet-ternary digits MLP and an example input batch (``module:factory`` spec)."""
    torch.manual_seed(seed)
    data = load_digits(seed=seed)
    model = train(DigitsMLP(bitnet=True), data, seed=seed)
    return model, (data.x_test[:8],)
