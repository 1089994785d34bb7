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
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Final

import numpy as np

from runtimes._host import cpu_model, host_arch
from runtimes.gpu.ort_env import BUILD_COMMAND, find_site
from runtimes.gpu.vulkan import gpu_device_nodes, software_icd
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["OrtWebGpuAdapter", "vulkan_environment"]

_WORKER: Final = Path(__file__).with_name("ort_webgpu_worker.py")
_LOG_TAIL: Final = 25
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
    """

    name = "ort-webgpu"

    def __init__(self, timeout_s: float = 120, session_config: Mapping[str, str] | None = None) -> None:
        self.timeout_s = float(timeout_s)
        self.session_config = dict(session_config or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._buf = b""
        self._hello: dict[str, Any] = {}
        self._loaded: dict[str, Any] | None = None
        self._info: dict[str, Any] = {}
        self._icd_source = "none"
        self._path: Path | None = None

    # ------------------------------------------------------------------ process
    def _log_tail(self) -> str:
        if self._dir is None:
            return "(no log)"
        try:
            lines = (self._dir / "worker.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL:]) if lines else "(log is empty)"

    def _fail(self, what: str) -> RuntimeAdapterError:
        return RuntimeAdapterError(f"ort-webgpu: {what}; worker log tail:\n{self._log_tail()}")

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._proc = None
        self._buf = b""

    def close(self) -> None:
        """Stop the worker and remove its directory."""
        proc = self._proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                proc.stdin.write(b'{"op": "exit"}\n')
                proc.stdin.flush()
                proc.wait(timeout=5)
        self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _start(self) -> None:
        site = find_site()
        if site is None:
            raise RuntimeAdapterError(
                f"ort-webgpu: the onnxruntime-webgpu environment is missing; run {BUILD_COMMAND}"
            )
        extra, self._icd_source = vulkan_environment()
        if self._icd_source == "none":
            raise RuntimeAdapterError(
                "ort-webgpu: no Vulkan device: no GPU ICD configured and no software ICD built; "
                "run python -m runtimes.gpu.vulkan build (or set VK_ICD_FILENAMES)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="bitnet-ort-webgpu-"))
        log_path = self._dir / "worker.log"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
        env.update(extra)
        env["PYTHONPATH"] = str(site)  # the webgpu onnxruntime before the venv's CPU one
        env["BITNET_WORKER_LOG"] = str(log_path)
        env.setdefault("XDG_RUNTIME_DIR", str(self._dir))  # else the loader complains
        with log_path.open("wb") as log:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-s", "-B", str(_WORKER)],
                    cwd=self._dir,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,  # its own process group: killed as a whole
                )
            except OSError as exc:
                raise RuntimeAdapterError(f"ort-webgpu: cannot start {sys.executable}: {exc}") from exc
        self._hello = self._reply("starting")
        devices = self._hello.get("hello", {}).get("vulkan_devices", [])
        if not any("name" in d for d in devices):
            self._kill()
            raise self._fail(f"the Vulkan loader shows no device ({devices})")

    def _reply(self, doing: str) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        stdout: IO[bytes] = proc.stdout
        deadline = time.monotonic() + self.timeout_s
        sel = selectors.DefaultSelector()
        sel.register(stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self._kill()
                    raise self._fail(f"timed out after {self.timeout_s:g} s {doing}; the worker was killed")
                chunk = os.read(stdout.fileno(), 1 << 16)
                if not chunk:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=10)
                    rc = proc.returncode
                    self._kill()
                    raise self._fail(f"the worker exited ({rc}) while {doing}")
                self._buf += chunk
        finally:
            sel.close()
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            self._kill()
            raise self._fail(f"unreadable reply while {doing}: {line[:200]!r}") from exc
        if not reply.get("ok"):
            raise RuntimeAdapterError(f"ort-webgpu: {reply.get('error', 'unknown error')}")
        return dict(reply)

    def _request(self, req: Mapping[str, Any], doing: str) -> dict[str, Any]:
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(req) + "\n").encode())
            proc.stdin.flush()
        except OSError as exc:
            self._kill()
            raise self._fail(f"cannot send a request while {doing}: {exc}") from exc
        return self._reply(doing)

    # ------------------------------------------------------------------ protocol
    def load(self, path: Path) -> None:
        """Load ``path`` on the WebGPU EP (fails when any node would need the CPU EP)."""
        path = Path(path).resolve()
        self._loaded = None
        req = {"op": "load", "model": str(path), "options": {"session_config": self.session_config}}
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
        loaded = self._require()
        names = [i["name"] for i in loaded["inputs"]]
        if set(inputs) != set(names):
            raise RuntimeAdapterError(
                f"ort-webgpu: inputs {sorted(inputs)} do not match the model's inputs {names}"
            )
        for spec in loaded["inputs"]:
            arr = np.asarray(inputs[spec["name"]])
            if spec["dtype"] is not None and arr.dtype != np.dtype(spec["dtype"]):
                raise RuntimeAdapterError(
                    f"ort-webgpu: input {spec['name']!r} has dtype {arr.dtype}, "
                    f"the model expects {spec['type']}"
                )
        if (self._proc is None or self._proc.poll() is not None) and self._path is not None:
            self.load(self._path)  # a dead worker (crash, timeout): reload the model first
        assert self._dir is not None
        in_path, out_path = self._dir / "in.npz", self._dir / "out.npz"
        arrays: dict[str, Any] = {f"a{i}": np.asarray(inputs[n]) for i, n in enumerate(names)}
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
        hello = dict(self._hello.get("hello") or {})
        devices = [d for d in hello.get("vulkan_devices", []) if "name" in d]
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
