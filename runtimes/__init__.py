"""Runtime adapters: one per target (ONNX Runtime CPU, LiteRT, emulated aarch64, WebGPU).

Every adapter implements :class:`runtimes.protocol.RuntimeAdapter` and reports what really ran
as a :class:`runtimes.protocol.RuntimeInfo`. :func:`make_adapter` builds one by target name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtimes import arm as _arm  # names only: CPU models and runtimes, no imports
from runtimes.protocol import RuntimeAdapter, RuntimeInfo

__all__ = ["ADAPTERS", "RuntimeAdapter", "RuntimeInfo", "make_adapter"]


def _ort_cpu(**kwargs: Any) -> RuntimeAdapter:
    from runtimes.ort_cpu import OrtCpuAdapter

    return OrtCpuAdapter(**kwargs)


def _litert_interpreter(kernel: str) -> Callable[..., RuntimeAdapter]:
    def factory(**kwargs: Any) -> RuntimeAdapter:
        from runtimes.litert_cpu import LiteRtInterpreterAdapter

        return LiteRtInterpreterAdapter(kernel=kernel, **kwargs)

    return factory


def _litert_compiled_cpu(**kwargs: Any) -> RuntimeAdapter:
    from runtimes.litert_cpu import LiteRtCompiledModelAdapter

    return LiteRtCompiledModelAdapter(**kwargs)


def _litert_gpu(enforce_f32: bool) -> Callable[..., RuntimeAdapter]:
    def factory(**kwargs: Any) -> RuntimeAdapter:
        from runtimes.gpu.litert_gpu import LiteRtGpuAdapter

        return LiteRtGpuAdapter(enforce_f32=enforce_f32, **kwargs)

    return factory


def _ort_webgpu(**kwargs: Any) -> RuntimeAdapter:
    from runtimes.gpu.ort_webgpu import OrtWebGpuAdapter

    return OrtWebGpuAdapter(**kwargs)


def _arm64(cpu: str, runtime: str) -> Callable[..., RuntimeAdapter]:
    def factory(**kwargs: Any) -> RuntimeAdapter:
        from runtimes.arm.adapter import Arm64Adapter

        return Arm64Adapter(runtime, cpu, **kwargs)

    return factory


#: Target name -> factory. Imports are lazy so a missing runtime only fails its own target.
ADAPTERS: dict[str, Callable[..., RuntimeAdapter]] = {
    "ort-cpu": _ort_cpu,
    "litert-xnnpack": _litert_interpreter("xnnpack"),
    "litert-builtin": _litert_interpreter("builtin"),
    "litert-reference": _litert_interpreter("reference"),
    "litert-compiled-cpu": _litert_compiled_cpu,
    # ONNX Runtime's WebGPU EP in its own env (python -m runtimes.gpu.ort_env build).
    "ort-webgpu": _ort_webgpu,
    # LiteRT's GPU accelerator (WebGPU -> Vulkan); SwiftShader without a GPU (runtimes.gpu.vulkan).
    "litert-gpu": _litert_gpu(enforce_f32=True),
    "litert-gpu-fp16": _litert_gpu(enforce_f32=False),
    # The real aarch64 ORT / LiteRT builds under qemu user mode (python -m runtimes.arm.env build).
    **{_arm.target_name(cpu, rt): _arm64(cpu, rt) for cpu in _arm.CPU_MODELS for rt in _arm.RUNTIMES},
}


def make_adapter(target: str, **kwargs: Any) -> RuntimeAdapter:
    """Build the adapter for ``target``.

    Raises:
        ValueError: unknown target; the message lists the known ones.
    """
    if target not in ADAPTERS:
        raise ValueError(f"unknown runtime target {target!r}; known targets: {', '.join(ADAPTERS)}")
    return ADAPTERS[target](**kwargs)
