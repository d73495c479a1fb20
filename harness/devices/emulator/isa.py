"""An emulated phone of another instruction set: the arm64 phone on an x86-64 machine.

Its programs are executed by Debian's qemu-user (``qemu-aarch64 -L /usr/aarch64-linux-gnu``,
the aarch64 glibc and libstdc++ of the cross toolchain's packages), started by the phone's own
exec path: ``isa_exec.c``, built here with this machine's C compiler and preloaded into every
command the phone runs. An ELF file of the phone's machine goes to qemu in the same process (its
pid, argv[0] and environment kept); any other ELF file in the phone's storage (``/data``,
``/sdcard``) fails with "Exec format error", as an x86-64 binary does on a phone; the phone's
shell and tools (this machine's) run as before. That works inside the phone's namespaces, with
no host-wide set-up: binfmt_misc registrations are host-wide (and often not allowed in a
container or on CI), and could not refuse this machine's binaries in ``/data``.

On a machine whose instruction set is the phone's, nothing is emulated: the phone runs its
programs natively, and says so (no ``ro.edgefarm.isa_emulator``).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from harness.errors import InfrastructureError
from harness.toolchain import AARCH64_LINUX_GNU, CrossToolchain

log = logging.getLogger(__name__)

Isa = Literal["host", "arm64"]
ISAS: tuple[str, ...] = get_args(Isa)
SHIM_SOURCE = Path(__file__).with_name("isa_exec.c")
# Inside the phone the shim sits in /system/bin (the emulator's bin directory, read-only).
SHIM_PREFIX = "edgefarm-isa-exec"
_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")


@dataclass(frozen=True)
class IsaSpec:
    """An instruction set an emulated phone can execute, and what executes it elsewhere."""

    name: Isa
    abi: str  # Android's name: arm64-v8a
    machines: tuple[str, ...]  # platform.machine() of a host that runs it natively
    target: str  # the compile target its programs are built for
    elf_machine: int  # e_machine of its ELF files
    qemu: tuple[str, ...]  # qemu-user's programs for it, preferred first
    toolchain: CrossToolchain  # whose sysroot qemu loads the C and C++ libraries from

    @property
    def native(self) -> bool:
        """This machine executes it itself."""
        return platform.machine().lower() in self.machines


ARM64 = IsaSpec(
    name="arm64",
    abi="arm64-v8a",
    machines=("aarch64", "arm64"),
    target="linux-arm64",
    elf_machine=183,  # EM_AARCH64
    qemu=("qemu-aarch64", "qemu-aarch64-static"),
    toolchain=AARCH64_LINUX_GNU,
)
SPECS: dict[str, IsaSpec] = {"arm64": ARM64}


@dataclass(frozen=True)
class IsaEmulation:
    """What executes a phone's programs on this machine: qemu-user, and the exec path
    (``shim``, this machine's shared library) that hands them to it."""

    spec: IsaSpec
    qemu: Path
    version: str  # "qemu-aarch64 7.2.22"
    shim: Path


def _qemu(spec: IsaSpec) -> Path | None:
    for name in spec.qemu:
        found = shutil.which(name)
        if found:
            return Path(found).resolve()
    return None


def _qemu_version(qemu: Path) -> str:
    try:
        out = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return qemu.name
    words = out.stdout.split()
    # "qemu-aarch64 version 7.2.22 (Debian ...)"
    return f"{qemu.name} {words[2]}" if len(words) > 2 and words[1] == "version" else qemu.name


def missing_tools(spec: IsaSpec) -> list[str]:
    """What this machine lacks to run a ``spec`` phone, each naming its Debian package; empty
    when nothing is missing (or nothing needs emulating)."""
    if spec.native:
        return []
    missing = []
    if _qemu(spec) is None:
        missing.append(f"{spec.qemu[0]} (Debian's qemu-user, or qemu-user-static)")
    sysroot = spec.toolchain.sysroot
    if not any((sysroot / "lib").glob("ld-linux-*.so.*")):
        missing.append(
            f"the {spec.toolchain.triple} C library in {sysroot} (Debian's "
            f"libc6-{spec.name}-cross, which {spec.toolchain.package} brings)"
        )
    if not (sysroot / "lib" / "libstdc++.so.6").is_file():
        missing.append(
            f"the {spec.toolchain.triple} C++ library in {sysroot} (Debian's "
            f"libstdc++6-{spec.name}-cross, which {spec.toolchain.package} brings)"
        )
    if shutil.which("gcc") is None:
        missing.append("a C compiler, gcc (Debian's gcc), to build the phone's exec path")
    return missing


def emulation(spec: IsaSpec, bin_dir: Path) -> IsaEmulation | None:
    """How this machine executes ``spec`` programs: None when natively; else qemu-user and
    the exec path, built into ``bin_dir`` (the phone's /system/bin). An InfrastructureError
    naming each missing package otherwise."""
    if spec.native:
        return None
    missing = missing_tools(spec)
    if missing:
        raise InfrastructureError(
            f"an emulated {spec.name} phone needs {'; '.join(missing)}: install them "
            f"(apt-get install qemu-user {spec.toolchain.package})"
        )
    qemu = _qemu(spec)
    assert qemu is not None
    if not str(qemu).startswith(_SYSTEM_DIRS):
        raise InfrastructureError(
            f"{qemu} is outside /usr: the phone's confined shell would not see it; install "
            "Debian's qemu-user"
        )
    return IsaEmulation(spec, qemu, _qemu_version(qemu), build_shim(spec, qemu, bin_dir))


def build_shim(spec: IsaSpec, qemu: Path, bin_dir: Path) -> Path:
    """``isa_exec.c`` built for ``spec`` and ``qemu`` into ``bin_dir`` (kept while its source
    and settings are the same; older builds removed)."""
    defines = [
        f'-DEDGEFARM_QEMU="{qemu}"',
        f'-DEDGEFARM_SYSROOT="{spec.toolchain.sysroot}"',
        f"-DEDGEFARM_MACHINE={spec.elf_machine}",
    ]
    digest = hashlib.sha256(SHIM_SOURCE.read_bytes())
    digest.update("\0".join(defines).encode())
    shim = bin_dir / f"{SHIM_PREFIX}-{digest.hexdigest()[:12]}.so"
    if shim.is_file():
        return shim
    with tempfile.TemporaryDirectory(prefix=".shim-", dir=bin_dir) as tmp:
        staged = Path(tmp) / shim.name
        command = [
            "gcc",
            "-shared",
            "-fPIC",
            "-O2",
            *defines,
            "-o",
            str(staged),
            str(SHIM_SOURCE),
            "-ldl",
        ]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InfrastructureError(f"cannot build the phone's exec path: {exc}") from None
        if proc.returncode != 0:
            raise InfrastructureError(
                f"the phone's exec path ({SHIM_SOURCE.name}) does not build: "
                f"{proc.stderr.strip()[-300:]}"
            )
        for old in bin_dir.glob(f"{SHIM_PREFIX}-*.so"):
            old.unlink(missing_ok=True)
        staged.rename(shim)
    log.info("built the %s exec path %s (%s)", spec.name, shim, qemu)
    return shim
