"""Device paths of an emulated phone, resolved under its root like a chroot, by descriptor.

A device path (``/data/local/tmp/x``) names ``<root>/data/local/tmp/x``. Symlinks are followed
with absolute targets taken as device paths; anything that climbs out of the root or into the
emulator's own state directory is refused (:class:`PathEscapeError`). Resolution holds a
descriptor at each step, so a command on the phone that swaps a directory for a link while the
emulator (root on a farm host) pushes or pulls can make the operation fail, never reach a host
path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STATE_DIRNAME = ".edgefarm-emulator"
# The only places the phone's shell user may write: the phone root's data and sdcard.
WRITABLE_DIRS = ("data", "sdcard")
_MAX_SYMLINKS = 40


class PathEscapeError(Exception):
    """A device path that leaves the sandbox (or reaches the emulator's own state)."""


@dataclass(frozen=True)
class Resolved:
    """A device path resolved by :func:`walk`: act on ``name`` relative to ``dir_fd`` (an
    ``O_PATH`` descriptor, valid inside the ``with``), never on ``host_path``."""

    dir_fd: int
    name: str | None  # None: the path is the directory dir_fd itself
    host_path: Path  # for messages


@contextlib.contextmanager
def walk(
    root: Path,
    device_path: str,
    *,
    follow_last: bool = True,
    create_parents: bool = False,
    for_writing: bool = False,
) -> Iterator[Resolved]:
    """Resolve ``device_path`` under ``root`` (resolved, absolute) like a chroot would,
    holding a descriptor at each step.

    Each directory is opened relative to the one before with ``O_NOFOLLOW``; symlinks are
    read and followed here, absolute targets from the phone's root. ``..`` pops our own
    stack, so nothing climbs above the root, and the state directory is refused.

    ``for_writing``: the phone's shell user can write only under /data and /sdcard (the rest
    is read-only, as on a phone); anything else is OSError(EROFS).
    ``create_parents``: missing directories on the way are made (adb push does).
    A missing directory on the way is FileNotFoundError otherwise."""
    if "\0" in device_path:
        raise PathEscapeError(f"{device_path!r}: invalid path")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[tuple[str, int]] = []  # the directories below the root we are in

    def here() -> int:
        return stack[-1][1] if stack else root_fd

    def writable() -> bool:
        return bool(stack) and stack[0][0] in WRITABLE_DIRS

    try:
        pending = [p for p in device_path.split("/") if p not in ("", ".")]
        final: str | None = None
        links = 0
        while pending:
            comp = pending.pop(0)
            if comp == "..":
                if not stack:
                    raise PathEscapeError(f"{device_path}: path escapes the device's root")
                os.close(stack.pop()[1])
                continue
            if not stack and comp == STATE_DIRNAME:
                raise PathEscapeError(f"{device_path}: Permission denied")
            last = not pending
            try:
                st = os.stat(comp, dir_fd=here(), follow_symlinks=False)
            except FileNotFoundError:
                if last:
                    final = comp
                    break
                if not create_parents:
                    raise
                if not writable():
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), device_path) from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(comp, 0o755, dir_fd=here())
                pending.insert(0, comp)
                continue
            if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise PathEscapeError(f"{device_path}: Too many levels of symbolic links")
                target = os.readlink(comp, dir_fd=here())
                root_prefix = str(root) + "/"
                if target.startswith(root_prefix):  # made by a rewrite-mode shell
                    target = target[len(root_prefix) - 1 :]
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop()[1])
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            if last:
                final = comp
                break
            # Swapped for a link since the stat: ELOOP; for a file: ENOTDIR. Either way the
            # operation fails; it never goes through the link.
            fd = os.open(
                comp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=here()
            )
            stack.append((comp, fd))
        if stack and stack[0][0] == STATE_DIRNAME:
            raise PathEscapeError(f"{device_path}: Permission denied")
        if for_writing and not (writable() and final is not None):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), device_path)
        names = [name for name, _fd in stack]
        yield Resolved(
            dir_fd=here(),
            name=final,
            host_path=root.joinpath(*names, *([final] if final else [])),
        )
    finally:
        for _name, fd in stack:
            os.close(fd)
        os.close(root_fd)


def used_bytes(root: Path, exclude: Path | None = None) -> int:
    """Bytes held by regular files under the phone's /data and /sdcard (what the quota
    counts), leaving out ``exclude``."""
    total = 0
    for top in WRITABLE_DIRS:
        for dirpath, _dirs, files in os.walk(root / top):
            for name in files:
                p = os.path.join(dirpath, name)
                if exclude is not None and p == str(exclude):
                    continue
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                total += st.st_size
    return total
