"""The one file-writing mechanism: a result appears complete at its path, or not at all.

Every file or folder bitnet_export writes goes through here:

* :func:`check_target` refuses a destination that is not a regular file (or, for folder
  results, a real folder): a symlink, a device node, a FIFO, a socket. Writing there would
  replace it (``--out /dev/null`` as root) or write through it; both are refused.
* Work happens in a temporary entry beside the destination named
  ``.<name>.bitnet-tmp-<pid>-<random>`` (:func:`temp_dir`, :func:`atomic_write_bytes`), moved
  into place with ``os.replace``. A process killed mid-write (SIGKILL, power loss) leaves that
  entry behind; :func:`sweep` (run before every write to the same destination) deletes the
  entries of processes that no longer run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from bitnet_export.errors import ExportError

__all__ = [
    "TMP_TAG",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_target",
    "replace_dir",
    "sweep",
    "temp_dir",
]

#: Marks the temporary entries of a write (``.<name>.bitnet-tmp-<pid>-...``).
TMP_TAG = "bitnet-tmp"

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_target(path: Path, folder: bool = False) -> None:
    """Refuse to write ``path`` unless it is absent or a regular file (``folder``: a real folder).

    Raises:
        ExportError: ``path`` is a symlink, device, FIFO, socket (or a file/folder of the other
            kind); nothing is written.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    ok = stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)
    if not ok:
        want = "a folder" if folder else "a regular file"
        raise ExportError(
            f"output {path} is {_kind(mode)}; bitnet_export only replaces {want} and never writes "
            "through links or into devices. Fix: choose another output path (or remove it first)"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(path: Path) -> list[Path]:
    """Delete the temporary entries left beside ``path`` by writes whose process has died.

    Returns:
        The entries removed.
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{TMP_TAG}-(\d+)-")
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or _alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def _prefix(path: Path) -> str:
    return f".{path.name}.{TMP_TAG}-{os.getpid()}-"


@contextlib.contextmanager
def temp_dir(path: Path, folder: bool = False) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` (removed on exit) to build a result in.

    Checks the destination (:func:`check_target`) and sweeps dead writers' leftovers first.
    """
    path = Path(path)
    check_target(path, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), dir=path.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished folder ``tmp`` to ``path``, replacing an old folder there.

    The old folder is first renamed to a temporary name (swept like any other leftover if the
    process dies between the two renames), then removed.
    """
    check_target(path, folder=True)
    if os.path.lexists(path):
        old = Path(tempfile.mkdtemp(prefix=_prefix(path), dir=path.parent))
        os.replace(path, old / "old")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then ``os.replace`` it.

    The file gets the permissions a plain ``open(path, "wb")`` would give (``0o666`` minus the
    umask), not the owner-only mode of the temporary file.

    Raises:
        ExportError: ``path`` is not a regular file (:func:`check_target`).
    """
    path = Path(path)
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))
