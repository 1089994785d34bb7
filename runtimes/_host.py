"""Facts about the machine a runtime runs on (for RuntimeInfo)."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

__all__ = ["cpu_model", "host_arch"]


def host_arch() -> str:
    """CPU architecture as the OS reports it (``x86_64``, ``aarch64``)."""
    return platform.machine()


@cache
def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``model name`` or ``CPU part``), else platform's."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "CPU part") and value.strip():
            return value.strip()
    return platform.processor() or "unknown"
