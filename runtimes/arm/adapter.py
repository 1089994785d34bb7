"""Host side of the aarch64 targets: the real aarch64 ONNX Runtime / LiteRT under qemu user mode.

:class:`Arm64Adapter` (``arm64:<cpu>:<runtime>``) sends requests to :mod:`runtimes.arm.worker`,
which runs in the emulated python of the environment that :mod:`runtimes.arm.env` builds.

* One emulated process starts in ~2 s, so by default the adapters of one CPU model share one
  worker process (``shared=True``); each adapter holds its own model in it. When that process
  dies (a crash, or a timeout that killed it) the next ``run`` of another adapter reloads its
  model in a fresh process; the failing request itself raises.
* Every request has a deadline (``timeout_s``). On a timeout, a crash (SIGILL, SIGSEGV...) or an
  unexpected exit the whole process group is killed and :class:`RuntimeAdapterError` names the
  target, the cause and the tail of the worker's log. Nothing can hang the host.
* File paths: qemu resolves absolute paths in the arm64 root filesystem first (``/tmp``,
  ``/etc``...), so the guest only sees paths relative to its working directory: arrays go
  through ``.npz`` files there and each model's directory is a symlink there (external data
  files stay beside their model).
* :meth:`Arm64Adapter.info` reports what ran: runtime version and provider/kernel set from the
  guest, ``arch`` from the guest's ``platform.machine()``, the emulated CPU model, and the CPU
  features the guest OS shows (``details["features"]``; ``dotprod``/``i8mm``/``sve``/``sme``).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import resource
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from runtimes._feed import check_feed, worker_input_specs
from runtimes._worker import WorkerProcess
from runtimes.arm import CPU_MODELS, RUNTIMES, target_name
from runtimes.arm.env import BUILD_COMMAND, ArmEnv, env_dir, find_env
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["CPU_MODELS", "QEMU_CPUS", "RUNTIMES", "Arm64Adapter"]

#: Every QEMU 10 CPU model an adapter accepts.
QEMU_CPUS: Final = (
    *CPU_MODELS,
    "cortex-a35",
    "cortex-a55",
    "cortex-a57",
    "cortex-a710",
    "neoverse-n2",
    "a64fx",
)
_WORKER: Final = Path(__file__).with_name("worker.py")
_IDS = itertools.count(1)


def _no_core_dumps() -> None:  # runs in the child before exec: qemu would write guest cores
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _new_worker(env: ArmEnv, cpu: str, target: str) -> WorkerProcess:
    """One emulated python running ``worker.py`` in its own directory."""
    return WorkerProcess(
        _WORKER,
        lambda script: env.command(cpu, "-s", "-B", script),
        env.environ(),
        name=target,
        where=f"qemu-aarch64 -cpu {cpu}",
        prefix=f"bitnet-arm64-{cpu}-",
        preexec_fn=_no_core_dumps,
        fix="rebuild the emulated aarch64 environment with `make arm-env` (python -m runtimes.arm.env build)",
    )


# --------------------------------------------------------------------------- shared workers
_POOL: dict[tuple[str, str], WorkerProcess] = {}
_POOL_LOCK = threading.Lock()


def _shared_worker(env: ArmEnv, cpu: str, target: str, timeout_s: float) -> WorkerProcess:
    """The live shared worker for ``cpu``, started when there is none."""
    key = (str(env.root), cpu)
    with _POOL_LOCK:
        worker = _POOL.get(key)
        if worker is not None and worker.alive():
            return worker
        if worker is not None:
            worker.close()
        worker = _new_worker(env, cpu, target)
        _POOL[key] = worker
        try:
            worker.start(target, timeout_s)
        except RuntimeAdapterError:
            del _POOL[key]
            worker.close()
            raise
    return worker


@atexit.register
def close_workers() -> None:
    """Stop every shared worker (also runs at interpreter exit)."""
    with _POOL_LOCK:
        workers = list(_POOL.values())
        _POOL.clear()
    for worker in workers:
        worker.close()


# --------------------------------------------------------------------------- adapter
class Arm64Adapter:
    """Run a model with the aarch64 build of a runtime, on an emulated CPU model.

    Args:
        runtime: ``ort`` (ONNX Runtime, CPU provider only) or ``litert-builtin``,
            ``litert-xnnpack``, ``litert-reference`` (LiteRT Interpreter kernel sets, checked
            after loading as on the host).
        cpu: QEMU CPU model (see :data:`CPU_MODELS`; any of :data:`QEMU_CPUS` is accepted).
        timeout_s: deadline of each step (worker start, load, run), in seconds.
        threads: intra-op threads (``None``: the runtime's default, as on the host).
        optimization: ``ort`` only: ``disabled``, ``basic``, ``extended`` or ``all``.
        session_config: ``ort`` only: ``SessionOptions.add_session_config_entry`` entries.
        allow_partial: ``litert-xnnpack`` only: accept a graph XNNPACK took only in part.
        shared: share one worker process per CPU model (fast); False: a private process.
        signature: LiteRT only: the SignatureDef to run (``prefill`` / ``decode``...).

    Raises:
        ValueError: unknown runtime or CPU model, non-positive timeout or threads.
    """

    def __init__(
        self,
        runtime: str,
        cpu: str,
        timeout_s: float = 120,
        *,
        threads: int | None = None,
        optimization: str = "all",
        session_config: Mapping[str, str] | None = None,
        allow_partial: bool = False,
        shared: bool = True,
        signature: str | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"arm64: runtime={runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if cpu not in QEMU_CPUS:
            raise ValueError(f"arm64: cpu={cpu!r}; choose one of {', '.join(QEMU_CPUS)}")
        if not timeout_s > 0:
            raise ValueError(f"arm64: timeout_s={timeout_s!r} must be positive")
        if threads is not None and threads < 1:
            raise ValueError(f"arm64: threads={threads!r} must be positive")
        self.runtime = runtime
        self.cpu = cpu
        self.timeout_s = float(timeout_s)
        self.shared = shared
        self.name = target_name(cpu, runtime)
        self.options: dict[str, Any] = {"threads": threads}
        if runtime == "ort":
            self.options.update(optimization=optimization, session_config=dict(session_config or {}))
        else:
            self.options.update(allow_partial=allow_partial, signature=signature)
        self._env: ArmEnv | None = None
        self._worker: WorkerProcess | None = None  # the process that holds the loaded model
        self._private: WorkerProcess | None = None  # this adapter's own process (shared=False)
        self._id = ""
        self._path: Path | None = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[str] = []
        self._info: dict[str, Any] = {}

    # ------------------------------------------------------------------ worker handling
    def _require_env(self) -> ArmEnv:
        env = find_env()
        if env is None:
            raise RuntimeAdapterError(
                f"{self.name}: the emulated aarch64 environment is not built ({env_dir()}); "
                f"run `{BUILD_COMMAND}` (about 30 s and 300 MB; needs apt, mmdebstrap and PyPI)"
            )
        return env

    def _get_worker(self, env: ArmEnv) -> WorkerProcess:
        if self.shared:
            return _shared_worker(env, self.cpu, self.name, self.timeout_s)
        if self._private is not None and self._private.alive():
            return self._private
        if self._private is not None:
            self._private.close()
        self._private = worker = _new_worker(env, self.cpu, self.name)
        weakref.finalize(self, worker.close)  # an adapter dropped without close()
        try:
            worker.start(self.name, self.timeout_s)
        except RuntimeAdapterError:
            worker.close()
            self._private = None
            raise
        return worker

    def _load_on(self, worker: WorkerProcess, path: Path) -> None:
        model_id = f"m{next(_IDS)}"
        # The model's directory, linked into the worker's directory: the guest opens it by a
        # relative path (no root filesystem lookup), and external data stays beside the model.
        (worker.dir / model_id).symlink_to(path.parent.resolve(), target_is_directory=True)
        request = {
            "op": "load",
            "id": model_id,
            "model": f"{model_id}/{path.name}",
            "runtime": self.runtime,
            "options": self.options,
        }
        reply = worker.request(request, self.name, self.timeout_s)
        self._worker, self._id = worker, model_id
        self._inputs = list(reply["inputs"])
        self._outputs = [str(n) for n in reply["outputs"]]
        self._info = dict(reply["info"])

    def load(self, path: Path) -> None:
        """Start (or reuse) the emulated worker and load ``path`` in it.

        Raises:
            RuntimeAdapterError: environment not built (names the build command), missing file,
                a runtime that cannot load the model, a crash or a timeout.
        """
        self._release()
        env = self._require_env()
        path = Path(path)
        if not path.is_file():
            raise RuntimeAdapterError(f"{self.name}: model file {path} does not exist")
        self._env = env
        self._load_on(self._get_worker(env), path)
        self._path = path

    def _require(self) -> WorkerProcess:
        if self._path is None or self._worker is None or self._env is None:
            raise RuntimeAdapterError(f"{self.name}: run() before load()")
        if not self._worker.alive():  # crashed or killed since: reload in a fresh process
            self._load_on(self._get_worker(self._env), self._path)
        return self._worker

    # ------------------------------------------------------------------ protocol
    def input_specs(self) -> list[tuple[str, list[Any], str]]:
        """``(name, shape, type)`` of each input as the guest runtime reports it.

        The type reads like the host adapter of the same runtime: ``tensor(float)`` for ORT,
        ``float32`` for LiteRT; free dimensions are names.
        """
        if self._path is None:
            raise RuntimeAdapterError(f"{self.name}: input_specs() before load()")
        return [(str(i["name"]), list(i["shape"]), str(i["type"])) for i in self._inputs]

    def output_names(self) -> list[str]:
        """Model output names, in order."""
        if self._path is None:
            raise RuntimeAdapterError(f"{self.name}: output_names() before load()")
        return list(self._outputs)

    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return check_feed(self.name, worker_input_specs(self._inputs), inputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once in the emulated runtime; returns outputs by name.

        Raises:
            RuntimeAdapterError: wrong input names, dtypes or shapes; a runtime error; a crash
                or timeout of the emulated process (with the tail of its log).
        """
        if self._path is None:
            raise RuntimeAdapterError(f"{self.name}: run() before load()")
        feed = self._check_inputs(inputs)
        worker = self._require()
        names = list(feed)
        tag = f"{self._id}-{next(_IDS)}"
        in_file, out_file = worker.dir / f"in-{tag}.npz", worker.dir / f"out-{tag}.npz"
        arrays: dict[str, Any] = {f"a{i}": feed[n] for i, n in enumerate(names)}
        np.savez(in_file, **arrays)
        try:
            request = {
                "op": "run",
                "id": self._id,
                "names": names,
                "inputs": in_file.name,
                "outputs": out_file.name,
            }
            reply = worker.request(request, self.name, self.timeout_s)
            with np.load(out_file) as data:
                result = {str(n): data[f"o{i}"] for i, n in enumerate(reply["outputs"])}
        finally:
            in_file.unlink(missing_ok=True)
            out_file.unlink(missing_ok=True)
        self._info = dict(reply["info"])
        return result

    def info(self) -> RuntimeInfo:
        """What ran: the guest runtime's version and kernels, aarch64, the emulated CPU, features."""
        if self._worker is None or self._env is None or not self._info:
            raise RuntimeAdapterError(f"{self.name}: info() before load()")
        hello = self._worker.hello
        details = {
            **dict(self._info.get("details") or {}),
            "emulator": "qemu user mode",
            "qemu": self._env.qemu_version,
            "features": list(hello.get("features") or []),
            **{k: bool(hello.get(k)) for k in ("dotprod", "i8mm", "sve", "sve2", "sme")},
            "cpuinfo_model": hello.get("cpuinfo_model"),
            "guest_python": hello.get("python"),
            "guest_numpy": hello.get("numpy"),
            "env": str(self._env.root),
        }
        return RuntimeInfo(
            runtime=str(self._info["runtime"]),
            version=str(self._info["version"]),
            provider=str(self._info["provider"]),
            arch=str(hello.get("machine", "unknown")),
            cpu_model=self.cpu,
            emulated=True,
            threads=self._info.get("threads"),
            details=details,
        )

    def _release(self) -> None:
        """Unload the current model from its worker (the worker keeps running)."""
        worker, model_id = self._worker, self._id
        self._worker, self._path, self._info, self._id = None, None, {}, ""
        if worker is not None and model_id and worker.alive():
            with contextlib.suppress(RuntimeAdapterError):
                worker.request({"op": "unload", "id": model_id}, self.name, self.timeout_s)

    def close(self) -> None:
        """Release the model and stop a private worker (a shared one keeps serving others)."""
        self._release()
        if self._private is not None:
            self._private.close()
            self._private = None
