"""One check of a run's inputs against the model's, shared by every adapter.

A wrong name, dtype or shape is the caller's error, reported before the runtime sees it (LiteRT's
``TensorBuffer.write`` takes short arrays and other dtypes without complaint; ORT's messages do
not name the model's expectation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtimes.protocol import RuntimeAdapterError

__all__ = ["InputSpec", "check_feed", "worker_input_specs"]


@dataclass(frozen=True)
class InputSpec:
    """One model input: ``shape`` entries that are ints are fixed, any other entry (a name) is
    free; ``dtype`` None is not checked; ``type_name`` is the runtime's name for the type."""

    name: str
    shape: Sequence[Any]
    dtype: np.dtype[Any] | None
    type_name: str


def worker_input_specs(inputs: Sequence[Mapping[str, Any]]) -> list[InputSpec]:
    """The input specs a worker replied (``name``, ``shape``, ``dtype`` or None, ``type``)."""
    return [
        InputSpec(
            str(i["name"]), list(i["shape"]), np.dtype(i["dtype"]) if i.get("dtype") else None, str(i["type"])
        )
        for i in inputs
    ]


def check_feed(
    target: str, specs: Sequence[InputSpec], inputs: Mapping[str, np.ndarray], free: str = "free"
) -> dict[str, np.ndarray]:
    """The inputs as contiguous arrays, in the model's input order.

    Args:
        target: the adapter's name, for messages.
        specs: the model's inputs.
        inputs: the caller's arrays by name.
        free: how messages call the named dimensions (``free``, ``resizable``).

    Raises:
        RuntimeAdapterError: other input names, a dtype or a fixed dimension that differs.
    """
    names = [s.name for s in specs]
    if set(inputs) != set(names):
        raise RuntimeAdapterError(
            f"{target}: inputs {sorted(inputs)} do not match the model's inputs {names}"
        )
    feed = {}
    for s in specs:
        arr = np.asarray(inputs[s.name])
        if s.dtype is not None and arr.dtype != s.dtype:
            raise RuntimeAdapterError(
                f"{target}: input {s.name!r} has dtype {arr.dtype}, the model expects {s.type_name}"
            )
        fixed = [(i, d) for i, d in enumerate(s.shape) if isinstance(d, int) and d >= 0]
        if arr.ndim != len(s.shape) or any(arr.shape[i] != d for i, d in fixed):
            raise RuntimeAdapterError(
                f"{target}: input {s.name!r} has shape {list(arr.shape)}, the model expects "
                f"{list(s.shape)} (names are {free} dimensions)"
            )
        feed[s.name] = np.ascontiguousarray(arr)
    return feed
