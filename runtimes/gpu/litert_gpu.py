"""LiteRT on the GPU: ``CompiledModel`` with the GPU accelerator only (WebGPU: Dawn -> Vulkan).

The wheel's GPU accelerator is ``libLiteRtWebGpuAccelerator.so``. A GPU-only request never falls
back to the CPU here: a model LiteRT cannot put entirely on the GPU (``is_fully_accelerated()``
False) is an error unless ``allow_partial``, and a missing Vulkan device fails model creation.
LiteRT prints the real reason, and the Vulkan adapter it selected, on stderr only (``Selected
adapter: SwiftShader Device (Subzero), ..., adapterType=CPU / Software``), so file descriptor 2
is captured around model creation and the first run; errors carry its tail.

Vulkan device choice: ``icd`` (a driver manifest json), else ``VK_ICD_FILENAMES`` as set, else the
system's drivers when a GPU device node exists, else SwiftShader from
``python -m runtimes.gpu.vulkan build`` when built. The ICD is fixed at the first GPU use in a
process (LiteRT/Dawn keep the first Vulkan instance: a later ``VK_ICD_FILENAMES`` is ignored), so
asking for another one afterwards is an error rather than a silent run on the first device.

Precision: ``litert-gpu-fp16`` asks for fp16, which Dawn can only give on a device with WebGPU
``shader-f16``; :meth:`LiteRtGpuAdapter.info` reports what ran (``precision``) next to what was
asked (``precision_requested``), from the device's Vulkan features
(:mod:`runtimes.gpu.vulkan_probe`). SwiftShader has none: its "fp16" runs are fp32 (tested).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.hardware_accelerator import HardwareAccelerator
from ai_edge_litert.options import GpuOptions, Options

from runtimes._host import cpu_model, host_arch
from runtimes.gpu.vulkan import ICD_ENV, has_hardware_gpu, have_loader, software_icd
from runtimes.gpu.vulkan_probe import vulkan_devices
from runtimes.litert_cpu import LiteRtCompiledModelAdapter, litert_version
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["LiteRtGpuAdapter", "parse_adapter"]

PROVIDER: Final = "gpu (webgpu/vulkan)"
_ADAPTER_RE: Final = re.compile(
    r"Selected adapter: (?P<name>.+?), arch=(?P<arch>[^,]*), vendor=(?P<vendor>[^,]*), "
    r"backend=(?P<backend>[^,]*), adapterType=(?P<type>.*?)\s*$",
    re.MULTILINE,
)
#: stderr lines worth quoting in an error (LiteRT's INFO chatter about plugins is not).
_REASON_RE: Final = re.compile(r"ERROR|^E\d{4}|error:|No adapters|Failed|not supported|unsupported", re.I)
_STDERR_TAIL: Final = 12


def parse_adapter(stderr: str) -> dict[str, str] | None:
    """The last ``Selected adapter`` line LiteRT printed: name, arch, vendor, backend, type."""
    matches = list(_ADAPTER_RE.finditer(stderr))
    if not matches:
        return None
    m = matches[-1]
    return {k: v.strip() for k, v in m.groupdict().items()}


def _device_kind(adapter: Mapping[str, str] | None) -> str:
    if adapter is None:
        return "unknown"
    text = f"{adapter['name']} {adapter['type']} {adapter['arch']}".lower()
    software = ("software", "swiftshader", "llvmpipe", "lavapipe")
    return "software" if any(s in text for s in software) else "hardware"


def _stderr_tail(text: str) -> str:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    picked = [ln for ln in lines if _REASON_RE.search(ln) and "compiler_plugin" not in ln] or lines
    return "\n".join(picked[-_STDERR_TAIL:])


@dataclass
class _Captured:
    text: str = ""


@contextmanager
def _capture_fd2() -> Iterator[_Captured]:
    """Redirect file descriptor 2 (C++ stderr) into a temp file; the text is set on exit."""
    cap = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            cap.text = tmp.read().decode(errors="replace")


@dataclass
class _ProcessVulkan:
    """The ICD this process's first GPU use saw (LiteRT keeps it for the process's lifetime)."""

    used: bool = False
    icd: str | None = None
    source: str = ""
    adapter: dict[str, str] | None = field(default=None)
    #: the Vulkan devices this ICD shows (:func:`runtimes.gpu.vulkan_probe.vulkan_devices`)
    devices: list[dict[str, Any]] = field(default_factory=list)


_PROCESS = _ProcessVulkan()


class LiteRtGpuAdapter(LiteRtCompiledModelAdapter):
    """Run a ``.tflite`` file with ``CompiledModel`` on LiteRT's GPU accelerator only.

    Args:
        enforce_f32: compute in fp32 (``litert-gpu``); False lets the GPU use fp16
            (``litert-gpu-fp16``).
        icd: Vulkan driver manifest (json) to use, e.g. SwiftShader's; must exist. None: see the
            module docstring.
        allow_partial: accept a model the GPU took only in part (the rest on CPU kernels; the
            provider then says so). Off by default: that is an error.
    """

    def __init__(
        self,
        enforce_f32: bool = True,
        icd: Path | None = None,
        allow_partial: bool = False,
        signature: str | None = None,
    ) -> None:
        super().__init__(threads=None, allow_partial=allow_partial, signature=signature)
        self.name = "litert-gpu" if enforce_f32 else "litert-gpu-fp16"
        self.enforce_f32 = enforce_f32
        self.icd = None if icd is None else Path(icd)
        self._stderr = ""
        self._first_run_done = False
        self._adapter: dict[str, str] | None = None
        self._icd_used: str | None = None
        self._icd_source = ""

    # ------------------------------------------------------------------ device selection
    def _choose_icd(self) -> tuple[str | None, str]:
        if self.icd is not None:
            if not self.icd.is_file():
                raise RuntimeAdapterError(
                    f"{self.name}: Vulkan ICD manifest {self.icd} does not exist; build SwiftShader "
                    "with `make gpu-env` (python -m runtimes.gpu.vulkan build) or pass an installed "
                    "driver's json"
                )
            return str(self.icd.resolve()), "icd argument"
        if os.environ.get(ICD_ENV):
            return os.environ[ICD_ENV], ICD_ENV
        if has_hardware_gpu():
            return None, "system drivers"
        sw = software_icd()
        if sw is not None:
            return str(sw), "software ICD (SwiftShader)"
        return None, "system drivers (no GPU device node, no software ICD built)"

    def _select_device(self) -> None:
        """Pin the process's Vulkan ICD at the first GPU use; refuse a different one later."""
        if not have_loader():
            raise RuntimeAdapterError(
                f"{self.name}: the Vulkan loader libvulkan.so.1 is missing "
                "(`apt-get install -y --no-install-recommends libvulkan1`)"
            )
        icd, source = self._choose_icd()
        if _PROCESS.used:
            if icd is not None and icd != _PROCESS.icd:
                raise RuntimeAdapterError(
                    f"{self.name}: this process already uses the GPU through "
                    f"{ICD_ENV}={_PROCESS.icd!r} ({_PROCESS.source}); LiteRT keeps the first Vulkan "
                    f"instance, so {icd!r} ({source}) would be ignored. Run it in a new process"
                )
            self._icd_used, self._icd_source = _PROCESS.icd, _PROCESS.source
            return
        if icd is not None:
            os.environ[ICD_ENV] = icd
        _PROCESS.used, _PROCESS.icd, _PROCESS.source = True, icd, source
        _PROCESS.devices = vulkan_devices()
        self._icd_used, self._icd_source = icd, source

    def _note_stderr(self, text: str) -> None:
        self._stderr += text
        adapter = parse_adapter(text)
        if adapter is not None:
            self._adapter = adapter
            _PROCESS.adapter = adapter
        elif self._adapter is None:
            self._adapter = _PROCESS.adapter

    def _fail(self, what: str, exc: BaseException | None = None) -> RuntimeAdapterError:
        reason = " ".join(str(exc).split()) if exc is not None else ""
        tail = _stderr_tail(self._stderr)
        icd = f"{ICD_ENV}={self._icd_used!r} ({self._icd_source})"
        msg = f"{self.name}: {what}" + (f": {reason}" if reason else "") + f" [{icd}]"
        if self._icd_used is None and not has_hardware_gpu():
            msg += (
                "\nFix: no GPU and no software Vulkan driver: run `make gpu-env` "
                "(python -m runtimes.gpu.vulkan build), or set VK_ICD_FILENAMES to a driver's json"
            )
        if tail:
            msg += f"\nLiteRT stderr:\n{tail}"
        return RuntimeAdapterError(msg)

    # ------------------------------------------------------------------ adapter protocol
    def load(self, path: Path) -> None:
        """Compile ``path`` for the GPU accelerator only and check that it took the whole graph.

        Raises:
            RuntimeAdapterError: missing or invalid file; no Vulkan loader or device (LiteRT's
                reason from stderr included); the GPU took only part of the graph (unless
                ``allow_partial``); a different ICD than this process's first GPU use.
        """
        self._model = None
        self._stderr, self._first_run_done, self._adapter = "", False, None
        path = Path(path)
        io = self._interpreter_io(path)
        self._select_device()
        options = Options(
            hardware_accelerators=HardwareAccelerator.GPU,
            gpu_options=GpuOptions(enforce_f32=self.enforce_f32),
        )
        self._path = path
        cap = _Captured()
        try:
            with _capture_fd2() as cap:
                model = CompiledModel.from_file(str(path), options=options)
                signatures = list(model.get_signature_list())
                fully = bool(model.is_fully_accelerated())
        except (ValueError, RuntimeError) as exc:
            self._note_stderr(cap.text)
            raise self._fail(f"cannot compile {path} for the GPU", exc) from exc
        self._note_stderr(cap.text)
        self._adopt(model, path, signatures, io, fully)

    def _verify(self, fully: bool) -> bool:
        """No silent fallback: a model not entirely on the GPU is an error unless allowed."""
        if not fully and not self.allow_partial:
            raise self._fail(
                f"the GPU accelerator did not take every op of {self._path} (is_fully_accelerated() "
                "is False: the rest would run on CPU kernels); pass allow_partial=True to accept that"
            )
        return fully

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once (the first run's stderr is captured too: kernels compile there).

        Raises:
            RuntimeAdapterError: wrong input names, dtypes or shapes; an input shape other than
                the compiled one (see below); a LiteRT/GPU failure.
        """
        self._require()
        if not self.allow_partial:
            # LiteRT's GPU accelerator compiles fixed shapes: after resize_input_tensor it reports
            # is_fully_accelerated() False (measured on every batch change), i.e. CPU kernels.
            for spec in self._inputs:
                want, arr = self._shapes.get(spec.name), inputs.get(spec.name)
                if want is not None and arr is not None and tuple(np.shape(arr)) != want:
                    raise RuntimeAdapterError(
                        f"{self.name}: input {spec.name!r} has shape {list(np.shape(arr))}, but "
                        f"{self._path} runs on the GPU with shape {list(want)}: LiteRT's GPU "
                        "accelerator runs the shapes it compiled (a resized graph would leave ops to "
                        f"CPU kernels). Run batches of {want[0] if want else 1}, or export with "
                        "example inputs of the batch you run"
                    )
        if self._first_run_done:
            return super().run(inputs)
        cap = _Captured()
        try:
            with _capture_fd2() as cap:
                result = super().run(inputs)
        except RuntimeAdapterError as exc:
            self._note_stderr(cap.text)
            tail = _stderr_tail(cap.text)
            raise RuntimeAdapterError(f"{exc}\nLiteRT stderr:\n{tail}" if tail else str(exc)) from exc
        self._note_stderr(cap.text)
        self._first_run_done = True
        return result

    def _shader_f16(self) -> bool | None:
        """Whether the selected Vulkan device offers WebGPU ``shader-f16`` (None: not found)."""
        name = (self._adapter or {}).get("name")
        for dev in _PROCESS.devices:
            if dev.get("name") == name:
                return bool(dev.get("shader_f16"))
        return None

    def _precision(self) -> str:
        """What the GPU computed in: fp16 needs the device's shader-f16 (else Dawn runs fp32)."""
        if self.enforce_f32:
            return "fp32"
        f16 = self._shader_f16()
        if f16 is None:
            return "fp16 (requested; the device's shader-f16 support is unknown)"
        return "fp16" if f16 else "fp32 (fp16 requested; the device has no shader-f16)"

    def info(self) -> RuntimeInfo:
        """What ran: LiteRT GPU accelerator, precision, the Vulkan adapter LiteRT selected."""
        self._require()
        adapter = self._adapter or {}
        return RuntimeInfo(
            runtime="litert",
            version=litert_version(),
            provider=PROVIDER if self._fully else f"{PROVIDER}+cpu",
            arch=host_arch(),
            cpu_model=cpu_model(),
            emulated=False,
            threads=None,
            details={
                "api": "CompiledModel",
                "accelerator": "GPU",
                "precision": self._precision(),
                "precision_requested": "fp32" if self.enforce_f32 else "fp16",
                "shader_f16": self._shader_f16(),
                "device": adapter.get("name", "unknown"),
                "device_kind": _device_kind(self._adapter),
                "adapter_type": adapter.get("type", "unknown"),
                "vendor": adapter.get("vendor", "unknown"),
                "backend": adapter.get("backend", "unknown"),
                "vk_icd_filenames": self._icd_used,
                "icd_source": self._icd_source,
                "fully_accelerated": self._fully,
                "signature": self._key,
            },
        )
