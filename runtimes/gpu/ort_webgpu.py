"""ONNX Runtime's WebGPU execution provider (Dawn -> Vulkan): the ``ort-webgpu`` target.

``onnxruntime-webgpu`` installs the same ``onnxruntime`` module as the CPU package, so the
session lives in a worker process (:mod:`runtimes.gpu.ort_webgpu_worker`) whose ``PYTHONPATH``
starts with the site directory that :mod:`runtimes.gpu.ort_env` builds.

* No silent fallback: the session asks for ``WebGpuExecutionProvider`` only with
  ``session.disable_cpu_ep_fallback=1``; a graph with an op the EP has no kernel for
  (``QuantizeLinear``, ``MatMulInteger``...) fails to load and the error names those ops.
* Vulkan device: when neither ``VK_ICD_FILENAMES`` nor ``VK_DRIVER_FILES`` is set and no GPU
  device node exists, the SwiftShader ICD from :mod:`runtimes.gpu.vulkan` is used when built.
  :meth:`OrtWebGpuAdapter.info` reports the Vulkan device(s) the loader saw and whether the
  device is ``software`` or ``hardware``.
* Every request has a deadline (``timeout_s``); on a timeout or a crash the worker's process
  group is killed and :class:`RuntimeAdapterError` carries the tail of the worker's log.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from runtimes._feed import check_feed, worker_input_specs
from runtimes._host import cpu_model, host_arch
from runtimes._worker import WorkerProcess
from runtimes.gpu.ort_env import BUILD_COMMAND, find_site
from runtimes.gpu.vulkan import gpu_device_nodes, software_icd
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["OrtWebGpuAdapter", "vulkan_environment"]

_WORKER: Final = Path(__file__).with_name("ort_webgpu_worker.py")
_PROBE: Final = Path(__file__).with_name("vulkan_probe.py")
_DEVICE_RANK: Final = {"discrete-gpu": 0, "integrated-gpu": 1, "virtual-gpu": 2, "cpu": 3}
_ICD_VARS: Final = ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")


def vulkan_environment() -> tuple[dict[str, str], str]:
    """Environment additions for the Vulkan loader, and where the ICD choice came from.

    Returns ``({}, "configured")`` when the caller set an ICD, ``({}, "system")`` when a GPU
    device node exists, ``({"VK_ICD_FILENAMES": swiftshader}, "software")`` when the SwiftShader
    ICD is built, else ``({}, "none")``.
    """
    if any(os.environ.get(v) for v in _ICD_VARS):
        return {}, "configured"
    if gpu_device_nodes():
        return {}, "system"
    icd = software_icd()
    if icd is not None:
        return {"VK_ICD_FILENAMES": str(icd)}, "software"
    return {}, "none"


class OrtWebGpuAdapter:
    """Run an ``.onnx`` file on ONNX Runtime's WebGPU EP in a worker process.

    Args:
        timeout_s: deadline of each request (start, load, run), in seconds.
        session_config: extra ``SessionOptions.add_session_config_entry`` entries.
        cpu_shape_ops: accept ORT placing *shape arithmetic* on the CPU EP: int64 nodes of
            :data:`SHAPE_OPS` (a dynamic-length decoder's ``Shape``/``Range``/position
            compares, which ORT keeps on the CPU for every GPU EP). Any other op the WebGPU EP
            cannot take is still an error; the CPU nodes are listed in ``info()``.
    """

    name = "ort-webgpu"

    def __init__(
        self,
        timeout_s: float = 120,
        session_config: Mapping[str, str] | None = None,
        cpu_shape_ops: bool = False,
    ) -> None:
        self.timeout_s = float(timeout_s)
        self.session_config = dict(session_config or {})
        self.cpu_shape_ops = cpu_shape_ops
        self._worker: WorkerProcess | None = None
        self._loaded: dict[str, Any] | None = None
        self._info: dict[str, Any] = {}
        self._icd_source = "none"
        self._path: Path | None = None

    # ------------------------------------------------------------------ process
    def close(self) -> None:
        """Stop the worker and remove its directory."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _start(self) -> WorkerProcess:
        site = find_site()
        if site is None:
            raise RuntimeAdapterError(
                f"ort-webgpu: the onnxruntime-webgpu environment is missing; run {BUILD_COMMAND}"
            )
        extra, self._icd_source = vulkan_environment()
        if self._icd_source == "none":
            raise RuntimeAdapterError(
                "ort-webgpu: no Vulkan device: no GPU ICD configured and no software ICD built; "
                "run `make gpu-env` (python -m runtimes.gpu.vulkan build), or set VK_ICD_FILENAMES "
                "to a driver's json"
            )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
        env.update(extra)
        env["PYTHONPATH"] = str(site)  # the webgpu onnxruntime before the venv's CPU one
        worker = WorkerProcess(
            _WORKER,
            lambda script: [sys.executable, "-s", "-B", script],
            env,
            name=self.name,
            where=f"onnxruntime-webgpu from {site}",
            prefix="bitnet-ort-webgpu-",
            support=(_PROBE,),
            fix="rebuild the GPU environment with `make gpu-env` (software Vulkan + onnxruntime-webgpu)",
        )
        self._worker = worker
        devices = worker.start(self.name, self.timeout_s).get("vulkan_devices", [])
        if not any("name" in d for d in devices):
            worker.kill()
            raise worker.fail(
                self.name,
                f"the Vulkan loader shows no device ({devices}); run `make gpu-env` for the software "
                "driver, or set VK_ICD_FILENAMES to a GPU driver's json",
            )
        return worker

    def _request(self, req: Mapping[str, Any], doing: str) -> dict[str, Any]:
        worker = self._worker
        if worker is None or not worker.alive():  # first use, or killed by a timeout / crash
            self.close()
            worker = self._start()
        return worker.request(req, self.name, self.timeout_s, doing)

    # ------------------------------------------------------------------ protocol
    def load(self, path: Path) -> None:
        """Load ``path`` on the WebGPU EP (fails when any node would need the CPU EP)."""
        path = Path(path).resolve()
        self._loaded = None
        options = {"session_config": self.session_config, "cpu_shape_ops": self.cpu_shape_ops}
        req = {"op": "load", "model": str(path), "options": options}
        self._loaded = self._request(req, f"loading {path}")
        self._info = dict(self._loaded.get("info") or {})
        self._path = path

    def _require(self) -> dict[str, Any]:
        if self._loaded is None:
            raise RuntimeAdapterError("ort-webgpu: run() before load()")
        return self._loaded

    def input_specs(self) -> list[tuple[str, list[Any], str]]:
        """``(name, shape, type)`` of each model input (shape entries are ints or names)."""
        return [(i["name"], list(i["shape"]), i["type"]) for i in self._require()["inputs"]]

    def output_names(self) -> list[str]:
        """Model output names, in order."""
        return list(self._require()["outputs"])

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on the WebGPU EP; returns outputs by name."""
        feed = check_feed(self.name, worker_input_specs(self._require()["inputs"]), inputs)
        names = list(feed)
        if (self._worker is None or not self._worker.alive()) and self._path is not None:
            self.load(self._path)  # a dead worker (crash, timeout): reload the model first
        assert self._worker is not None
        in_path, out_path = self._worker.dir / "in.npz", self._worker.dir / "out.npz"
        arrays: dict[str, Any] = {f"a{i}": feed[n] for i, n in enumerate(names)}
        np.savez(in_path, **arrays)
        reply = self._request(
            {"op": "run", "names": names, "inputs": str(in_path), "outputs": str(out_path)}, "running"
        )
        self._info = dict(reply.get("info") or self._info)
        with np.load(out_path) as data:
            return {n: np.array(data[f"o{i}"]) for i, n in enumerate(reply["outputs"])}

    def info(self) -> RuntimeInfo:
        """What ran: ORT version, provider, the Vulkan device and whether it is software."""
        self._require()
        hello = self._worker.hello if self._worker is not None else {}
        # ORT does not say which adapter Dawn took; the EP asks for a high-performance one, so
        # the first device by type (discrete, integrated, virtual, then software) is named
        devices = sorted(
            (d for d in hello.get("vulkan_devices", []) if "name" in d),
            key=lambda d: _DEVICE_RANK.get(str(d.get("type")), len(_DEVICE_RANK)),
        )
        software = self._icd_source == "software" or (bool(devices) and devices[0].get("type") == "cpu")
        return RuntimeInfo(
            runtime=str(self._info.get("runtime", "onnxruntime-webgpu")),
            version=str(self._info.get("version", hello.get("onnxruntime", "?"))),
            provider=str(self._info.get("provider", "WebGpuExecutionProvider")),
            arch=host_arch(),
            cpu_model=cpu_model(),
            emulated=False,
            threads=None,
            details={
                **dict(self._info.get("details") or {}),
                "device": devices[0]["name"] if devices else "unknown",
                "device_kind": "software" if software else "hardware",
                "vulkan_devices": devices,
                "icd_source": self._icd_source,
                "vk_icd_filenames": hello.get("vk_icd_filenames"),
                "onnxruntime_file": hello.get("onnxruntime_file"),
            },
        )
