"""aarch64 CPU targets on an x86 host: the real aarch64 ONNX Runtime and LiteRT under qemu user mode.

* :mod:`runtimes.arm.env` builds the environment (arm64 root filesystem, aarch64 wheels, QEMU 10):
  ``python -m runtimes.arm.env build``.
* :mod:`runtimes.arm.worker` runs inside the emulated python (numpy, onnxruntime, ai_edge_litert
  and the standard library only).
* :mod:`runtimes.arm.adapter` is the host side: :class:`runtimes.arm.adapter.Arm64Adapter`, one
  target per emulated CPU model and runtime (``arm64:cortex-a53:ort``...).
"""

from typing import Final

__all__ = ["CPU_MODELS", "RUNTIMES", "target_name"]

#: The emulated cores registered as targets: no dotprod (a53), dotprod (a72 lacks it, a76/n1
#: have it), SVE + i8mm (v1), SVE2 + SME (max). FIELD_NOTES: cover a53, n1, v1 and max.
CPU_MODELS: Final = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1", "neoverse-v1", "max")
#: Runtimes the worker serves: ORT's CPU provider, or LiteRT's Interpreter with a kernel set.
RUNTIMES: Final = ("ort", "litert-builtin", "litert-xnnpack", "litert-reference")


def target_name(cpu: str, runtime: str) -> str:
    """``arm64:<cpu>:<runtime>``, the name in ``runtimes.ADAPTERS``."""
    return f"arm64:{cpu}:{runtime}"
