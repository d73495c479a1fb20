"""Compile targets, as TVM target dicts (TVM 0.27 refuses the old CLI string form)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.compile.records import TvmTarget
from harness.errors import JobError


@dataclass(frozen=True)
class TargetSpec:
    """A named compile target: its TVM dict, and how its library is packaged."""

    name: str
    tvm: TvmTarget
    library: str  # file name of the loadable library in an artifact
    needs_ndk: bool

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
}


def get_target(name: str) -> TargetSpec:
    try:
        return TARGETS[name]
    except KeyError:
        raise JobError(
            "compile", f"unknown target {name!r}; known targets: {', '.join(TARGETS)}"
        ) from None
