"""Runtime adapters: one per target (ONNX Runtime CPU, LiteRT, emulated aarch64, WebGPU).

Every adapter implements :class:`runtimes.protocol.RuntimeAdapter` and reports what really ran
as a :class:`runtimes.protocol.RuntimeInfo`. :func:`make_adapter` builds one by target name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtimes.protocol import RuntimeAdapter, RuntimeInfo

__all__ = ["ADAPTERS", "RuntimeAdapter", "RuntimeInfo", "make_adapter"]


def _ort_cpu(**kwargs: Any) -> RuntimeAdapter:
    from runtimes.ort_cpu import OrtCpuAdapter

    return OrtCpuAdapter(**kwargs)


#: Target name -> factory. Imports are lazy so a missing runtime only fails its own target.
ADAPTERS: dict[str, Callable[..., RuntimeAdapter]] = {"ort-cpu": _ort_cpu}


def make_adapter(target: str, **kwargs: Any) -> RuntimeAdapter:
    """Build the adapter for ``target``.

    Raises:
        ValueError: unknown target; the message lists the known ones.
    """
    if target not in ADAPTERS:
        raise ValueError(f"unknown runtime target {target!r}; known targets: {', '.join(ADAPTERS)}")
    return ADAPTERS[target](**kwargs)
