"""Writing the emulator's own files without following a link it did not make.

Whatever a shell command on the phone can change (``/data``, ``/sdcard``, and everything under
the root in rewrite mode) may hold a symlink where the emulator expects a directory or a file,
planted to redirect the emulator — which runs as the farm's user, root on a farm host — to a
host path. So these helpers walk one component at a time from a directory descriptor with
``O_NOFOLLOW``, create with ``O_EXCL``, and replace by ``rename`` (which replaces a link, never
writes through it). A link found where the emulator's own directory should be is removed, not
followed: it was not the emulator's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_root(path: Path) -> int:
    """A descriptor for ``path`` itself, refusing a symlink as its last component."""
    return os.open(path, _DIR_FLAGS)


def open_dir(base_fd: int, relative: str, *, create: bool = True, mode: int = 0o755) -> int:
    """A descriptor for the directory ``relative`` under ``base_fd``, creating missing parts.

    A component that is a symlink (or anything but a directory) is removed and made a
    directory when ``create``, else OSError(ELOOP/ENOTDIR)."""
    fd = os.dup(base_fd)
    try:
        for name in (p for p in relative.split("/") if p not in ("", ".")):
            if name == "..":
                raise OSError(errno.EPERM, "'..' in an emulator path", relative)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, mode, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if not create or exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(name, dir_fd=fd)  # a link or a file: remove it, never follow it
                os.mkdir(name, mode, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``name`` in ``dir_fd`` with ``data`` atomically (readers never see half a file)."""
    tmp = f".{name}.new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def remove_tree(parent_fd: int, name: str) -> None:
    """Remove ``name`` under ``parent_fd`` whatever it is; a symlink is removed, not followed."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    # shutil.rmtree walks by descriptors on Linux and never follows links inside the tree.
    shutil.rmtree(name, dir_fd=parent_fd)
