"""Worker for the ``ort-webgpu`` target: ONNX Runtime's WebGPU EP in its own process.

Runs with the host python and ``PYTHONPATH`` = the ``onnxruntime-webgpu`` site directory
(:mod:`runtimes.gpu.ort_env`) first, so ``import onnxruntime`` is the WebGPU build. It imports
neither ``bitnet_export`` nor ``runtimes`` (standard library, numpy, onnxruntime, and
``_worker_side`` and ``vulkan_probe``, copied beside it by the host).

Protocol: :mod:`runtimes._worker_side`'s. Requests: ``load`` (``model``: one model at a time),
``run`` (``names``, ``inputs`` .npz, ``outputs`` .npz), ``exit``. Native logs go to stderr, which
the host points at a log file named in ``BITNET_WORKER_LOG``; the worker reads back ORT's
placement messages from it to name the ops the WebGPU EP has no kernel for.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import numpy as np
from _worker_side import RequestError, ort_inputs, read_feed, serve, write_outputs
from vulkan_probe import vulkan_devices

PROVIDER = "WebGpuExecutionProvider"
_NO_KERNEL = re.compile(r"webgpu kernel not found in registries for Op type: (\S+) node name: (\S*)")
#: Integer ops of bitnet_export's default ONNX lowering that the WebGPU EP cannot run.
_INTEGER_OPS = frozenset({"QuantizeLinear", "MatMulInteger", "DequantizeLinear", "Max", "Round"})
#: Shape-arithmetic ops ORT leaves to the CPU EP (int64 tensors; WebGPU has no int64 kernels).
SHAPE_OPS = frozenset(
    {
        "Shape",
        "Range",
        "Concat",
        "Squeeze",
        "Unsqueeze",
        "Greater",
        "Less",
        "LessOrEqual",
        "GreaterOrEqual",
        "Equal",
        "And",
        "Or",
        "Not",
        "Cast",
        "Gather",
        "Slice",
        "Reshape",
        "Expand",
        "Tile",
        "Add",
        "Sub",
        "Mul",
    }
)


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
        self.cpu_nodes: list[str] = []
        try:
            self.session = ort.InferenceSession(path, so, providers=[PROVIDER])
        except Exception as exc:
            msg = " ".join(str(exc).split())
            found = _NO_KERNEL.findall(_log_since(start))
            if options.get("cpu_shape_ops") and found and all(op in SHAPE_OPS for op, _ in found):
                # only shape arithmetic needs the CPU EP: allowed, and recorded
                so2 = ort.SessionOptions()
                so2.log_severity_level = 3
                for key, value in dict(options.get("session_config") or {}).items():
                    so2.add_session_config_entry(str(key), str(value))
                self.session = ort.InferenceSession(path, so2, providers=[PROVIDER, "CPUExecutionProvider"])
                self.cpu_nodes = sorted({f"{op} ({node})" for op, node in found})
                self.providers = self.session.get_providers()
                return
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
        return ort_inputs(self.session)

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
                "cpu_ep_fallback": "shape ops only" if self.cpu_nodes else "disabled",
                "cpu_nodes": self.cpu_nodes,
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


class Server:
    """The loaded model (one at a time) and the request dispatch."""

    def __init__(self) -> None:
        self.model: Model | None = None

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "load":
            path = str(req["model"])
            if not os.path.isfile(path):
                raise RequestError(f"model file {path} does not exist")
            self.model = None
            self.model = Model(path, dict(req.get("options") or {}))
            return {"inputs": self.model.inputs(), "outputs": self.model.outputs(), "info": self.model.info()}
        if op == "run":
            if self.model is None:
                raise RequestError("run before load")
            try:
                outs = self.model.run(read_feed(req))
            except Exception as exc:
                raise RequestError(f"run failed: {' '.join(str(exc).split())}") from exc
            return {"outputs": write_outputs(req, outs), "info": self.model.info()}
        raise RequestError(f"unknown op {op!r}")


def main() -> int:
    """Serve requests from stdin until EOF or ``exit``."""
    os.environ.setdefault("XDG_RUNTIME_DIR", os.getcwd())  # the worker's own 0700 directory
    return serve(hello, Server().handle)


if __name__ == "__main__":
    sys.exit(main())
