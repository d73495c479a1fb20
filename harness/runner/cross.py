"""The runtime bundle of a cross target (``linux-arm64``, the arm64 emulated phone): the runner
cross-compiled, and the TVM runtime and FFI libraries of the target's instruction set.

The libraries come from the registry's wheels of exactly the installed versions: ``pip
download --platform manylinux_2_28_aarch64 --only-binary=:all: --no-deps
apache-tvm==<installed> apache-tvm-ffi==<installed>`` into ``<cache>/wheels/<platform>/``
(once; pip's own configuration applies, so an offline lab points it at its mirror), and
``libtvm_runtime.so`` / ``libtvm_ffi.so`` taken out of them into
``<cache>/runtime-libs/<platform>-<hash of the two wheels>/``. The runner is built with the host
build's flags (:func:`harness.runner.build.compile_flags`, the installed wheel's headers: same
version, same headers) by the cross compiler against those libraries, finding them beside
itself only. The bundle, runner first, is cached in ``<cache>/runner-<target>/<key>/``, the key
hashing the runner's source, the flags, the cross compiler's version and the wheels' hashes.
Nothing of this is committed: it is all built or fetched on first use.

This is the same bundle an NDK build makes for a real phone (see :mod:`.android`), pushed by
the same code; only the toolchain and the C library differ.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from harness.config import get_settings
from harness.errors import HarnessBug, InfrastructureError, JobError, one_line
from harness.runner.build import (
    COMPILE_TIMEOUT_S,
    RUNNER_NAME,
    RUNNER_SOURCE,
    TvmWheel,
    compile_flags,
    first_error_line,
    tvm_wheel,
)
from harness.toolchain import CrossToolchain

log = logging.getLogger(__name__)

# The wheels' platform tag for each cross toolchain (pip also takes older manylinux tags).
PLATFORMS = {"aarch64-linux-gnu": "manylinux_2_28_aarch64"}
# e_machine of each triple: a library taken from a wheel must be for the target.
_ELF_MACHINES = {"aarch64-linux-gnu": 183}  # EM_AARCH64
# What each wheel gives the bundle: (distribution, file in the wheel).
_LIBRARIES = (
    ("apache-tvm", "tvm/lib/libtvm_runtime.so"),
    ("apache-tvm-ffi", "tvm_ffi/lib/libtvm_ffi.so"),
)
DOWNLOAD_TIMEOUT_S = 600.0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_file(directory: Path, distribution: str, version: str) -> Path | None:
    stem = f"{distribution.replace('-', '_')}-{version}-"
    found = sorted(directory.glob(f"{stem}*.whl")) if directory.is_dir() else []
    return found[0] if found else None


def target_wheels(wheel: TvmWheel, platform: str, cache: Path) -> list[Path]:
    """The registry's ``platform`` wheels of the installed apache-tvm and apache-tvm-ffi
    versions, downloaded into the cache on first use."""
    versions = {"apache-tvm": wheel.tvm_version, "apache-tvm-ffi": wheel.tvm_ffi_version}
    if "unknown" in versions.values():
        raise JobError(
            "run",
            "the installed TVM was not installed from a wheel (its version is unknown), so "
            f"there are no registry wheels of it for {platform}; install apache-tvm and "
            "apache-tvm-ffi from the registry",
        )
    directory = cache / "wheels" / platform
    found = {d: _wheel_file(directory, d, v) for d, v in versions.items()}
    missing = [f"{d}=={versions[d]}" for d, path in found.items() if path is None]
    if missing:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=directory) as tmp:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--platform",
                platform,
                "--only-binary=:all:",
                "--no-deps",
                "-d",
                tmp,
                *missing,
            ]
            log.info("fetching the %s TVM runtime: %s", platform, " ".join(command))
            try:
                proc = subprocess.run(
                    command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S
                )
            except subprocess.TimeoutExpired:
                raise InfrastructureError(
                    f"downloading the {platform} wheels of {', '.join(missing)} took over "
                    f"{DOWNLOAD_TIMEOUT_S:.0f} s",
                    stage="run",
                ) from None
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
                raise InfrastructureError(
                    f"cannot download the {platform} wheels of {', '.join(missing)} (the "
                    "runtime for the device comes from them): "
                    f"{one_line(' '.join(lines) or proc.stderr, 300)}",
                    stage="run",
                )
            for path in Path(tmp).glob("*.whl"):
                os.replace(path, directory / path.name)  # atomic: a reader sees it whole
        found = {d: _wheel_file(directory, d, v) for d, v in versions.items()}
    wheels = [path for path in found.values() if path is not None]
    if len(wheels) != len(versions):
        raise InfrastructureError(
            f"pip did not fetch the {platform} wheels of {', '.join(missing)}", stage="run"
        )
    return wheels


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        return -1
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def target_libraries(toolchain: CrossToolchain, cache: Path) -> list[Path]:
    """``libtvm_runtime.so`` and ``libtvm_ffi.so`` for ``toolchain``'s target, taken out of
    the registry's wheels of the installed versions (cached by the wheels' hashes)."""
    platform = PLATFORMS.get(toolchain.triple)
    if platform is None:
        raise HarnessBug(f"no wheel platform known for {toolchain.triple}")
    wheels = target_wheels(tvm_wheel(), platform, cache)
    key = hashlib.sha256("".join(_sha256(w) for w in wheels).encode()).hexdigest()[:16]
    final = cache / "runtime-libs" / f"{platform}-{key}"
    libs = [final / Path(member).name for _, member in _LIBRARIES]
    if all(lib.is_file() for lib in libs):
        return libs
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=final.parent) as tmp:
        staged = Path(tmp) / "libs"
        staged.mkdir()
        for wheel_path, (distribution, member) in zip(wheels, _LIBRARIES, strict=True):
            try:
                with (
                    zipfile.ZipFile(wheel_path) as archive,
                    archive.open(member) as source,
                    open(staged / Path(member).name, "wb") as out,
                ):
                    shutil.copyfileobj(source, out)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise InfrastructureError(
                    f"the {distribution} wheel {wheel_path.name} has no usable {member}: {exc}",
                    stage="run",
                ) from None
            lib = staged / Path(member).name
            if _elf_machine(lib) != _ELF_MACHINES[toolchain.triple]:
                raise InfrastructureError(
                    f"{member} of {wheel_path.name} is not an {toolchain.triple} library",
                    stage="run",
                )
        try:
            os.rename(staged, final)  # atomic; a concurrent extractor that got there first wins
        except OSError:
            if not all(lib.is_file() for lib in libs):
                raise
    return libs


def cross_bundle_files(
    target: str, toolchain: CrossToolchain, cache_dir: Path | None = None
) -> list[Path]:
    """The runtime bundle of ``target`` (runner first, then its libraries), built by
    ``toolchain`` on first use and cached."""
    if not RUNNER_SOURCE.is_file():
        raise HarnessBug(f"runner source {RUNNER_SOURCE} is missing from the installed package")
    compiler = toolchain.tool("g++", stage="run")
    cache = cache_dir if cache_dir is not None else get_settings().cache_path
    libs = target_libraries(toolchain, cache)
    wheel = tvm_wheel()
    digest = hashlib.sha256(RUNNER_SOURCE.read_bytes())
    for flag in compile_flags(Path("SOURCE"), Path("OUTPUT"), wheel, lib_dirs=[Path("LIBS")]):
        digest.update(b"\0" + flag.encode())
    digest.update(f"\0{toolchain.version()}\0{libs[0].parent.name}".encode())
    root = cache / f"runner-{target}"
    final = root / digest.hexdigest()[:24]
    files = [final / RUNNER_NAME, *(final / lib.name for lib in libs)]
    if all(f.is_file() for f in files):
        return files

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as tmp:
        staged = Path(tmp) / "bundle"
        staged.mkdir()
        for lib in libs:
            shutil.copy2(lib, staged / lib.name)
        command = [
            compiler,
            *compile_flags(RUNNER_SOURCE, staged / RUNNER_NAME, wheel, lib_dirs=[staged]),
        ]
        log.info("building the %s runner: %s", target, " ".join(command))
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise InfrastructureError(
                f"cross-compiling the runner took over {COMPILE_TIMEOUT_S:.0f} s", stage="run"
            ) from exc
        if proc.returncode != 0 or not (staged / RUNNER_NAME).is_file():
            raise HarnessBug(
                f"the runner does not build for {target} with {Path(compiler).name}: "
                f"{first_error_line(proc.stderr)}"
            )
        try:
            os.rename(staged, final)
        except OSError:
            if not all(f.is_file() for f in files):
                raise
    log.info("%s runner bundle ready at %s", target, final)
    return files
