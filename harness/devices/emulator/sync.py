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

import errno
import logging
import os
import stat as stat_mod
import struct
from pathlib import Path
from typing import Protocol

from .sandbox import PathEscapeError, Sandbox

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


async def _simple(ident: int, path: str, writer: _Writer, sandbox: Sandbox) -> bool:
    follow = ident in (ID_STA2, ID_RECV)  # STAT (v1), LST2 and LIST entries use lstat
    try:
        host_path = sandbox.resolve(path, follow_last=follow or ident == ID_LIST)
    except PathEscapeError as exc:
        writer.add(_fail(str(exc)))
        return False
    if ident == ID_STAT:
        try:
            st = os.lstat(host_path)
            writer.add(_STAT_V1.pack(ID_STAT, st.st_mode, _u32(st.st_size), _u32(int(st.st_mtime))))
        except OSError:
            writer.add(_STAT_V1.pack(ID_STAT, 0, 0, 0))
    elif ident in (ID_STA2, ID_LST2):
        try:
            st = os.stat(host_path) if ident == ID_STA2 else os.lstat(host_path)
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
        except OSError as exc:
            writer.add(_STAT_V2.pack(ident, exc.errno or errno.EIO, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    elif ident == ID_LIST:
        _list(host_path, writer)
    else:
        return await _recv(host_path, writer)
    return True


def _list(host_path: Path, writer: _Writer) -> None:
    try:
        names = [".", "..", *sorted(os.listdir(host_path))]
    except OSError:
        names = []
    for name in names:
        try:
            st = os.lstat(host_path / name)
        except OSError:
            continue
        raw = name.encode("utf-8", "surrogateescape")
        writer.add(
            _DENT.pack(ID_DENT, st.st_mode, _u32(st.st_size), _u32(int(st.st_mtime)), len(raw))
            + raw
        )
    writer.add(_DENT.pack(ID_DONE, 0, 0, 0, 0))


async def _recv(host_path: Path, writer: _Writer) -> bool:
    try:
        f = open(host_path, "rb")  # noqa: SIM115 - closed below, across awaits
    except OSError as exc:
        writer.add(_fail(f"open failed: {_errno_message(exc)}"))
        return False
    with f:
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


async def _send(
    spec: str, reader: _Reader, writer: _Writer, stream: SyncStream, host: SyncHost
) -> bool:
    path, comma, mode_text = spec.rpartition(",")
    if not comma or not mode_text.isdigit():
        path, mode = spec, stat_mod.S_IFREG | 0o644
    else:
        mode = int(mode_text)
    failure: str | None = None
    target: Path | None = None
    is_link = stat_mod.S_ISLNK(mode)
    try:
        target = host.sandbox.resolve(path, follow_last=False)
    except PathEscapeError as exc:
        failure = str(exc)

    out = None
    link_target = bytearray()
    quota = host.quota_bytes
    used = 0
    written = 0
    if target is not None and not is_link:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_file():
                target.unlink()
            used = host.sandbox.used_bytes(exclude=target) if quota is not None else 0
            out = open(target, "wb")  # noqa: SIM115 - closed below, across awaits
        except OSError as exc:
            failure = f"couldn't create file: {_errno_message(exc)}"

    try:
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
            assert out is not None and target is not None
            if quota is not None and used + written + size > quota:
                failure = "write failed: No space left on device"
                out.close()
                out = None
                target.unlink(missing_ok=True)
                continue
            try:
                out.write(chunk)
                written += size
            except OSError as exc:
                failure = f"write failed: {_errno_message(exc)}"
                out.close()
                out = None
                target.unlink(missing_ok=True)
    except BaseException:
        if out is not None:
            out.close()
        raise

    if failure is None and target is not None:
        try:
            if is_link:
                if target.is_symlink() or target.is_file():
                    target.unlink()
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(bytes(link_target).rstrip(b"\0"), target)
            else:
                assert out is not None
                out.close()
                out = None
                os.chmod(target, mode & 0o777 or 0o644)
                os.utime(target, (mtime, mtime))
        except OSError as exc:
            failure = f"couldn't finish {path}: {_errno_message(exc)}"
    if out is not None:
        out.close()
    if failure is not None:
        log.info("sync SEND %s failed: %s", path, failure)
        writer.add(_fail(failure))
        return False
    writer.add(_REQ.pack(ID_OKAY, 0))
    return True
