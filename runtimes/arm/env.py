"""The emulated aarch64 environment: an arm64 Debian root filesystem, aarch64 wheels, QEMU 10.

Nothing here needs an arm64 machine, binfmt_misc or root inside the guest (FIELD_NOTES,
"Emulated aarch64"). The recipe, pinned as data in :data:`RECIPE`:

1. root filesystem: ``mmdebstrap --arch=arm64 --variant=extract --include=python3,libstdc++6``
   from the Debian mirror that apt is configured with (libstdc++6 must be named or numpy fails
   to import). Its ``/dev`` is removed so the guest uses the host's device files.
2. QEMU: ``qemu-user`` from bookworm-backports (QEMU 10; bookworm's 7.2 miscomputes SME on
   ``-cpu max``), fetched with a private apt source list (``/etc/apt`` is never edited) and
   unpacked with ``dpkg-deb -x``; only the static ``qemu-aarch64`` is kept.
3. wheels: numpy, onnxruntime and ai-edge-litert for cp311 / manylinux_2_17..36 aarch64,
   installed by the host's pip into ``ROOTFS/opt/bitnet_site``.
4. the guest's standard library is byte-compiled by the host (same CPython 3.11 bytecode), which
   saves ~1 s per emulated process start.
5. check: the emulated python imports all three.

The result lives in ``${XDG_CACHE_HOME:-~/.cache}/bitnet_export/arm64-<hash>``, where the hash
covers the recipe (not the mirror). It is built in a temporary directory beside it and renamed
into place, so a directory with that name is always complete. ``build --tarball`` also keeps
``arm64-<hash>.tar`` there, and a later ``build`` restores from it instead of downloading.

Command line::

    python -m runtimes.arm.env build [--mirror URL] [--tarball] [--force]
    python -m runtimes.arm.env status     # exit 1 when not built
    python -m runtimes.arm.env path       # prints the directory; exit 1 when not built
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "BUILD_COMMAND",
    "RECIPE",
    "ArmEnv",
    "ArmEnvError",
    "Recipe",
    "build_env",
    "cache_root",
    "debian_mirror",
    "env_dir",
    "find_env",
    "main",
]

#: What to tell a user whose environment is missing.
BUILD_COMMAND: Final = "python -m runtimes.arm.env build"
_MANIFEST: Final = "manifest.json"
_DEFAULT_KEYRING: Final = "/usr/share/keyrings/debian-archive-keyring.gpg"


class ArmEnvError(RuntimeError):
    """The aarch64 environment could not be built or is unusable; the message says which step."""


@dataclass(frozen=True)
class Recipe:
    """Every input of the environment. Changing any field changes :meth:`key`, hence the directory.

    Attributes:
        version: version of this recipe's code; bump it when the build steps change.
        suite: Debian suite of the root filesystem.
        packages: Debian packages of the root filesystem (with their dependencies).
        qemu_suite: suite that provides ``qemu_package``.
        qemu_package: Debian package that holds the static ``qemu-aarch64``.
        qemu_major: required QEMU major version.
        python: guest CPython version (Debian's ``python3`` of ``suite``).
        wheels: distribution -> exact version, installed with their dependencies.
        manylinux: glibc minor versions accepted in ``manylinux_2_N_aarch64`` tags.
        site: directory of the wheels inside the root filesystem.
    """

    version: int = 1
    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3", "libstdc++6")
    qemu_suite: str = "bookworm-backports"
    qemu_package: str = "qemu-user"
    qemu_major: int = 10
    python: str = "3.11"
    wheels: tuple[tuple[str, str], ...] = (
        ("numpy", "2.4.6"),
        ("onnxruntime", "1.32.0"),
        ("ai-edge-litert", "2.3.0"),
    )
    manylinux: tuple[int, int] = (17, 36)
    site: str = "opt/bitnet_site"

    def key(self) -> str:
        """Short hash of every field (the cache directory's suffix)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


RECIPE: Final = Recipe()


@dataclass(frozen=True)
class ArmEnv:
    """A built environment.

    Attributes:
        root: the ``arm64-<hash>`` directory.
        manifest: what was built: recipe, versions, QEMU version, build time, size.
    """

    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        """The arm64 root filesystem (qemu's ``-L`` prefix)."""
        return self.root / "rootfs"

    @property
    def qemu(self) -> Path:
        """The static ``qemu-aarch64`` binary."""
        return self.root / "bin" / "qemu-aarch64"

    @property
    def python(self) -> Path:
        """The guest's python3, as a host path."""
        return self.rootfs / "usr" / "bin" / "python3"

    @property
    def site_guest(self) -> str:
        """The wheels directory as the guest sees it (its ``PYTHONPATH``)."""
        return "/" + str(self.manifest.get("recipe", {}).get("site", RECIPE.site))

    @property
    def qemu_version(self) -> str:
        """``qemu-aarch64 --version``'s first line, recorded at build time."""
        return str(self.manifest.get("qemu_version", "unknown"))

    def command(self, cpu: str, *args: str) -> list[str]:
        """``qemu-aarch64 -cpu CPU -L ROOTFS ROOTFS/usr/bin/python3 ARGS`` as an argv list.

        Absolute paths the guest opens are looked up in the root filesystem first (``/tmp``,
        ``/etc`` exist there): give the guest paths relative to its working directory.
        """
        return [str(self.qemu), "-cpu", cpu, "-L", str(self.rootfs), str(self.python), *args]

    def environ(self) -> dict[str, str]:
        """A clean guest environment (no host ``QEMU_*``/``PYTHON*`` variables leak in)."""
        return {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": self.site_guest,
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # the cached environment stays read-only
            # numpy's OpenBLAS threads busy-wait under qemu: one host core per idle process.
            # The guest uses numpy for I/O only; the runtimes have their own thread pools.
            "OPENBLAS_NUM_THREADS": "1",
        }


# --------------------------------------------------------------------------- locations
def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/bitnet_export``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bitnet_export"


def env_dir(recipe: Recipe = RECIPE) -> Path:
    """Directory of the environment built from ``recipe`` (it may not exist)."""
    return cache_root() / f"arm64-{recipe.key()}"


def _tarball(recipe: Recipe) -> Path:
    return cache_root() / f"arm64-{recipe.key()}.tar"


def find_env(recipe: Recipe = RECIPE) -> ArmEnv | None:
    """The environment for ``recipe`` when it is built and complete, else None."""
    root = env_dir(recipe)
    try:
        manifest = json.loads((root / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    env = ArmEnv(root, manifest)
    if manifest.get("key") != recipe.key() or not (env.qemu.is_file() and env.python.exists()):
        return None
    return env


# --------------------------------------------------------------------------- apt configuration
def _apt_source_files() -> list[Path]:
    etc = Path("/etc/apt")
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return files


def _apt_entries(path: Path) -> Iterator[tuple[list[str], list[str], str | None]]:
    """``(uris, suites, signed_by)`` of each ``deb`` entry of a one-line or deb822 source file."""
    text = path.read_text(errors="replace")
    if path.suffix == ".sources":
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                yield (
                    fields.get("uris", "").split(),
                    fields.get("suites", "").split(),
                    fields.get("signed-by"),
                )
        return
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        signed = None
        rest = words[1:]
        if rest and rest[0].startswith("["):
            opts = []
            while rest:
                opts.append(rest.pop(0))
                if opts[-1].endswith("]"):
                    break
            for opt in " ".join(opts).strip("[]").split():
                if opt.startswith("signed-by="):
                    signed = opt.split("=", 1)[1]
        if len(rest) >= 2:
            yield [rest[0]], [rest[1]], signed


def debian_mirror(suite: str = RECIPE.suite) -> tuple[str, str | None]:
    """The mirror URI apt uses for ``suite`` (read from apt's configuration) and its keyring.

    Raises:
        ArmEnvError: no ``deb`` entry for ``suite``; pass ``--mirror`` then.
    """
    for path in _apt_source_files():
        with contextlib.suppress(OSError):
            for uris, suites, signed_by in _apt_entries(path):
                if suite in suites and uris:
                    return uris[0].rstrip("/"), signed_by
    raise ArmEnvError(
        f"no 'deb' entry for suite {suite!r} in /etc/apt/sources.list or /etc/apt/sources.list.d/; "
        f"pass the Debian mirror explicitly: {BUILD_COMMAND} --mirror URL"
    )


# --------------------------------------------------------------------------- build steps
def _run(step: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure raise naming the step and the tail of its output."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)
    except OSError as exc:
        raise ArmEnvError(f"{step}: cannot run {cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ArmEnvError(f"{step}: `{' '.join(cmd)}` exited with {proc.returncode}:\n{tail}")
    return proc


def _ensure_mmdebstrap(log: Callable[[str], None]) -> str:
    found = shutil.which("mmdebstrap")
    if found:
        return found
    if os.geteuid() != 0:
        raise ArmEnvError("mmdebstrap is not installed; run `apt-get install mmdebstrap` as root")
    log("  mmdebstrap is missing: apt-get install mmdebstrap")
    _run("install mmdebstrap", ["apt-get", "install", "-y", "-q", "mmdebstrap"])
    found = shutil.which("mmdebstrap")
    if not found:
        raise ArmEnvError("apt-get installed mmdebstrap but it is not on PATH")
    return found


def _rootfs(recipe: Recipe, mirror: str, rootfs: Path, log: Callable[[str], None]) -> None:
    mmdebstrap = _ensure_mmdebstrap(log)
    _run(
        "root filesystem (mmdebstrap)",
        [
            mmdebstrap,
            "--arch=arm64",
            "--variant=extract",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(rootfs),
            mirror,
        ],
    )
    # Device nodes (root mode only) and /dev/std* -> /proc/self/fd links: let the guest use the
    # host's /dev, and keep the tree restorable without root.
    shutil.rmtree(rootfs / "dev", ignore_errors=True)


def _qemu(
    recipe: Recipe, mirror: str, keyring: str | None, work: Path, dest: Path, log: Callable[[str], None]
) -> str:
    """Download ``qemu_package`` from ``qemu_suite`` with private apt state; keep qemu-aarch64."""
    apt = work / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "parts", "download"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    keyring = keyring or (_DEFAULT_KEYRING if Path(_DEFAULT_KEYRING).is_file() else None)
    signed = f"[signed-by={keyring}] " if keyring else ""
    (apt / "sources.list").write_text(f"deb {signed}{mirror} {recipe.qemu_suite} main\n")
    opts = [
        f"-o=Dir::Etc::SourceList={apt / 'sources.list'}",
        f"-o=Dir::Etc::SourceParts={apt / 'parts'}",
        f"-o=Dir::State::Lists={apt / 'lists'}",
        f"-o=Dir::Cache={apt / 'cache'}",
        "-o=APT::Sandbox::User=root",
        "-q",
    ]
    _run(f"apt-get update ({recipe.qemu_suite}, private lists)", ["apt-get", *opts, "update"])
    target = f"{recipe.qemu_package}/{recipe.qemu_suite}"
    _run(f"apt-get download {target}", ["apt-get", *opts, "download", target], cwd=apt / "download")
    debs = sorted((apt / "download").glob("*.deb"))
    if len(debs) != 1:
        raise ArmEnvError(f"apt-get download {target} left {[d.name for d in debs]}, expected one .deb")
    log(f"  {debs[0].name}")
    unpacked = work / "qemu-deb"
    _run("dpkg-deb -x", ["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
    binary = unpacked / "usr" / "bin" / "qemu-aarch64"
    if not binary.is_file():
        raise ArmEnvError(f"{debs[0].name} holds no usr/bin/qemu-aarch64")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, dest)
    version = _run("qemu-aarch64 --version", [str(dest), "--version"]).stdout.splitlines()[0].strip()
    match = re.search(r"version (\d+)\.", version)
    if not match or int(match.group(1)) != recipe.qemu_major:
        raise ArmEnvError(f"{target} is {version!r}; the recipe needs QEMU {recipe.qemu_major}")
    return version


def _wheels(recipe: Recipe, site: Path) -> list[str]:
    """Install the aarch64 wheels with the host's pip; returns the installed ``name==version``s."""
    lo, hi = recipe.manylinux
    platforms = [f"--platform=manylinux_2_{n}_aarch64" for n in range(lo, hi + 1)]
    abi = "cp" + recipe.python.replace(".", "")
    _run(
        "aarch64 wheels (host pip)",
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--only-binary=:all:",
            f"--python-version={recipe.python}",
            "--implementation=cp",
            f"--abi={abi}",
            *platforms,
            f"--target={site}",
            *(f"{name}=={version}" for name, version in recipe.wheels),
        ],
    )
    installed = []
    for info in sorted(site.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        installed.append(f"{name}=={version}")
    return installed


def _compile_stdlib(recipe: Recipe, rootfs: Path, log: Callable[[str], None]) -> bool:
    """Byte-compile the guest's stdlib with the host's CPython when it is the same version."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != recipe.python:
        log(f"  host python is {sys.version.split()[0]}, guest {recipe.python}: not precompiled")
        return False
    lib = f"usr/lib/python{recipe.python}"
    proc = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", "-d", f"/{lib}", str(rootfs / lib)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:  # a file that does not compile is left to the guest; note it
        log(f"  compileall exited with {proc.returncode}; some modules compile at first import")
    return True


_CHECK = (
    "import json, platform, sys, numpy, onnxruntime, ai_edge_litert, importlib.metadata as m; "
    "print(json.dumps({'machine': platform.machine(), 'python': sys.version.split()[0], "
    "'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__, "
    "'ai-edge-litert': m.version('ai-edge-litert')}))"
)


def _check(env: ArmEnv, recipe: Recipe) -> dict[str, str]:
    """Import numpy, onnxruntime and ai_edge_litert in the emulated python; compare versions."""
    proc = _run(
        "check (emulated python imports)",
        env.command("max", "-c", _CHECK),
        env=env.environ(),
        cwd=env.root,
        timeout=300,
    )
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    want = dict(recipe.wheels)
    wrong = {k: (seen.get(k), v) for k, v in want.items() if seen.get(k) != v}
    if seen.get("machine") != "aarch64" or wrong:
        raise ArmEnvError(f"check: the guest reports {seen}; expected aarch64 and {want}")
    return {str(k): str(v) for k, v in seen.items()}


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock, so two concurrent builds do the work once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _restore(tarball: Path, target: Path, recipe: Recipe, log: Callable[[str], None]) -> ArmEnv | None:
    """Unpack ``tarball`` into a temporary directory, then rename it to ``target``."""
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared (CI runners)
    try:
        _run("restore tarball", ["tar", "-xf", str(tarball), "-C", str(tmp)])
        env = ArmEnv(tmp, json.loads((tmp / _MANIFEST).read_text()))
        if env.manifest.get("key") != recipe.key():
            log(f"  {tarball} holds another recipe ({env.manifest.get('key')}); ignored")
            return None
        os.rename(tmp, target)
    except (ArmEnvError, OSError, ValueError) as exc:
        log(f"  cannot restore {tarball}: {exc}; building instead")
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"restored {target} from {tarball} in {time.perf_counter() - t0:.1f} s")
    return find_env(recipe)


def build_env(
    recipe: Recipe = RECIPE,
    *,
    mirror: str | None = None,
    tarball: bool = False,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> ArmEnv:
    """Build the environment for ``recipe`` unless it exists (then return it unchanged).

    Args:
        recipe: what to build.
        mirror: Debian mirror URI; ``None``: the one apt is configured with for ``recipe.suite``.
        tarball: also write ``arm64-<hash>.tar`` beside the directory (restored by later builds).
        force: rebuild even when the environment exists.
        log: progress messages.

    Returns:
        The ready environment.

    Raises:
        ArmEnvError: a step failed; the message names the step and the tool's output.
    """
    target = env_dir(recipe)
    with _lock(cache_root() / f".arm64-{recipe.key()}.lock"):
        existing = find_env(recipe)
        if existing is not None and not force:
            log(f"up to date: {target}")
            return existing
        if existing is not None:
            shutil.rmtree(target)
        if not force and _tarball(recipe).is_file():
            restored = _restore(_tarball(recipe), target, recipe, log)
            if restored is not None:
                return restored
        env = _build(recipe, mirror, target, log)
        if tarball:
            t0 = time.perf_counter()
            tmp = _tarball(recipe).with_suffix(".tar.tmp")
            _run("tarball", ["tar", "-cf", str(tmp), "-C", str(target), "."])
            os.replace(tmp, _tarball(recipe))
            log(f"wrote {_tarball(recipe)} in {time.perf_counter() - t0:.1f} s")
        return env


def _build(recipe: Recipe, mirror: str | None, target: Path, log: Callable[[str], None]) -> ArmEnv:
    t0 = time.perf_counter()
    keyring = None
    if mirror is None:
        mirror, keyring = debian_mirror(recipe.suite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared (CI runners)
    try:
        env = ArmEnv(tmp, {"recipe": asdict(recipe)})
        steps = 5

        def step(i: int, what: str) -> None:
            log(f"step {i}/{steps} [{time.perf_counter() - t0:5.1f} s] {what}")

        step(1, f"arm64 {recipe.suite} root filesystem from {mirror} ({', '.join(recipe.packages)})")
        _rootfs(recipe, mirror, env.rootfs, log)
        step(2, f"{recipe.qemu_package} from {recipe.qemu_suite} (private apt lists)")
        with tempfile.TemporaryDirectory(dir=tmp) as work:
            qemu_version = _qemu(recipe, mirror, keyring, Path(work), env.qemu, log)
        log(f"  {qemu_version}")
        step(3, "aarch64 wheels: " + ", ".join(f"{n}=={v}" for n, v in recipe.wheels))
        installed = _wheels(recipe, env.rootfs / recipe.site)
        step(4, "byte-compile the guest's standard library")
        compiled = _compile_stdlib(recipe, env.rootfs, log)
        step(5, "check: the emulated python imports numpy, onnxruntime, ai_edge_litert")
        seen = _check(env, recipe)
        seconds = time.perf_counter() - t0
        manifest: dict[str, Any] = {
            "key": recipe.key(),
            "recipe": asdict(recipe),
            "mirror": mirror,
            "qemu_version": qemu_version,
            "guest": seen,
            "site_packages": installed,
            "stdlib_precompiled": compiled,
            "build_seconds": round(seconds, 1),
            "size_bytes": _size(tmp),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(tmp, target)  # atomic: the directory appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    env = ArmEnv(target, manifest)
    log(f"built {target} in {seconds:.1f} s, {manifest['size_bytes'] / 1e6:.0f} MB")
    return env


# --------------------------------------------------------------------------- command line
def _describe(env: ArmEnv) -> str:
    m = env.manifest
    guest = m.get("guest", {})
    return "\n".join(
        [
            f"ready: {env.root}",
            f"  size {m.get('size_bytes', 0) / 1e6:.0f} MB, built in {m.get('build_seconds')} s at "
            f"{m.get('built_at')}",
            f"  {env.qemu_version}",
            f"  guest python {guest.get('python')} ({guest.get('machine')}), numpy {guest.get('numpy')}, "
            f"onnxruntime {guest.get('onnxruntime')}, ai-edge-litert {guest.get('ai-edge-litert')}",
            f"  mirror {m.get('mirror')}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``build``, ``status`` or ``path``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m runtimes.arm.env", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or restore) the environment unless it is up to date")
    build.add_argument("--mirror", help="Debian mirror URI (default: the one apt is configured with)")
    build.add_argument("--tarball", action="store_true", help="also keep arm64-<hash>.tar")
    build.add_argument("--force", action="store_true", help="rebuild from scratch")
    sub.add_parser("status", help="say whether the environment is built; exit 1 when not")
    sub.add_parser("path", help="print the environment's directory; exit 1 when not built")
    args = parser.parse_args(argv)
    if args.command == "build":
        t0 = time.perf_counter()
        try:
            env = build_env(mirror=args.mirror, tarball=args.tarball, force=args.force)
        except ArmEnvError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(_describe(env))
        print(f"  this command took {time.perf_counter() - t0:.1f} s")
        return 0
    found = find_env()
    if found is None:
        print(f"not built: {env_dir()} (recipe {RECIPE.key()}); run `{BUILD_COMMAND}`", file=sys.stderr)
        return 1
    print(_describe(found) if args.command == "status" else found.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
