"""Linking Android artifacts with the NDK's clang (the wheel has no ``tvm.contrib.ndk``)."""

from __future__ import annotations

import logging
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import JobError, one_line

log = logging.getLogger(__name__)

HOST_TAG = "linux-x86_64"


def find_clang(ndk_home: Path | None, api_level: int) -> Path:
    """The NDK's clang++ for aarch64 Android at ``api_level``; a JobError says how to get it."""
    if ndk_home is None:
        raise JobError(
            "link",
            "building for android-arm64 needs the Android NDK to link the library: install it "
            "and set ANDROID_NDK_HOME (or EDGEFARM_ANDROID_NDK_HOME) to its directory",
        )
    clang = (
        ndk_home
        / "toolchains"
        / "llvm"
        / "prebuilt"
        / HOST_TAG
        / "bin"
        / f"aarch64-linux-android{api_level}-clang++"
    )
    if not clang.exists():
        raise JobError(
            "link",
            f"ANDROID_NDK_HOME={ndk_home} has no {clang.name} (expected at {clang}); "
            "is it an NDK r23 or newer?",
        )
    return clang


def link_archive(
    archive: Path,
    output: Path,
    *,
    clang: Path,
    include_dirs: list[Path],
    extra_args: list[str] | None = None,
    timeout_s: float = 600.0,
) -> None:
    """Link the objects (and C sources, for BYOC) of an exported ``.tar`` into a shared library."""
    with tempfile.TemporaryDirectory(prefix="edgefarm-link-") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        inputs = sorted(
            str(p) for p in Path(tmp).iterdir() if p.suffix in (".o", ".c", ".cc", ".cpp")
        )
        cmd = [
            str(clang),
            "-shared",
            "-fPIC",
            "-O2",
            "-static-libstdc++",
            *[f"-I{d}" for d in include_dirs],
            "-o",
            str(output),
            *inputs,
            *(extra_args or []),
        ]
        log.info("linking %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise JobError(
                "link", f"the NDK link of {archive.name} ran past {timeout_s:.0f} s"
            ) from None
        if proc.returncode != 0:
            first = next(
                (ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[-300:]
            )
            raise JobError(
                "link", f"the NDK's clang failed to link {archive.name}: {one_line(first)}"
            )


def ndk_fcompile(clang: Path) -> Any:
    """TVM's ``export_library`` compile function that links with the NDK's ``clang``: a tuning
    candidate (one TIR function's objects) as a shared library for an Android phone, with
    the C++ library static as :func:`link_archive` links a model's."""
    from tvm.support.cc import create_shared, get_target_by_dump_machine

    def fcompile(output: str, objects: list[str], options: list[str] | None = None) -> None:
        create_shared(
            output, objects, options=[*(options or []), "-static-libstdc++"], cc=str(clang)
        )

    fcompile.output_format = "so"  # type: ignore[attr-defined]
    fcompile.get_target_triple = get_target_by_dump_machine(str(clang))  # type: ignore[attr-defined]
    return fcompile
