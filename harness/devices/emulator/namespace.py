"""Namespace isolation: the mount plan of the phone's root and the process that holds it.

:func:`start_holder` runs :mod:`.nsinit` under ``unshare --user --mount --net --ipc --uts``
with the plan of :func:`namespace_plan`; the :class:`NamespaceHolder` it returns keeps those
namespaces alive, and every shell command of the phone joins them with ``nsenter``
(:meth:`NamespaceHolder.enter`). Whether the result really confines is checked apart, from
outside (:mod:`.confinement`).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nsinit stands alone; it is run, not imported
    from .nsinit import Plan, Step

SHELL_UID = 2000  # AID_SHELL: who `adb shell` runs as on a user build
# Writable inside the phone besides its storage: the plan's own tmpfs mounts, never the host's.
PRIVATE_TMPFS = ("/dev/shm",)
_SHM_OPTIONS = "mode=1777,size=64m"
_HOST_TOP_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_NSINIT = Path(__file__).with_name("nsinit.py")
_READY_TIMEOUT_S = 15.0


class ConfinementError(RuntimeError):
    """The namespaces exist but the phone's confinement could not be built or checked."""


class NamespacesUnavailable(Exception):
    """This host cannot make the namespaces at all (the message says why)."""


def namespace_plan(phone_root: Path, rootfs: Path, system_bin: Path) -> Plan:
    """What nsinit builds at ``rootfs``: the phone's root on a private tmpfs, everything
    read-only except /data and /sdcard (``phone_root``'s) and a private /dev/shm."""
    r = str(rootfs)
    steps: list[Step] = []

    def at(rel: str) -> str:
        return f"{r}/{rel}"

    def mkdir(rel: str) -> None:
        steps.append({"op": "mkdir", "target": at(rel)})

    def bind(src: str, rel: str, *, readonly: bool = True, device: bool = False) -> None:
        steps.append(
            {"op": "bind", "source": src, "target": at(rel), "readonly": readonly, "device": device}
        )

    steps.append({"op": "tmpfs", "target": r, "options": "mode=755,size=1m"})
    for d in ("usr", "etc", "proc", "dev", "data", "sdcard", "sys", "system", "system/bin"):
        mkdir(d)
    bind("/usr", "usr")
    bind("/etc", "etc")
    for name in _HOST_TOP_LINKS:
        host = Path("/") / name
        if host.is_symlink():  # merged /usr: bin -> usr/bin
            steps.append({"op": "symlink", "target": at(name), "link_to": os.readlink(host)})
        elif host.is_dir():
            mkdir(name)
            bind(str(host), name)
    # The host's /proc, read-only with everything mounted below it: the shell can read its
    # own processes as on a phone, and change nothing through it.
    bind("/proc", "proc")
    # /dev is a tmpfs of the phone's own: a few device nodes (read-only binds still write to
    # the device) and a private /dev/shm; the host's /dev and /dev/shm stay out.
    steps.append({"op": "tmpfs", "target": at("dev"), "options": "mode=755,size=64k"})
    for node in _DEV_NODES:
        if Path("/dev", node).exists():
            steps.append({"op": "touch", "target": at(f"dev/{node}")})
            bind(f"/dev/{node}", f"dev/{node}", device=True)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        steps.append({"op": "symlink", "target": at(f"dev/{name}"), "link_to": target})
    mkdir("dev/shm")
    steps.append({"op": "tmpfs", "target": at("dev/shm"), "options": _SHM_OPTIONS})
    steps.append({"op": "remount_ro", "target": at("dev")})
    bind(str(phone_root / "data"), "data", readonly=False)
    bind(str(phone_root / "sdcard"), "sdcard", readonly=False)
    # /sys is the emulator's to write (from the host) and only readable inside, as a phone's
    # sysfs is for its shell user.
    bind(str(phone_root / "sys"), "sys")
    bind(str(system_bin), "system/bin")
    steps.append({"op": "remount_ro", "target": r})
    steps.append({"op": "loopback_up"})
    steps.append({"op": "hostname", "name": "localhost"})
    return {"root": r, "steps": steps}


class NamespaceHolder:
    """The running nsinit of one phone: its namespaces and root live as long as it does."""

    def __init__(self, proc: subprocess.Popen[bytes], nsenter: str) -> None:
        self._proc = proc
        self._nsenter = nsenter

    @property
    def pid(self) -> int:
        return self._proc.pid

    def enter(self, command: str, *, preload: str | None = None) -> list[str]:
        """argv that runs ``command`` with ``/bin/sh`` inside the phone's namespaces and root;
        ``preload``: a library (a path inside) preloaded into the shell and what it starts,
        set only once inside (nsenter itself, a host program, must not try to load it)."""
        inside = ["/bin/sh", "-c", command]
        if preload is not None:
            inside = ["/usr/bin/env", f"LD_PRELOAD={preload}", *inside]
        return [
            self._nsenter,
            f"--target={self._proc.pid}",
            "--user",
            "--mount",
            "--net",
            "--ipc",
            "--uts",
            "--root",
            "--wd",
            "--preserve-credentials",
            "--",
            *inside,
        ]

    def stop(self) -> None:
        holder = self._proc
        if holder.stdin is not None:
            holder.stdin.close()  # nsinit sees EOF and exits
        try:
            holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        for pipe in (holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()


def start_holder(phone_root: Path, rootfs: Path, system_bin: Path) -> NamespaceHolder:
    """Start nsinit in fresh namespaces and wait until it has built the phone's root.

    NamespacesUnavailable when this host cannot make the namespaces; ConfinementError when
    they are there but a step of the plan fails."""
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if not (unshare and nsenter):
        raise NamespacesUnavailable("unshare or nsenter is not installed (util-linux)")
    try:
        # Only a mount point: the mounts live in the holder's private mount namespace.
        if rootfs.is_symlink() or not rootfs.is_dir():
            rootfs.unlink(missing_ok=True)
        elif any(rootfs.iterdir()):
            shutil.rmtree(rootfs)  # an older layout's mount points
        rootfs.mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfinementError(f"cannot prepare {rootfs}: {exc}") from None
    # uid 2000 (shell) inside, like a phone's adb shell. Not --map-root-user: root in the
    # namespace could remount the read-only views writable again.
    argv = [
        unshare,
        "--user",
        f"--map-user={SHELL_UID}",
        f"--map-group={SHELL_UID}",
        "--keep-caps",  # nsinit needs the namespace's capabilities to mount
        "--mount",
        "--net",
        "--ipc",
        "--uts",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-I",
        "-S",
        str(_NSINIT),
        json.dumps(namespace_plan(phone_root, rootfs, system_bin)),
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    if not _wait_ready(proc, timeout_s=_READY_TIMEOUT_S):
        proc.kill()
        _out, err = proc.communicate()
        lines = err.decode(errors="replace").strip().splitlines()
        setup_errors = [ln[len("error: ") :] for ln in lines if ln.startswith("error: ")]
        if setup_errors:
            raise ConfinementError(f"cannot confine the phone: {setup_errors[-1]}")
        raise NamespacesUnavailable(
            lines[-1] if lines else f"unshare exited with status {proc.returncode}"
        )
    return NamespaceHolder(proc, nsenter)


def _wait_ready(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once nsinit prints ``ready``; False if it exits or ``timeout_s`` passes first."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                return False
            buf += chunk
            if b"ready\n" in buf:
                return True
        return False
    finally:
        sel.close()
