"""A software Vulkan device (SwiftShader) for running LiteRT's GPU path on machines without a GPU.

LiteRT's GPU accelerator is WebGPU (Dawn) on Vulkan. Without a GPU, SwiftShader from Debian's
``chromium-common`` package provides a Vulkan ICD that Dawn accepts (bookworm's Mesa 22 lavapipe
is rejected, FIELD_NOTES). ``build`` downloads the package with ``apt-get download`` into
``${XDG_CACHE_HOME:-~/.cache}/bitnet_export/swiftshader-<version>``, unpacks it with
``dpkg-deb -x`` and writes an ICD json whose ``library_path`` is absolute. The Vulkan loader
(``libvulkan1``) is installed with apt when missing.

    python -m runtimes.gpu.vulkan build    # download + unpack (cached), print time and size
    python -m runtimes.gpu.vulkan status   # loader, hardware ICDs, software ICD
    python -m runtimes.gpu.vulkan icd      # print the software ICD json path (exit 1 if none)
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

__all__ = [
    "ICD_ENV",
    "build_software_icd",
    "cache_root",
    "gpu_device_nodes",
    "hardware_icds",
    "has_hardware_gpu",
    "have_loader",
    "software_icd",
    "unavailable_reason",
]

ICD_ENV: Final = "VK_ICD_FILENAMES"
PACKAGE: Final = "chromium-common"
_ICD_IN_PACKAGE: Final = Path("usr/lib/chromium/vk_swiftshader_icd.json")
_ICD_NAME: Final = "vk_swiftshader_icd_abs.json"
#: Where Vulkan loaders look for driver manifests (hardware ICDs).
_ICD_DIRS: Final = (
    Path("/usr/share/vulkan/icd.d"),
    Path("/etc/vulkan/icd.d"),
    Path("/usr/local/share/vulkan/icd.d"),
)


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/bitnet_export``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bitnet_export"


def have_loader() -> bool:
    """Whether the Vulkan loader (``libvulkan.so.1``) can be found."""
    try:
        ctypes.CDLL("libvulkan.so.1")
    except OSError:
        return ctypes.util.find_library("vulkan") is not None
    return True


def hardware_icds() -> list[Path]:
    """Installed driver manifests other than software ones (lavapipe, SwiftShader)."""
    found = []
    for d in _ICD_DIRS:
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                low = p.name.lower()
                if "lvp" not in low and "swiftshader" not in low:
                    found.append(p)
    return found


def gpu_device_nodes() -> list[Path]:
    """GPU device nodes a hardware Vulkan driver would open (``/dev/nvidia*``, ``/dev/dri/renderD*``).

    Installed ICD manifests alone prove nothing (``mesa-vulkan-drivers`` installs Intel/AMD ones
    on machines without those GPUs), so a hardware device also needs its device node.
    """
    return sorted(Path("/dev").glob("nvidia[0-9]*")) + sorted(Path("/dev/dri").glob("renderD*"))


def has_hardware_gpu() -> bool:
    """A hardware ICD is installed and a GPU device node exists."""
    return bool(hardware_icds()) and bool(gpu_device_nodes())


def _icd_valid(path: Path) -> bool:
    try:
        lib = Path(json.loads(path.read_text())["ICD"]["library_path"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return lib.is_absolute() and lib.is_file()


def unavailable_reason() -> str | None:
    """Why no Vulkan device can serve a GPU target in this process, or None when one can
    (an ICD set by the caller, a hardware GPU, or the built SwiftShader ICD)."""
    if not have_loader():
        return "no Vulkan loader (apt-get install libvulkan1)"
    if os.environ.get(ICD_ENV) or os.environ.get("VK_DRIVER_FILES") or has_hardware_gpu():
        return None
    if software_icd() is None:
        return "no Vulkan device: no GPU and no SwiftShader (python -m runtimes.gpu.vulkan build)"
    return None


def software_icd() -> Path | None:
    """The newest built SwiftShader ICD json in the cache, or None when none is built."""
    root = cache_root()
    if not root.is_dir():
        return None
    for d in sorted(root.glob("swiftshader-*"), key=lambda p: p.stat().st_mtime, reverse=True):
        icd = d / _ICD_NAME
        if icd.is_file() and _icd_valid(icd):
            return icd
    return None


def _candidate_version() -> str:
    out = subprocess.run(["apt-cache", "policy", PACKAGE], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                return version
    raise RuntimeError(f"apt has no candidate for {PACKAGE}; run `apt-get update` first")


def _ensure_loader() -> None:
    if have_loader():
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            "the Vulkan loader libvulkan1 is missing: run "
            "`apt-get install -y --no-install-recommends libvulkan1`"
        )
    print("installing libvulkan1 (the Vulkan loader)", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "libvulkan1"], check=True)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build_software_icd(force: bool = False) -> Path:
    """Download and unpack SwiftShader (cached); return the ICD json with an absolute library path.

    Raises:
        RuntimeError: apt cannot provide the package; the package has no SwiftShader ICD.
        subprocess.CalledProcessError: apt-get / dpkg-deb failed.
    """
    _ensure_loader()
    try:
        version = _candidate_version()
    except (RuntimeError, subprocess.CalledProcessError):
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        version = _candidate_version()
    dest = cache_root() / f"swiftshader-{version.replace(':', '_')}"
    icd = dest / _ICD_NAME
    if icd.is_file() and _icd_valid(icd) and not force:
        return icd
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        subprocess.run(
            ["apt-get", "download", "-q", f"{PACKAGE}={version}"], cwd=tmp, check=True, capture_output=True
        )
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"apt-get download {PACKAGE} left {debs} in {tmp}")
        root = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
        src = root / _ICD_IN_PACKAGE
        if not src.is_file():
            raise RuntimeError(f"{PACKAGE} {version} has no {_ICD_IN_PACKAGE}")
        # Keep only SwiftShader (self-contained: libc/libm only) and its manifest (~5 MiB of ~65).
        keep = Path(tmp) / "swiftshader"
        keep.mkdir()
        for f in root.joinpath(_ICD_IN_PACKAGE.parent).glob("*vk_swiftshader*"):
            f.rename(keep / f.name)
        keep.rename(dest)
    manifest = json.loads((dest / _ICD_IN_PACKAGE.name).read_text())
    lib = Path(manifest["ICD"]["library_path"])
    if not lib.is_absolute():
        lib = (dest / lib).resolve()
    if not lib.is_file():
        lib = dest / lib.name
    if not lib.is_file():
        raise RuntimeError(f"SwiftShader library {manifest['ICD']['library_path']} not found in {dest}")
    manifest["ICD"]["library_path"] = str(lib)
    icd.write_text(json.dumps(manifest, indent=2) + "\n")
    return icd


def _status() -> int:
    loader = "yes" if have_loader() else "MISSING (apt-get install libvulkan1)"
    print(f"vulkan loader (libvulkan.so.1): {loader}")
    print(f"{ICD_ENV}: {os.environ.get(ICD_ENV, '(unset)')}")
    hw = hardware_icds()
    print(f"hardware ICDs: {', '.join(map(str, hw)) if hw else 'none'}")
    nodes = gpu_device_nodes()
    print(f"GPU device nodes: {', '.join(map(str, nodes)) if nodes else 'none'}")
    sw = software_icd()
    print(f"software ICD (SwiftShader): {sw if sw else 'not built (python -m runtimes.gpu.vulkan build)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtimes.gpu.vulkan", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download and unpack SwiftShader (cached)")
    b.add_argument("--force", action="store_true", help="download again")
    sub.add_parser("status", help="loader, hardware and software ICDs")
    sub.add_parser("icd", help="print the software ICD json path")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        start = time.monotonic()
        icd = build_software_icd(force=args.force)
        size = _dir_size(icd.parent)
        print(f"software ICD: {icd}")
        print(f"time {time.monotonic() - start:.1f} s, size {size / 2**20:.1f} MiB in {icd.parent}")
        return 0
    if args.cmd == "status":
        return _status()
    icd_path = software_icd()
    if icd_path is None:
        print("no software ICD built; run `python -m runtimes.gpu.vulkan build`", file=sys.stderr)
        return 1
    print(icd_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
