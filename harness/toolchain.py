"""Cross toolchains: the compilers that build for a device whose instruction set is not this
machine's, and the system libraries such a device runs on.

Debian packages the one edgefarm uses, for aarch64 with glibc (the arm64 emulated phone's
target, ``linux-arm64``): ``g++-aarch64-linux-gnu`` brings ``aarch64-linux-gnu-gcc``, ``-g++``
and ``-ar``, and with them the aarch64 glibc and libstdc++ (``libc6-arm64-cross``,
``libstdc++6-arm64-cross``) under ``/usr/aarch64-linux-gnu``, the root qemu-user loads them from.
A real Android phone needs the NDK instead (bionic, not glibc): see harness/runner/ANDROID.md.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import JobError, Stage


@dataclass(frozen=True)
class CrossToolchain:
    """The GNU cross toolchain for ``triple``, as Debian installs it (``package``)."""

    triple: str  # aarch64-linux-gnu
    package: str  # the Debian package that installs the compilers

    @property
    def sysroot(self) -> Path:
        """Where the target's C and C++ libraries are (qemu-user's ``-L``)."""
        return Path("/usr") / self.triple

    def tool(self, name: str, *, stage: Stage) -> str:
        """The path of ``<triple>-<name>`` (``g++``, ``gcc``, ``ar``); a JobError at ``stage``
        naming the package when it is not installed."""
        command = f"{self.triple}-{name}"
        found = shutil.which(command)
        if found is None:
            raise JobError(
                stage,
                f"building for {self.triple} needs the cross compiler {command}, which is not "
                f"installed: install Debian's {self.package} (apt-get install {self.package})",
            )
        return found

    def fcompile(self, *, stage: Stage) -> object:
        """TVM's ``export_library`` compile function for this target (its ``g++``), whose
        target triple comes from the compiler itself: TVM takes the triple of the object that
        packs a library's imported modules from an LLVM module when there is one, else from
        the compiler, which must be ours (not the host's)."""
        from tvm.support.cc import cross_compiler, get_target_by_dump_machine

        cc = self.tool("g++", stage=stage)
        return cross_compiler(cc, get_target_triple=get_target_by_dump_machine(cc))

    def missing(self) -> str | None:
        """None when the compilers are installed; else what to install."""
        if all(shutil.which(f"{self.triple}-{name}") for name in ("gcc", "g++", "ar")):
            return None
        return f"the cross compiler {self.triple}-g++ (Debian's {self.package})"

    def version(self) -> str:
        """The first line of ``<triple>-g++ --version`` (the artifact's provenance)."""
        try:
            out = subprocess.run(
                [f"{self.triple}-g++", "--version"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.splitlines()[0] if out.stdout else ""


AARCH64_LINUX_GNU = CrossToolchain("aarch64-linux-gnu", "g++-aarch64-linux-gnu")
