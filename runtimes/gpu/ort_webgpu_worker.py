"""Worker for the ``ort-webgpu`` target: ONNX Runtime's WebGPU EP in its own process.

Runs with the host python and ``PYTHONPATH`` = the ``onnxruntime-webgpu`` site directory
(:mod:`runtimes.gpu.ort_env`) first, so ``import onnxruntime`` is the WebGPU build. It imports
neither ``bitnet_export`` nor ``runtimes`` (standard library, numpy, onnxruntime only).

Protocol: one JSON request per stdin line, one JSON reply per line on the original stdout
(``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``); the first line is a hello. Requests:
``load`` (``model``), ``run`` (``names``, ``inputs`` .npz, ``outputs`` .npz), ``exit``. Native
logs go to stderr, which the host points at a log file named in ``BITNET_WORKER_LOG``; the
worker reads back ORT's placement messages from it to name the ops the WebGPU EP has no kernel for.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import traceback
from typing import Any

import numpy as np

PROVIDER = "WebGpuExecutionProvider"
_NO_KERNEL = re.compile(r"webgpu kernel not found in registries for Op type: (\S+) node name: (\S*)")
#: Integer ops of bitnet_export's default ONNX lowering that the WebGPU EP cannot run.
_INTEGER_OPS = frozenset({"QuantizeLinear", "MatMulInteger", "DequantizeLinear", "Max", "Round"})
_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}
_VK_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}


class RequestError(Exception):
    """A request that cannot be served; the message goes back to the host."""


def vulkan_devices() -> list[dict[str, Any]]:
    """The Vulkan physical devices the loader shows with this environment (best effort).

    Dawn picks among these; ORT does not report which adapter it took.
    """
    try:
        vk = ctypes.CDLL("libvulkan.so.1")
    except OSError as exc:
        return [{"error": f"no Vulkan loader: {exc}"}]

    class CreateInfo(ctypes.Structure):
        _fields_ = [
            ("sType", ctypes.c_int32),
            ("pNext", ctypes.c_void_p),
            ("flags", ctypes.c_uint32),
            ("pApplicationInfo", ctypes.c_void_p),
            ("enabledLayerCount", ctypes.c_uint32),
            ("ppEnabledLayerNames", ctypes.c_void_p),
            ("enabledExtensionCount", ctypes.c_uint32),
            ("ppEnabledExtensionNames", ctypes.c_void_p),
        ]

    info = CreateInfo(sType=1)  # VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
    instance = ctypes.c_void_p()
    rc = vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance))
    if rc != 0:
        return [{"error": f"vkCreateInstance returned {rc}"}]
    try:
        count = ctypes.c_uint32(0)
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        devices = (ctypes.c_void_p * count.value)()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), devices)
        out = []
        for dev in devices[: count.value]:
            buf = ctypes.create_string_buffer(8192)  # VkPhysicalDeviceProperties is ~824 bytes
            vk.vkGetPhysicalDeviceProperties(ctypes.c_void_p(dev), buf)
            api, drv, vendor, device, kind = np.frombuffer(buf.raw[:20], dtype=np.uint32).tolist()
            name = buf.raw[20:276].split(b"\0", 1)[0].decode(errors="replace")
            out.append(
                {
                    "name": name,
                    "type": _VK_TYPES.get(kind, str(kind)),
                    "vendor_id": f"0x{vendor:04x}",
                    "device_id": f"0x{device:04x}",
                    "api_version": f"{api >> 22}.{(api >> 12) & 0x3FF}.{api & 0xFFF}",
                    "driver_version": drv,
                }
            )
        return out
    finally:
        vk.vkDestroyInstance(instance, None)


def _log_size() -> int:
    path = os.environ.get("BITNET_WORKER_LOG")
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _log_since(offset: int) -> str:
    path = os.environ.get("BITNET_WORKER_LOG")
    if not path:
        return ""
    sys.stderr.flush()
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class Model:
    """An InferenceSession on the WebGPU EP only, CPU fallback disabled, providers checked."""

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.ort = ort
        so = ort.SessionOptions()
        so.log_severity_level = 1  # INFO: ORT names each op the WebGPU EP has no kernel for
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        for key, value in dict(options.get("session_config") or {}).items():
            so.add_session_config_entry(str(key), str(value))
        start = _log_size()
        try:
            self.session = ort.InferenceSession(path, so, providers=[PROVIDER])
        except Exception as exc:
            msg = " ".join(str(exc).split())
            found = _NO_KERNEL.findall(_log_since(start))
            missing = sorted({f"{op} ({node})" for op, node in found})
            if missing:
                msg += f"; the WebGPU EP has no kernel for: {', '.join(missing)}"
            if any(op in _INTEGER_OPS for op, _ in found):
                msg += (
                    ". The graph uses integer ops: export it for this EP with kernels='float' "
                    "(bitnet-export export --format onnx --kernels float)"
                )
            raise RequestError(f"cannot load {path} on {PROVIDER}: {msg}") from exc
        providers = self.session.get_providers()
        # ORT always appends the CPU EP; with fallback disabled no node may be assigned to it.
        if not providers or providers[0] != PROVIDER:
            raise RequestError(f"asked for {PROVIDER} only but ORT assigned {providers}")
        self.providers = providers

    def inputs(self) -> list[dict[str, Any]]:
        return [
            {"name": i.name, "shape": list(i.shape), "type": i.type, "dtype": _ORT_TYPES.get(i.type)}
            for i in self.session.get_inputs()
        ]

    def outputs(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ro = self.ort.RunOptions()
        ro.log_severity_level = 3  # INFO would log every WebGPU program dispatched
        outs = self.session.run(None, feed, ro)
        return dict(zip(self.outputs(), (np.asarray(o) for o in outs), strict=True))

    def info(self) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime-webgpu",
            "version": self.ort.__version__,
            "provider": PROVIDER,
            "details": {
                "session_providers": self.providers,
                "provider_options": self.session.get_provider_options(),
                "cpu_ep_fallback": "disabled",
            },
        }


def hello() -> dict[str, Any]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    facts = {
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "available_providers": available,
        "numpy": np.__version__,
        "vk_icd_filenames": os.environ.get("VK_ICD_FILENAMES"),
        "vulkan_devices": vulkan_devices(),
    }
    if PROVIDER not in available:
        raise RequestError(f"this onnxruntime ({ort.__file__}) has no {PROVIDER}: {available}")
    return facts


def main() -> int:
    """Serve requests from stdin until EOF or ``exit``."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # native code printing to stdout lands in the log, not in the replies
    sys.stdout = sys.stderr
    replies = os.fdopen(reply_fd, "w", buffering=1)

    def send(obj: dict[str, Any]) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    try:
        send({"ok": True, "hello": hello()})
    except Exception as exc:
        send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    model: Model | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "exit":
                send({"ok": True})
                return 0
            if op == "load":
                path = str(req["model"])
                if not os.path.isfile(path):
                    raise RequestError(f"model file {path} does not exist")
                model = Model(path, dict(req.get("options") or {}))
                send({"ok": True, "inputs": model.inputs(), "outputs": model.outputs(), "info": model.info()})
            elif op == "run":
                if model is None:
                    raise RequestError("run before load")
                names = [str(n) for n in req["names"]]
                with np.load(str(req["inputs"])) as data:
                    feed = {n: data[f"a{i}"] for i, n in enumerate(names)}
                try:
                    outs = model.run(feed)
                except Exception as exc:
                    raise RequestError(f"run failed: {' '.join(str(exc).split())}") from exc
                arrays: dict[str, Any] = {f"o{i}": a for i, a in enumerate(outs.values())}
                np.savez(str(req["outputs"]), **arrays)
                send({"ok": True, "outputs": list(outs), "info": model.info()})
            else:
                raise RequestError(f"unknown op {op!r}")
        except RequestError as exc:
            send({"ok": False, "error": str(exc)})
        except Exception as exc:  # a worker bug: report it with its traceback, keep serving
            traceback.print_exc()
            send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
