"""Checks, from outside, that a started namespace sandbox confines the phone's commands.

They do not trust nsinit's own report: the emulator reads the holder's mount table and stats
the phone's storage through ``/proc/PID/root``, then runs a probe command the way every shell
command will run. Each check returns None when it holds, else what is wrong.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .namespace import PRIVATE_TMPFS
from .nsinit import _unescape, mount_id_at
from .paths import WRITABLE_DIRS

_WRITABLE_TREES = tuple(f"/{d}" for d in WRITABLE_DIRS)
PROBE_COMMAND = "test -d /data/local/tmp && test -d /system/bin && echo ok"


@dataclass(frozen=True)
class Mount:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    device: str  # major:minor of the superblock
    point: str
    options: frozenset[str]
    fstype: str

    @property
    def writable(self) -> bool:
        return "rw" in self.options


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split(" ")
        if not sep or len(fields) < 6:
            continue
        mounts.append(
            Mount(
                mount_id=int(fields[0]),
                device=fields[2],
                point=_unescape(fields[4]),
                options=frozenset(fields[5].split(",")),
                fstype=right.split(" ", 1)[0],
            )
        )
    return mounts


def check_mounts(pid: int, phone_root: Path) -> str | None:
    """What a command on the phone (in the namespaces of ``pid``) can reach must be
    read-only, except the phone's storage and its private tmpfs mounts; and the storage at
    /data, /sdcard (and /sys) must be ``phone_root``'s own directories.

    A mount hidden under another one is skipped (no path reaches it)."""
    try:
        mounts = parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())
        host_devices = {m.device for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())}
    except OSError as exc:
        return f"cannot read the phone's mount table: {exc}"
    if not mounts:
        return "the phone's mount table is empty"
    for m in mounts:
        if mount_id_at(f"/proc/{pid}/root{m.point}") != m.mount_id:
            continue
        if not m.writable:
            continue
        if any(m.point == t or m.point.startswith(t + "/") for t in _WRITABLE_TREES):
            continue
        if m.point in PRIVATE_TMPFS and m.fstype == "tmpfs":
            if m.device in host_devices:
                return f"{m.point} inside the phone is a host filesystem ({m.device})"
            continue
        return f"{m.point} is writable from inside the phone (a read-only remount failed)"
    # The storage bound at /data and /sdcard must be the phone root's own directories, not
    # wherever a planted symlink pointed.
    for top in ("data", "sdcard", "sys"):
        try:
            inside = os.stat(f"/proc/{pid}/root/{top}")
            mine = os.lstat(phone_root / top)
        except OSError as exc:
            return f"cannot check /{top}: {exc}"
        if (inside.st_dev, inside.st_ino) != (mine.st_dev, mine.st_ino):
            return f"/{top} inside the phone is not {phone_root / top}"
    return None


def check_shell(argv: list[str], env: dict[str, str], cwd: Path | None) -> str | None:
    """Run :data:`PROBE_COMMAND` as given (argv, env, cwd of a phone's shell command): the
    phone's directories must be where a phone has them."""
    try:
        res = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"probe failed: {exc}"
    if res.stdout.strip() != b"ok":
        return f"probe failed: {res.stderr.decode(errors='replace').strip()[:200]}"
    return None
