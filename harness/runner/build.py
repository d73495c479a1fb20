"""Builds the native runner for this machine, against the installed TVM wheel.

The binary is cached under ``<cache>/runner/<key>/edgefarm-runner``; the key hashes the source,
the compiler command line and the TVM versions, so a new wheel or a changed runner.cc builds
anew. It finds ``libtvm_runtime.so`` and ``libtvm_ffi.so`` next to itself first (``$ORIGIN``, for
a bundle pushed to a device), through ``LD_LIBRARY_PATH``, then in the wheel's own directories.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.config import get_settings
from harness.errors import HarnessBug, InfrastructureError, one_line

log = logging.getLogger(__name__)

RUNNER_NAME = "edgefarm-runner"
RUNNER_SOURCE = Path(__file__).with_name("runner.cc")
COMPILER = "g++"
COMPILE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class TvmWheel:
    """Where the installed TVM wheel keeps what the runner compiles and links against."""

    tvm_dir: Path
    tvm_ffi_dir: Path
    tvm_version: str
    tvm_ffi_version: str

    @property
    def include_dirs(self) -> list[Path]:
        # dlpack ships inside tvm_ffi/include; older wheels kept it in 3rdparty.
        dirs = [self.tvm_ffi_dir / "include", self.tvm_ffi_dir / "3rdparty" / "dlpack" / "include"]
        return [d for d in dirs if d.is_dir()]

    @property
    def lib_dirs(self) -> list[Path]:
        return [self.tvm_dir / "lib", self.tvm_ffi_dir / "lib"]

    @property
    def runtime_library(self) -> Path:
        return self.tvm_dir / "lib" / "libtvm_runtime.so"

    @property
    def ffi_library(self) -> Path:
        return self.tvm_ffi_dir / "lib" / "libtvm_ffi.so"


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it (importing tvm loads its compiler).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InfrastructureError(
            f"the Python package {name!r} is not installed; install apache-tvm into this "
            "environment (pip install -e .)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tvm_wheel() -> TvmWheel:
    """Locate the installed TVM and TVM-FFI packages (no import of tvm itself)."""
    return TvmWheel(
        tvm_dir=_package_dir("tvm"),
        tvm_ffi_dir=_package_dir("tvm_ffi"),
        tvm_version=_distribution_version("apache-tvm"),
        tvm_ffi_version=_distribution_version("apache-tvm-ffi"),
    )


def runtime_libraries() -> list[Path]:
    """The shared libraries the runner loads at run time, to bundle next to it on a device."""
    wheel = tvm_wheel()
    libs = [wheel.runtime_library, wheel.ffi_library]
    missing = [str(p) for p in libs if not p.is_file()]
    if missing:
        raise InfrastructureError(
            f"the TVM wheel lacks {', '.join(missing)}; reinstall apache-tvm {wheel.tvm_version}"
        )
    return libs


def compile_flags(
    source: Path, output: Path, wheel: TvmWheel, *, lib_dirs: list[Path] | None = None
) -> list[str]:
    """The compiler command line (after the compiler) that builds ``source`` into ``output``:
    against the installed wheel's libraries, or against ``lib_dirs`` (a cross build's, which
    then finds its libraries beside itself only)."""
    if lib_dirs is None:
        lib_dirs = wheel.lib_dirs
        rpath = ":".join(["$ORIGIN", *(str(d) for d in lib_dirs)])
    else:
        rpath = "$ORIGIN"
    return [
        "-std=c++17",
        "-O2",
        *(f"-I{d}" for d in wheel.include_dirs),
        str(source),
        "-o",
        str(output),
        *(f"-L{d}" for d in lib_dirs),
        # Nothing in the runner names a symbol of libtvm_runtime: it is linked for the loaders
        # and the Relax VM its static initialisers register, which --as-needed would drop.
        "-Wl,--no-as-needed",
        "-ltvm_runtime",
        "-ltvm_ffi",
        "-Wl,--as-needed",
        f"-Wl,-rpath,{rpath}",
    ]


def _cache_key(source: Path, wheel: TvmWheel) -> str:
    digest = hashlib.sha256()
    digest.update(source.read_bytes())
    # Flags with placeholder paths: the key must not depend on where the temp build happens.
    for flag in compile_flags(Path("SOURCE"), Path("OUTPUT"), wheel):
        digest.update(b"\0" + flag.encode())
    digest.update(f"\0{COMPILER}\0tvm={wheel.tvm_version}\0ffi={wheel.tvm_ffi_version}".encode())
    return digest.hexdigest()


def first_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower():
            return ln
    return lines[0] if lines else "(the compiler printed nothing)"


def compile_runner(source: Path, cache_dir: Path | None = None) -> Path:
    """Compile a runner source for this machine, or return the cached binary.

    Raises HarnessBug if the source does not compile, InfrastructureError if there is no
    compiler or the wheel's libraries are missing.
    """
    if not source.is_file():
        raise HarnessBug(f"runner source {source} is missing from the installed package")
    wheel = tvm_wheel()
    runtime_libraries()  # fails early, and clearly, on a broken wheel
    root = (cache_dir if cache_dir is not None else get_settings().cache_path) / "runner"
    final = root / _cache_key(source, wheel) / RUNNER_NAME
    if final.is_file() and os.access(final, os.X_OK):
        return final

    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise InfrastructureError(
            f"{COMPILER} is not installed on this machine; install it (apt-get install g++) "
            "to build the native runner"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the final path (same filesystem) and rename: a concurrent builder or user
    # sees either no binary or a complete one.
    with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as tmp:
        output = Path(tmp) / RUNNER_NAME
        command = [compiler, *compile_flags(source, output, wheel)]
        log.info("building the native runner: %s", " ".join(command))
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InfrastructureError(
                f"compiling the runner took over {COMPILE_TIMEOUT_S:.0f} s; the machine is "
                "overloaded"
            ) from exc
        except OSError as exc:
            raise InfrastructureError(f"cannot run {compiler}: {one_line(str(exc))}") from exc
        if proc.returncode != 0 or not output.is_file():
            raise HarnessBug(
                f"the runner {source.name} does not compile: {first_error_line(proc.stderr)}"
            )
        os.replace(output, final)
    log.info("native runner ready at %s", final)
    return final


def build_host_runner(cache_dir: Path | None = None) -> Path:
    """The runner binary for this machine, built on first use and cached.

    ``cache_dir`` defaults to the settings' cache path.
    """
    return compile_runner(RUNNER_SOURCE, cache_dir)
