"""Host side of a worker process: one JSON request per line in, one JSON reply per line out.

Used where a runtime cannot live in this interpreter: the emulated aarch64 python
(:mod:`runtimes.arm.adapter`) and the ``onnxruntime-webgpu`` build that shadows the CPU
``onnxruntime`` (:mod:`runtimes.gpu.ort_webgpu`). The worker script and
:mod:`runtimes._worker_side` (its half of the protocol) are copied into a fresh directory, the
worker's working directory; its stderr goes to ``worker.log`` there. The process gets its own
process group, so a timeout or a crash kills qemu or Dawn threads with it, and every failure
carries the tail of the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from runtimes.protocol import RuntimeAdapterError

__all__ = ["WorkerProcess", "rc_text"]

#: The worker's half of the protocol, copied next to every worker script.
_WORKER_SIDE: Final = Path(__file__).with_name("_worker_side.py")
_LOG_TAIL: Final = 25


def rc_text(rc: int | None) -> str:
    """``exited with status 1``, ``was killed by SIGILL``... for a process return code."""
    if rc is None:
        return "is still running"
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


class WorkerProcess:
    """A started worker process and its directory.

    Args:
        script: the worker script; copied (with ``_worker_side.py``) into the directory.
        support: more modules the worker imports, copied beside it.
        command: builds the command line from the script's name in the directory (the worker
            runs with that directory as its working directory).
        env: the worker's environment; ``BITNET_WORKER_LOG`` is set to the log's path.
        name: who is failing, for messages before a request names a target.
        where: what the process is, for messages (``qemu-aarch64 -cpu cortex-a53``).
        prefix: the temporary directory's name prefix.
        preexec_fn: run in the child before exec.
        fix: what to run when the process dies at start (e.g. ``make arm-env``), for messages.

    Raises:
        RuntimeAdapterError: the process cannot be started.
    """

    def __init__(
        self,
        script: Path,
        command: Callable[[str], Sequence[str]],
        env: Mapping[str, str],
        *,
        name: str,
        where: str,
        prefix: str,
        support: Sequence[Path] = (),
        preexec_fn: Callable[[], None] | None = None,
        fix: str = "",
    ) -> None:
        self.where = where
        self.fix = fix
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        for source in (script, _WORKER_SIDE, *support):
            shutil.copy2(source, self.dir / source.name)
        self.log_path = self.dir / "worker.log"
        self.hello: dict[str, Any] = {}
        self.closed = False
        self._buf = b""
        self._lock = threading.Lock()
        argv = list(command(script.name))
        self.argv = argv
        with self.log_path.open("wb") as log:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=self.dir,
                    env={**env, "BITNET_WORKER_LOG": str(self.log_path)},
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,  # its own process group: killed as a whole
                    preexec_fn=preexec_fn,
                )
            except OSError as exc:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise RuntimeAdapterError(f"{name}: cannot start {argv[0]}: {exc}") from exc
        self._stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        self._stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]

    def alive(self) -> bool:
        """Started, not closed, and still running."""
        return not self.closed and self.proc.poll() is None

    def log_tail(self) -> str:
        """The last lines of the worker's stderr."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL:]) if lines else "(the worker wrote nothing to stderr)"

    def fail(self, name: str, what: str) -> RuntimeAdapterError:
        """An error naming ``name``, what happened, the command, the tail of its log and the fix."""
        msg = (
            f"{name}: {what} ({self.where})\ncommand: {shlex.join(self.argv)}\n(in {self.dir})\n"
            f"worker stderr tail:\n{self.log_tail()}"
        )
        if self.fix and not self.hello:  # it never said hello: its environment is broken
            msg += f"\nFix: {self.fix}"
        return RuntimeAdapterError(msg)

    def kill(self) -> None:
        """Kill the whole process group and wait for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """Ask the worker to exit, kill it if it does not, remove its directory."""
        if self.closed:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._stdin.write(b'{"op": "exit"}\n')
                self._stdin.flush()
                self.proc.wait(timeout=5)
        self.kill()
        for stream in (self._stdin, self._stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self.closed = True
        shutil.rmtree(self.dir, ignore_errors=True)

    def _read_line(self, name: str, doing: str, timeout_s: float) -> dict[str, Any]:
        """The next reply; kills the worker when the deadline passes or the reply is garbage."""
        deadline = time.monotonic() + timeout_s
        sel = selectors.DefaultSelector()
        sel.register(self._stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise self.fail(name, f"timed out after {timeout_s:g} s {doing}; the worker was killed")
                chunk = os.read(self._stdout.fileno(), 1 << 16)
                if not chunk:  # EOF: the process is gone (crash, signal, exit)
                    try:
                        rc = self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self.kill()
                        rc = self.proc.returncode
                    raise self.fail(name, f"the worker {rc_text(rc)} while {doing}")
                self._buf += chunk
        finally:
            sel.close()
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            self.kill()
            raise self.fail(name, f"unreadable reply while {doing}: {line[:200]!r}") from exc
        if not isinstance(reply, dict):
            self.kill()
            raise self.fail(name, f"unexpected reply while {doing}: {line[:200]!r}")
        return reply

    @staticmethod
    def _checked(reply: dict[str, Any], name: str) -> dict[str, Any]:
        if not reply.get("ok"):
            raise RuntimeAdapterError(f"{name}: {reply.get('error', 'the worker failed without a reason')}")
        return reply

    def start(self, name: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the worker's hello line; returns (and keeps) its facts."""
        with self._lock:
            reply = self._checked(self._read_line(name, "starting", timeout_s), name)
        self.hello = dict(reply.get("hello") or {})
        return self.hello

    def request(
        self, req: Mapping[str, Any], name: str, timeout_s: float, doing: str | None = None
    ) -> dict[str, Any]:
        """Send one request and wait for its reply (``doing``: for messages).

        Raises:
            RuntimeAdapterError: the worker replied with an error, died, or missed the deadline.
        """
        doing = doing or f"serving {req.get('op')!r}"
        with self._lock:
            if not self.alive():
                raise self.fail(name, f"the worker {rc_text(self.proc.poll())} before {doing}")
            try:
                self._stdin.write((json.dumps(dict(req)) + "\n").encode())
                self._stdin.flush()
            except OSError as exc:
                self.kill()
                raise self.fail(name, f"cannot write to the worker ({exc})") from exc
            reply = self._read_line(name, doing, timeout_s)
        return self._checked(reply, name)
