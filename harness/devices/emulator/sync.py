"""The ``sync:`` service (adb push/pull/ls/stat), as in AOSP's ``file_sync_service.cpp``.

Requests are ``id, length`` (two little-endian u32) plus ``length`` bytes; replies reuse the
same framing, carried in WRTE payloads whose boundaries need not match the sync messages.

* ``STAT path`` -> ``STAT mode size mtime`` from lstat (all zero if it does not exist).
* ``STA2``/``LST2 path`` -> the 72-byte ``stat_v2`` struct (stat/lstat), errno in ``error``.
* ``LIST dir`` -> ``DENT mode size mtime namelen name`` per entry, ``.`` and ``..`` included,
  then a DENT-sized ``DONE``.
* ``SEND path,mode`` then ``DATA`` chunks (<= 64 KiB) then ``DONE mtime`` -> ``OKAY`` or
  ``FAIL msg``. Parent directories are created, an existing file is replaced.
* ``RECV path`` -> ``DATA`` chunks then ``DONE``, or ``FAIL msg``.
* ``QUIT`` ends the service. So does every FAIL, as in adbd: the stream is closed after it.

One deliberate difference: when a SEND fails part-way (disk quota), modern adbd sends FAIL at
once and then drains the client's DATA; we drain first and answer DONE with the FAIL. A client
that reads the status after DONE (adb, adb-shell) sees the same result, and adb-shell, which
drops stream data that arrives while it waits for an OKAY, would otherwise hang until its
timeout instead of reporting the error.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat as stat_mod
import struct
from typing import Protocol

from .paths import STATE_DIRNAME, PathEscapeError, Resolved
from .sandbox import Sandbox

log = logging.getLogger(__name__)


def _id(name: bytes) -> int:
    return int.from_bytes(name, "little")


ID_STAT = _id(b"STAT")
ID_STA2 = _id(b"STA2")
ID_LST2 = _id(b"LST2")
ID_LIST = _id(b"LIST")
ID_DENT = _id(b"DENT")
ID_SEND = _id(b"SEND")
ID_RECV = _id(b"RECV")
ID_DATA = _id(b"DATA")
ID_DONE = _id(b"DONE")
ID_OKAY = _id(b"OKAY")
ID_FAIL = _id(b"FAIL")
ID_QUIT = _id(b"QUIT")

SYNC_DATA_MAX = 64 * 1024
MAX_PATH = 1024
_REQ = struct.Struct("<2I")
_STAT_V1 = struct.Struct("<4I")
_STAT_V2 = struct.Struct("<2I2Q4IQ3q")
_DENT = struct.Struct("<5I")


class SyncStream(Protocol):
    """What the service needs from an ADB stream."""

    @property
    def max_payload(self) -> int: ...

    async def read(self) -> bytes | None: ...

    async def write(self, data: bytes) -> None: ...


class SyncHost(Protocol):
    """What the service needs from the phone."""

    sandbox: Sandbox

    @property
    def quota_bytes(self) -> int | None: ...

    def note_send_data(self, stream: SyncStream, nbytes: int) -> None:
        """Called for each DATA chunk received by SEND (fault injection hooks in here)."""


class _Closed(Exception):
    pass


class _Reader:
    def __init__(self, stream: SyncStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self._stream.read()
            if chunk is None:
                raise _Closed
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


class _Writer:
    """Batches sync replies into WRTE payloads of at most the stream's max payload."""

    def __init__(self, stream: SyncStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self._buf += data

    async def flush(self, *, partial: bool = True) -> None:
        size = self._stream.max_payload
        while len(self._buf) >= size or (partial and self._buf):
            chunk = bytes(self._buf[:size])
            del self._buf[:size]
            await self._stream.write(chunk)


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


def _fail(message: str) -> bytes:
    data = message.encode("utf-8", "replace")
    return _REQ.pack(ID_FAIL, len(data)) + data


def _errno_message(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or errno.EIO)


async def serve_sync(stream: SyncStream, host: SyncHost) -> None:
    """Serve sync requests until QUIT, a fatal error or the stream closing."""
    reader, writer = _Reader(stream), _Writer(stream)
    try:
        while True:
            ident, length = _REQ.unpack(await reader.exactly(8))
            if ident == ID_QUIT:
                return
            if ident not in (ID_STAT, ID_STA2, ID_LST2, ID_LIST, ID_SEND, ID_RECV):
                writer.add(_fail(f"unknown sync command {ident.to_bytes(4, 'little')!r}"))
                await writer.flush()
                return
            if length > MAX_PATH:
                writer.add(_fail(f"path too long: {length}"))
                await writer.flush()
                return
            path = (await reader.exactly(length)).decode("utf-8", "surrogateescape")
            if ident == ID_SEND:
                ok = await _send(path, reader, writer, stream, host)
            else:
                ok = await _simple(ident, path, writer, host.sandbox)
            await writer.flush()
            if not ok:
                return
    except _Closed:
        return


def _stat_at(found: Resolved, *, follow: bool) -> os.stat_result:
    if found.name is None:
        return os.stat(found.dir_fd)
    return os.stat(found.name, dir_fd=found.dir_fd, follow_symlinks=follow)


def _open_at(found: Resolved, flags: int, mode: int = 0o644) -> int:
    """Open the resolved file. ``O_NOFOLLOW``: walk() followed the links it meant to; one
    that appeared since then is refused (ELOOP), not followed to the host."""
    name = found.name if found.name is not None else "."
    return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=found.dir_fd)


def _open_regular(found: Resolved) -> int:
    """Open a file to pull. O_NONBLOCK: a FIFO planted on the phone must not hang the
    emulator's event loop (it serves every connection); only regular files are pulled."""
    fd = _open_at(found, os.O_RDONLY | os.O_NONBLOCK)
    if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd


async def _simple(ident: int, path: str, writer: _Writer, sandbox: Sandbox) -> bool:
    follow = ident in (ID_STA2, ID_RECV, ID_LIST)  # STAT (v1) and LST2 use lstat
    try:
        with sandbox.walk(path, follow_last=follow) as found:
            if ident == ID_RECV:
                try:
                    fd = _open_regular(found)
                except OSError as exc:
                    writer.add(_fail(f"open failed: {_errno_message(exc)}"))
                    return False
            elif ident == ID_LIST:
                _list(found, writer, at_root=found.host_path == sandbox.root)
                return True
            else:
                try:
                    result: os.stat_result | OSError = _stat_at(found, follow=follow)
                except OSError as exc:
                    result = exc
                _stat_reply(ident, writer, result)
                return True
    except PathEscapeError as exc:
        writer.add(_fail(str(exc)))
        return False
    except OSError as exc:  # a directory on the way is missing or not a directory
        if ident == ID_RECV:
            writer.add(_fail(f"open failed: {_errno_message(exc)}"))
            return False
        if ident == ID_LIST:
            writer.add(_DENT.pack(ID_DONE, 0, 0, 0, 0))
        else:
            _stat_reply(ident, writer, exc)
        return True
    return await _recv(fd, writer)


def _stat_reply(ident: int, writer: _Writer, st: os.stat_result | OSError) -> None:
    """STAT (v1) answers zeros when the path is missing; STA2/LST2 answer its errno."""
    if ident == ID_STAT:
        if isinstance(st, OSError):
            writer.add(_STAT_V1.pack(ID_STAT, 0, 0, 0))
        else:
            writer.add(_STAT_V1.pack(ID_STAT, st.st_mode, _u32(st.st_size), _u32(int(st.st_mtime))))
        return
    if isinstance(st, OSError):
        writer.add(_STAT_V2.pack(ident, st.errno or errno.EIO, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        return
    writer.add(
        _STAT_V2.pack(
            ident,
            0,
            st.st_dev,
            st.st_ino,
            st.st_mode,
            st.st_nlink,
            st.st_uid,
            st.st_gid,
            st.st_size,
            int(st.st_atime),
            int(st.st_mtime),
            int(st.st_ctime),
        )
    )


def _list(found: Resolved, writer: _Writer, *, at_root: bool) -> None:
    entries: list[tuple[str, os.stat_result]] = []
    try:
        fd = _open_at(found, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            names = sorted(os.listdir(fd))
            entries.append((".", os.stat(fd)))
            entries.append(("..", os.stat("..", dir_fd=fd, follow_symlinks=False)))
            for name in names:
                if at_root and name == STATE_DIRNAME:
                    continue  # the emulator's own state is not part of the phone
                try:
                    entries.append((name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
                except OSError:
                    continue
        except OSError:
            pass
        finally:
            os.close(fd)
    for name, st in entries:
        raw = name.encode("utf-8", "surrogateescape")
        writer.add(
            _DENT.pack(ID_DENT, st.st_mode, _u32(st.st_size), _u32(int(st.st_mtime)), len(raw))
            + raw
        )
    writer.add(_DENT.pack(ID_DONE, 0, 0, 0, 0))


async def _recv(fd: int, writer: _Writer) -> bool:
    with os.fdopen(fd, "rb") as f:
        while True:
            try:
                chunk = f.read(SYNC_DATA_MAX)
            except OSError as exc:
                writer.add(_fail(f"read failed: {_errno_message(exc)}"))
                return False
            if not chunk:
                break
            writer.add(_REQ.pack(ID_DATA, len(chunk)) + chunk)
            await writer.flush(partial=False)
    writer.add(_REQ.pack(ID_DONE, 0))
    return True


def _open_for_send(sandbox: Sandbox, path: str) -> tuple[contextlib.ExitStack, Resolved]:
    """Resolve a SEND target (parents made), holding its directory open for the transfer,
    and remove the file or link that is there (a directory stays: EISDIR)."""
    stack = contextlib.ExitStack()
    try:
        found = stack.enter_context(
            sandbox.walk(path, follow_last=False, create_parents=True, for_writing=True)
        )
        assert found.name is not None  # for_writing refuses a bare directory
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(found.name, dir_fd=found.dir_fd, follow_symlinks=False)
            if stat_mod.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            os.unlink(found.name, dir_fd=found.dir_fd)
    except BaseException:
        stack.close()
        raise
    return stack, found


async def _send(
    spec: str, reader: _Reader, writer: _Writer, stream: SyncStream, host: SyncHost
) -> bool:
    path, comma, mode_text = spec.rpartition(",")
    if not comma or not mode_text.isdigit():
        path, mode = spec, stat_mod.S_IFREG | 0o644
    else:
        mode = int(mode_text)
    failure: str | None = None
    is_link = stat_mod.S_ISLNK(mode)
    held = contextlib.ExitStack()
    found: Resolved | None = None
    out: int | None = None
    link_target = bytearray()
    quota = host.quota_bytes
    used = 0
    written = 0
    try:
        try:
            held, found = _open_for_send(host.sandbox, path)
            if not is_link:
                used = host.sandbox.used_bytes() if quota is not None else 0
                out = _open_at(found, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except PathEscapeError as exc:
            failure = str(exc)
        except OSError as exc:
            failure = f"couldn't create file: {_errno_message(exc)}"

        def abandon() -> None:
            nonlocal out
            if out is not None:
                os.close(out)
                out = None
            if found is not None and found.name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(found.name, dir_fd=found.dir_fd)

        while True:
            ident, size = _REQ.unpack(await reader.exactly(8))
            if ident == ID_DONE:
                mtime = size
                break
            if ident != ID_DATA:
                failure = failure or f"invalid data message {ident.to_bytes(4, 'little')!r}"
                writer.add(_fail(failure))
                return False
            if size > SYNC_DATA_MAX:
                writer.add(_fail(f"oversize data message: {size}"))
                return False
            chunk = await reader.exactly(size)
            host.note_send_data(stream, size)
            if failure is not None:
                continue  # drain until DONE, then report
            if is_link:
                link_target += chunk
                continue
            assert out is not None
            if quota is not None and used + written + size > quota:
                failure = "write failed: No space left on device"
                abandon()
                continue
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                written += size
            except OSError as exc:
                failure = f"write failed: {_errno_message(exc)}"
                abandon()

        if failure is None and found is not None and found.name is not None:
            try:
                if is_link:
                    target = bytes(link_target).rstrip(b"\0")
                    os.symlink(target, found.name, dir_fd=found.dir_fd)
                else:
                    assert out is not None
                    os.fchmod(out, mode & 0o777 or 0o644)
                    os.utime(out, (mtime, mtime))
            except OSError as exc:
                failure = f"couldn't finish {path}: {_errno_message(exc)}"
    finally:
        if out is not None:
            os.close(out)
        held.close()
    if failure is not None:
        log.info("sync SEND %s failed: %s", path, failure)
        writer.add(_fail(failure))
        return False
    writer.add(_REQ.pack(ID_OKAY, 0))
    return True
