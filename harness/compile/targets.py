"""Compile targets, as TVM target dicts (TVM 0.27 refuses the old CLI string form)."""

from __future__ import annotations

from dataclasses import dataclass
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
        import tvm

        return tvm.target.Target(dict(self.tvm))


TARGETS: dict[str, TargetSpec] = {
    "host": TargetSpec("host", {"kind": "llvm"}, library="lib.so", needs_ndk=False),
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
    try:
        return TARGETS[name]
    except KeyError:
        raise JobError(
            "compile", f"unknown target {name!r}; known targets: {', '.join(TARGETS)}"
        ) from None
