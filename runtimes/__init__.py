"""Runtime adapters: one per target (ONNX Runtime CPU, LiteRT, emulated aarch64, WebGPU).

Every adapter implements :class:`runtimes.protocol.RuntimeAdapter` and reports what really ran
as a :class:`runtimes.protocol.RuntimeInfo`.
"""

from runtimes.protocol import RuntimeAdapter, RuntimeInfo

__all__ = ["RuntimeAdapter", "RuntimeInfo"]
