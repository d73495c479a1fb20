"""Builds the runner bundle for Android arm64 with the NDK and CMakeLists.txt (see ANDROID.md).

The bundle is the runner, libtvm_runtime.so and libtvm_ffi.so compiled from the installed
wheel's sources, and the NDK's libc++_shared.so. The wheel omits a few headers those sources
include; a checkout of apache/tvm at the wheel's commit provides them, by default in
``<EDGEFARM_HOME>/tvm-source``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.config import get_settings
from harness.errors import HarnessBug, InfrastructureError, JobError, one_line
from harness.runner.build import RUNNER_NAME, RUNNER_SOURCE, tvm_wheel

log = logging.getLogger(__name__)

CMAKE_LISTS = Path(__file__).with_name("CMakeLists.txt")
ANDROID_ABI = "arm64-v8a"
BUNDLE_FILES = (RUNNER_NAME, "libtvm_runtime.so", "libtvm_ffi.so", "libc++_shared.so")
BUILD_TIMEOUT_S = 3600.0


def _ndk_revision(ndk: Path) -> str:
    props = ndk / "source.properties"
    if props.is_file():
        for line in props.read_text(errors="replace").splitlines():
            if line.startswith("Pkg.Revision"):
                return line.split("=", 1)[-1].strip()
    return "unknown"


def _first_line(text: str, marker: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if marker in ln:
            # CMake puts the message on the lines after "CMake Error at ...".
            return one_line(" ".join(lines[i : i + 4]), 400)
    return one_line(" ".join(lines[-3:]), 400) if lines else "(no output)"


def _run(command: list[str], what: str) -> subprocess.CompletedProcess[str]:
    log.info("%s: %s", what, " ".join(command))
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise InfrastructureError(f"{what} ran past {BUILD_TIMEOUT_S:.0f} s") from exc


def android_bundle_files(
    cache_dir: Path | None = None, *, tvm_source_dir: Path | None = None
) -> list[Path]:
    """The Android arm64 runner bundle (runner first), built with the NDK on first use."""
    settings = get_settings()
    ndk = settings.android_ndk_home
    if ndk is None:
        raise JobError(
            "run",
            "running on an Android phone needs the runner built with the Android NDK: install "
            "it and set ANDROID_NDK_HOME (or EDGEFARM_ANDROID_NDK_HOME)",
        )
    toolchain = ndk / "build" / "cmake" / "android.toolchain.cmake"
    if not toolchain.is_file():
        raise JobError("run", f"ANDROID_NDK_HOME={ndk} has no build/cmake/android.toolchain.cmake")
    wheel = tvm_wheel()
    source = tvm_source_dir or settings.home / "tvm-source"
    if not (source / "include" / "tvm" / "support" / "io.h").is_file():
        raise JobError(
            "run",
            f"building the TVM runtime for Android needs an apache/tvm checkout at the wheel's "
            f"commit in {source} (the wheel omits headers its sources include); see "
            "harness/runner/ANDROID.md",
        )
    cmake = shutil.which("cmake")
    if cmake is None:
        raise InfrastructureError("cmake is not installed; install it (apt-get install cmake)")

    api = settings.android_api_level
    digest = hashlib.sha256()
    for part in (RUNNER_SOURCE.read_bytes(), CMAKE_LISTS.read_bytes()):
        digest.update(part)
    digest.update(
        f"\0{wheel.tvm_version}\0{wheel.tvm_ffi_version}\0{ndk}\0{_ndk_revision(ndk)}"
        f"\0{api}\0{ANDROID_ABI}\0{source.resolve()}".encode()
    )
    root = (cache_dir if cache_dir is not None else settings.cache_path) / "runner-android"
    final = root / digest.hexdigest()
    files = [final / name for name in BUNDLE_FILES]
    if all(f.is_file() for f in files):
        return files

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as tmp:
        build = Path(tmp) / "build"
        configure = _run(
            [
                cmake,
                "-S",
                str(CMAKE_LISTS.parent),
                "-B",
                str(build),
                f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
                f"-DANDROID_ABI={ANDROID_ABI}",
                f"-DANDROID_PLATFORM=android-{api}",
                "-DANDROID_STL=c++_shared",
                "-DCMAKE_BUILD_TYPE=Release",
                f"-DPython3_EXECUTABLE={sys.executable}",
                f"-DEDGEFARM_TVM_DIR={wheel.tvm_dir}",
                f"-DEDGEFARM_TVM_FFI_DIR={wheel.tvm_ffi_dir}",
                f"-DTVM_SOURCE_DIR={source}",
            ],
            "configuring the Android runner",
        )
        if configure.returncode != 0:
            raise InfrastructureError(
                "configuring the Android runner failed: "
                + _first_line(configure.stderr + configure.stdout, "CMake Error")
            )
        jobs = str(os.cpu_count() or 2)
        compiled = _run(
            [cmake, "--build", str(build), "--parallel", jobs], "building the Android runner"
        )
        if compiled.returncode != 0:
            raise HarnessBug(
                "the Android runner does not build: "
                + _first_line(compiled.stdout + compiled.stderr, "error")
            )
        staged = Path(tmp) / "bundle"
        staged.mkdir()
        for name in BUNDLE_FILES:
            built = build / "bundle" / name
            if not built.is_file():
                raise HarnessBug(f"the Android build did not produce {name}")
            shutil.copy2(built, staged / name)
        try:
            # A directory rename is atomic; a concurrent builder that got there first wins.
            os.rename(staged, final)
        except OSError:
            if not all(f.is_file() for f in files):
                raise
    log.info("Android runner bundle ready at %s", final)
    return files
