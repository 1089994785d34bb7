"""The ``onnxruntime-webgpu`` environment: a ``pip install --target`` site directory of its own.

``onnxruntime-webgpu`` installs the same ``onnxruntime`` module as the CPU package, so it cannot
share the project's venv. It lives in
``${XDG_CACHE_HOME:-~/.cache}/bitnet_export/ort-webgpu-<version>/site`` and is used by the worker
(:mod:`runtimes.gpu.ort_webgpu_worker`) with ``PYTHONPATH`` set to that directory first.

Usage::

    python -m runtimes.gpu.ort_env build    # install (cached; temp dir + rename)
    python -m runtimes.gpu.ort_env status   # what is there
    python -m runtimes.gpu.ort_env path     # print the site directory
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

__all__ = ["BUILD_COMMAND", "ORT_WEBGPU_VERSION", "OrtWebGpuEnvError", "env_dir", "find_site", "site_dir"]

#: Pinned versions (``pip index versions onnxruntime-webgpu``: 1.27.0, 1.25.1, 1.25.0).
ORT_WEBGPU_VERSION: Final = "1.27.0"
NUMPY_VERSION: Final = "2.4.6"
BUILD_COMMAND: Final = "python -m runtimes.gpu.ort_env build"


class OrtWebGpuEnvError(RuntimeError):
    """The environment could not be built; the message says which step failed."""


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/bitnet_export``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bitnet_export"


def env_dir(version: str = ORT_WEBGPU_VERSION) -> Path:
    """``<cache>/ort-webgpu-<version>``."""
    return cache_root() / f"ort-webgpu-{version}"


def site_dir(version: str = ORT_WEBGPU_VERSION) -> Path:
    """The ``--target`` directory that holds the webgpu ``onnxruntime`` module."""
    return env_dir(version) / "site"


def find_site(version: str = ORT_WEBGPU_VERSION) -> Path | None:
    """The site directory when it has been built, else ``None``."""
    site = site_dir(version)
    return site if (site / "onnxruntime" / "__init__.py").is_file() else None


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build(version: str = ORT_WEBGPU_VERSION, force: bool = False) -> Path:
    """Install ``onnxruntime-webgpu==version`` and numpy into the cache; return the site dir."""
    final = env_dir(version)
    if find_site(version) is not None and not force:
        return site_dir(version)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check",
        "--target", str(tmp / "site"), f"onnxruntime-webgpu=={version}", f"numpy=={NUMPY_VERSION}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise OrtWebGpuEnvError(f"pip install failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        if not (tmp / "site" / "onnxruntime" / "__init__.py").is_file():
            raise OrtWebGpuEnvError(f"pip installed no onnxruntime module into {tmp / 'site'}")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return site_dir(version)


def main(argv: list[str] | None = None) -> int:
    """``build | status | path``."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args[0] if args else "status"
    if cmd == "build":
        t0 = time.monotonic()
        try:
            site = build(force="--force" in args)
        except OrtWebGpuEnvError as exc:
            print(f"ort-webgpu env: {exc}", file=sys.stderr)
            return 1
        size = _size(site) / 2**20
        print(f"ort-webgpu env: {site} ({size:.0f} MiB) in {time.monotonic() - t0:.1f} s")
        return 0
    if cmd == "status":
        found = find_site()
        if found is None:
            print(f"ort-webgpu env: missing ({site_dir()}); run {BUILD_COMMAND}")
            return 1
        size = _size(found) / 2**20
        print(f"ort-webgpu env: onnxruntime-webgpu {ORT_WEBGPU_VERSION} at {found} ({size:.0f} MiB)")
        return 0
    if cmd == "path":
        print(site_dir())
        return 0 if find_site() is not None else 1
    print(f"usage: python -m runtimes.gpu.ort_env build [--force]|status|path (not {cmd!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
