"""Compile targets, as TVM target dicts (TVM 0.27 refuses the old CLI string form)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.compile.records import TvmTarget
from harness.errors import JobError
from harness.toolchain import AARCH64_LINUX_GNU, CrossToolchain


@dataclass(frozen=True)
class TargetSpec:
    """A named compile target: its TVM dict, and how its library is packaged: linked by this
    machine's g++, by the NDK's clang (``needs_ndk``), or by a cross ``toolchain``."""

    name: str
    tvm: TvmTarget
    library: str  # file name of the loadable library in an artifact
    needs_ndk: bool
    toolchain: CrossToolchain | None = None

    def tvm_target(self) -> Any:
        """The TVM target; a JobError naming EDGEFARM_HOST_CPU when LLVM does not know the
        CPU it names (LLVM would warn, build generic code and call it that CPU's)."""
        import tvm
        from tvm.target import codegen

        mcpu = self.tvm.get("mcpu")
        if (
            self.name == "host"
            and isinstance(mcpu, str)
            and not codegen.llvm_is_valid_cpu(mcpu, codegen.llvm_get_system_triple())
        ):
            raise JobError(
                "compile",
                f"EDGEFARM_HOST_CPU={mcpu}: LLVM knows no such CPU for this machine "
                "(auto, generic, or an LLVM CPU name such as x86-64-v3 or znver4)",
            )
        return tvm.target.Target(dict(self.tvm))

    @property
    def label(self) -> str:
        """The name with the CPU it generates code for, where that is chosen per machine
        (``host/x86-64-v4``): what artifact and tuning-record keys say, so that builds for
        another CPU are never taken for these."""
        mcpu = self.tvm.get("mcpu")
        return f"{self.name}/{mcpu}" if mcpu else self.name


# The x86-64 micro-architecture levels (the psABI's), each with the CPU flags (as
# /proc/cpuinfo names them) it adds to the one before; LLVM takes the level as -mcpu.
X86_64_LEVELS = (
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
    (
        "x86-64-v3",
        {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    ),
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


def x86_64_level(flags: set[str]) -> str | None:
    """The highest x86-64 level whose flags (and its lower levels') are all in ``flags``."""
    found = None
    needed: set[str] = set()
    for level, adds in X86_64_LEVELS:
        needed |= adds
        if not needed <= flags:
            break
        found = level
    return found


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@lru_cache(maxsize=8)
def host_target(host_cpu: str) -> TargetSpec:
    """The ``host`` target for ``host_cpu`` (the setting EDGEFARM_HOST_CPU). Without a -mcpu
    LLVM generates generic x86-64 code (SSE2): tuned schedules were 2.8x slower than the same
    search with x86-64-v4 on this machine (ds-cnn, README "Tuning")."""
    if host_cpu == "auto":
        machine = platform.machine().lower()
        mcpu = x86_64_level(_cpu_flags()) if machine in ("x86_64", "amd64") else None
    else:
        mcpu = None if host_cpu == "generic" else host_cpu
    tvm: TvmTarget = {"kind": "llvm", "mcpu": mcpu} if mcpu else {"kind": "llvm"}
    return TargetSpec("host", tvm, library="lib.so", needs_ndk=False)


TARGETS: dict[str, TargetSpec] = {
    "android-arm64": TargetSpec(
        "android-arm64",
        {"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]},
        library="lib.so",
        needs_ndk=True,
    ),
    # aarch64 with glibc: the arm64 emulated phone (qemu-user), or an arm64 Linux board. The
    # same code generation as android-arm64; a different C library and linker (not the NDK).
    "linux-arm64": TargetSpec(
        "linux-arm64",
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
        library="lib.so",
        needs_ndk=False,
        toolchain=AARCH64_LINUX_GNU,
    ),
}


def get_target(name: str) -> TargetSpec:
    """The target called ``name``; ``host`` is this machine's CPU (see :func:`host_target`)."""
    if name == "host":
        from harness.config import get_settings

        return host_target(get_settings().host_cpu)
    try:
        return TARGETS[name]
    except KeyError:
        raise JobError(
            "compile", f"unknown target {name!r}; known targets: host, {', '.join(TARGETS)}"
        ) from None
