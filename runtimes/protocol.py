"""The protocol every runtime adapter implements, and the record of what ran."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["RuntimeAdapter", "RuntimeAdapterError", "RuntimeInfo"]


class RuntimeAdapterError(RuntimeError):
    """A runtime could not load or run a model; the message names the target and the cause."""


@dataclass(frozen=True)
class RuntimeInfo:
    """What actually executed a model: never what was merely requested.

    Attributes:
        runtime: runtime name, e.g. ``"onnxruntime"``.
        version: the runtime's version string.
        provider: execution provider / delegate / kernel set that ran the graph.
        arch: CPU architecture the runtime ran on (``x86_64``, ``aarch64``).
        cpu_model: CPU model name (the emulated model when emulated).
        emulated: True when run under an emulator (qemu).
        threads: intra-op threads used.
        details: anything else worth recording (graph optimization level, device name...).
    """

    runtime: str
    version: str
    provider: str
    arch: str
    cpu_model: str
    emulated: bool = False
    threads: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["details"] = dict(self.details)
        return out


@runtime_checkable
class RuntimeAdapter(Protocol):
    """Load an exported file, run named inputs, return named outputs, say what ran."""

    name: str

    def load(self, path: Path) -> None:
        """Load the model file; raise with the runtime's reason when it cannot."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference with named inputs and return the named outputs."""

    def info(self) -> RuntimeInfo:
        """What executed the last load/run."""
