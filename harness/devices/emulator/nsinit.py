"""Build the emulated phone's root inside its fresh namespaces, then hold them open.

Run by :class:`~.sandbox.Sandbox` as ``unshare --user --mount --net --ipc --uts ... --
python -I -S nsinit.py PLAN`` (PLAN is JSON): it is the namespaces' first process, with the
user namespace's capabilities, and the host's files still in view. It carries out the plan's
steps in order (fresh tmpfs mounts, directories, symlinks, bind mounts made read-only, ``lo``
up), chroots into the new root, prints ``ready`` and then waits for its stdin to close; every
shell command of the phone joins these namespaces and this root with ``nsenter``.

It stands alone (standard library only, no ``harness`` import): it runs with ``-I -S`` under
a uid that only exists inside the user namespace. Any step that fails ends it with one line
``error: WHAT: WHY`` on stderr and status 1: the phone must not run commands in a root that
is only partly confined.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import os
import socket
import struct
import sys
from typing import Required, TypedDict


class Step(TypedDict, total=False):
    """One step of a plan: ``op`` and the arguments that op takes."""

    op: Required[str]  # tmpfs mkdir symlink touch bind remount_ro loopback_up hostname
    target: str
    options: str  # tmpfs
    mode: int  # mkdir
    link_to: str  # symlink
    source: str  # bind
    readonly: bool  # bind
    device: bool  # bind
    name: str  # hostname


class Plan(TypedDict):
    """What to build (``json.dumps``'d into argv[1]): the new root, and the steps in order."""

    root: str
    steps: list[Step]


# <sys/mount.h>
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_RELATIME = 0x200000
# statvfs f_flag bit -> the mount flag that keeps it on a remount. A user namespace may not
# clear flags its parent set (the kernel locks them), so a remount repeats them all.
_KEPT_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
    (0x2000, MS_NOSYMFOLLOW),  # ST_NOSYMFOLLOW (Linux 5.10), not in Python's os module
)
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class StepError(Exception):
    pass


_root = "/"  # the new root, as the host sees it; messages name paths as the phone sees them


def _phone(path: str) -> str:
    if path == _root:
        return "/"
    return path[len(_root) :] if path.startswith(_root + "/") else path


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(mountinfo: str, top: str) -> list[tuple[int, str]]:
    """(mount id, mount point) of every mount at ``top`` or below it, parents first."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == top or point.startswith(top.rstrip("/") + "/"):
            found.append((int(fields[0]), point))
    return found


def mount_id_at(path: str) -> int | None:
    """The id of the mount that ``path`` reaches (None if it cannot be opened)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    return None


def _kept_flags(path: str) -> int:
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _KEPT_FLAGS if f_flag & st)


def bind(source: str, target: str, *, readonly: bool, device: bool) -> None:
    """Bind ``source`` (and the mounts below it) at ``target``; then set read-only (or not),
    nosuid and (except for device nodes) nodev on every mount of the new tree that a path can
    reach. Mounts hidden under another mount are left alone: nothing can reach them."""
    try:
        _mount(source, target, None, MS_BIND | MS_REC, None)
    except OSError as exc:
        raise StepError(f"binding {source} at {_phone(target)}: {exc.strerror}") from None
    with open("/proc/self/mountinfo") as f:
        tree = mounts_under(f.read(), target)
    extra = (MS_RDONLY if readonly else 0) | MS_NOSUID | (0 if device else MS_NODEV)
    for mount_id, point in tree:
        if mount_id_at(point) != mount_id:
            continue
        try:
            flags = MS_REMOUNT | MS_BIND | extra | _kept_flags(point)
            _mount("none", point, None, flags, None)
        except OSError as exc:
            what = "read-only" if readonly else "nosuid,nodev"
            raise StepError(
                f"the {what} remount of {_phone(point)} (bound from {source}) failed: "
                f"{exc.strerror}"
            ) from None


def tmpfs(target: str, options: str) -> None:
    try:
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)
    except OSError as exc:
        raise StepError(f"mounting a tmpfs at {_phone(target)}: {exc.strerror}") from None


def remount_readonly(target: str) -> None:
    """Make one of our own tmpfs mounts read-only once it is populated."""
    try:
        _mount("none", target, None, MS_REMOUNT | MS_RDONLY | _kept_flags(target), None)
    except OSError as exc:
        raise StepError(
            f"the read-only remount of {_phone(target)} failed: {exc.strerror}"
        ) from None


def loopback_up() -> None:
    """The phone's network namespace starts with ``lo`` down; a phone has it up."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sH22x", b"lo", 0)
            flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
    except OSError as exc:
        raise StepError(f"bringing up lo: {exc.strerror}") from None


def run_step(step: Step) -> None:
    op = step["op"]
    if op == "tmpfs":
        tmpfs(step["target"], step["options"])
    elif op == "mkdir":
        os.mkdir(step["target"], step.get("mode", 0o755))
    elif op == "symlink":
        os.symlink(step["link_to"], step["target"])
    elif op == "touch":
        os.close(os.open(step["target"], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    elif op == "bind":
        bind(step["source"], step["target"], readonly=step["readonly"], device=step["device"])
    elif op == "remount_ro":
        remount_readonly(step["target"])
    elif op == "loopback_up":
        loopback_up()
    elif op == "hostname":
        socket.sethostname(step["name"])
    else:
        raise StepError(f"unknown step {op!r}")


def main(argv: list[str]) -> int:
    global _root
    plan: Plan = json.loads(argv[1])
    _root = plan["root"]
    try:
        for step in plan["steps"]:
            try:
                run_step(step)
            except OSError as exc:  # mkdir, symlink, touch, sethostname
                target = _phone(step.get("target", ""))
                raise StepError(f"{step['op']} {target}: {exc.strerror}") from None
        try:
            os.chroot(plan["root"])
            os.chdir("/")
        except OSError as exc:
            raise StepError(f"chroot {plan['root']}: {exc.strerror}") from None
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # Hold the namespaces until the emulator closes our stdin (or goes away).
    while os.read(0, 65536):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
