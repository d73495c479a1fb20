"""EmulatedPhone: an adbd on a TCP port, serving one sandboxed phone to any ADB client."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import tempfile
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from harness.errors import InfrastructureError

from . import protocol as p
from .isa import SPECS, Isa, IsaEmulation, emulation
from .namespace import ConfinementError
from .profiles import DEFAULT_PROFILE, DeviceProfile, get_profile
from .sandbox import Isolation, Sandbox
from .state import HardwareState, PhoneState
from .sync import SyncStream, serve_sync

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Only what is implemented: v1 shell (no shell_v2), stat_v2, and parents made by push.
FEATURES = ("stat_v2", "fixed_push_mkdir")
DEFAULT_MAX_PAYLOAD = p.MAX_PAYLOAD  # adbd offers 1 MiB and answers min(client, 1 MiB)
INTERACTIVE_MESSAGE = (
    b"error: the edgefarm emulated phone has no interactive shell; "
    b"run `adb shell COMMAND` instead\n"
)


class _StreamClosed(Exception):
    pass


class _Stream:
    """One ADB stream: our ``local_id`` talking to the client's ``remote_id``."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int, service: str) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self._can_send = asyncio.Event()
        self._can_send.set()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    @property
    def max_payload(self) -> int:
        return self.conn.max_payload

    async def write(self, data: bytes) -> None:
        """Send ``data`` as WRTE messages, one in flight at a time (wait for each OKAY)."""
        step = self.conn.max_payload
        view = memoryview(data)
        for offset in range(0, len(data), step):
            await self._can_send.wait()
            if self.closed:
                raise _StreamClosed
            self._can_send.clear()
            await self.conn.send(
                p.A_WRTE, self.local_id, self.remote_id, bytes(view[offset : offset + step])
            )

    async def read(self) -> bytes | None:
        """The next WRTE payload from the client (acknowledged now), None once closed."""
        data = await self._inbox.get()
        if data is not None and not self.closed:
            await self.conn.send(p.A_OKAY, self.local_id, self.remote_id)
        return data

    def on_okay(self) -> None:
        self._can_send.set()

    def on_write(self, data: bytes) -> None:
        self._inbox.put_nowait(data)

    def mark_closed(self) -> None:
        self.closed = True
        self._inbox.put_nowait(None)
        self._can_send.set()

    async def close(self) -> None:
        """Send CLSE, once the client has acknowledged our last WRTE (as adbd does: it only
        notices the service's end of output after that OKAY)."""
        await self._can_send.wait()
        if self.closed:
            return
        self.mark_closed()
        self.conn.streams.pop(self.local_id, None)
        with contextlib.suppress(_StreamClosed):
            await self.conn.send(p.A_CLSE, self.local_id, self.remote_id)


class _Connection:
    """One client's TCP connection: handshake, authentication, streams."""

    def __init__(
        self, phone: EmulatedPhone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.phone = phone
        self.reader = reader
        self.writer = writer
        self.peer = str(writer.get_extra_info("peername"))
        self.version = p.VERSION_MIN
        self.max_payload = p.MAX_PAYLOAD_V1
        self.online = False
        self.token: bytes | None = None
        self.streams: dict[int, _Stream] = {}
        self.closing = False
        self._next_id = 1
        self._incoming: asyncio.Queue[tuple[p.Header, bytes] | None] = asyncio.Queue()

    @property
    def checksummed(self) -> bool:
        return self.version < p.VERSION_SKIP_CHECKSUM

    async def run(self) -> None:
        reader_task = asyncio.create_task(self._read_loop())
        try:
            while True:
                item = await self._incoming.get()
                if item is None:
                    return
                await self.phone._answering.wait()
                if not await self._handle(*item):
                    return
        finally:
            reader_task.cancel()
            await self._teardown()

    def abort(self) -> None:
        """Drop the connection at once (an RST, like a phone that vanished)."""
        self.closing = True
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        await self.phone._answering.wait()
        if self.closing:
            raise _StreamClosed
        self.writer.write(p.pack(command, arg0, arg1, data, with_checksum=self.checksummed))
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.closing = True
            raise _StreamClosed from exc

    async def _read_loop(self) -> None:
        try:
            while True:
                header = p.parse_header(await self.reader.readexactly(p.HEADER.size))
                data = await self.reader.readexactly(header.data_length)
                self._incoming.put_nowait((header, data))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except p.ProtocolError as exc:
            log.warning("emulated phone %s: %s sent garbage: %s", self.phone.serial, self.peer, exc)
        finally:
            self._incoming.put_nowait(None)

    async def _handle(self, h: p.Header, data: bytes) -> bool:
        """Act on one message; False closes the connection."""
        version = min(h.arg0, p.VERSION) if h.command == p.A_CNXN else self.version
        if version < p.VERSION_SKIP_CHECKSUM and data and p.checksum(data) != h.data_check:
            log.warning("emulated phone %s: bad checksum from %s", self.phone.serial, self.peer)
            return False
        try:
            if h.command == p.A_CNXN:
                return await self._on_connect(h, data)
            if h.command == p.A_AUTH:
                return await self._on_auth(h, data)
            if not self.online:
                return True  # adbd ignores stream traffic before the handshake
            if h.command == p.A_OPEN:
                await self._on_open(h, data)
            elif h.command == p.A_OKAY:
                stream = self.streams.get(h.arg1)
                if stream is not None and stream.remote_id == h.arg0:
                    stream.on_okay()
            elif h.command == p.A_WRTE:
                stream = self.streams.get(h.arg1)
                if stream is not None:
                    stream.on_write(data)
            elif h.command == p.A_CLSE:
                stream = self.streams.pop(h.arg1, None)
                if stream is not None and not stream.closed:
                    stream.mark_closed()
                    if stream.task is not None:
                        stream.task.cancel()
                    await self.send(p.A_CLSE, stream.local_id, stream.remote_id)
            return True
        except _StreamClosed:
            return False

    async def _on_connect(self, h: p.Header, data: bytes) -> bool:
        if h.arg0 < p.VERSION_MIN:
            return False
        await self._close_streams()
        self.version = min(h.arg0, p.VERSION)
        self.max_payload = max(p.MAX_PAYLOAD_V1, min(h.arg1, self.phone.max_payload))
        self.online = False
        log.debug("emulated phone %s: CNXN from %s: %r", self.phone.serial, self.peer, data)
        if not self.phone.require_auth:
            await self._go_online()
        else:
            await self._send_token()
        return True

    async def _send_token(self) -> None:
        self.token = secrets.token_bytes(p.TOKEN_SIZE)
        await self.send(p.A_AUTH, p.AUTH_TOKEN, 0, self.token)

    async def _go_online(self) -> None:
        self.online = True
        self.token = None
        await self.send(p.A_CNXN, p.VERSION, self.max_payload, self.phone.banner())

    async def _on_auth(self, h: p.Header, data: bytes) -> bool:
        if self.online or self.token is None:
            return True
        if h.arg0 == p.AUTH_SIGNATURE:
            if any(key.verify(self.token, data) for key in self.phone._keys):
                log.info("emulated phone %s: %s authenticated", self.phone.serial, self.peer)
                await self._go_online()
            else:
                await self._send_token()
        elif h.arg0 == p.AUTH_RSAPUBLICKEY:
            text = data.rstrip(b"\0").decode("utf-8", "replace")
            try:
                key = p.AndroidPublicKey.parse(text)
            except ValueError as exc:
                log.warning(
                    "emulated phone %s: bad public key from %s: %s",
                    self.phone.serial,
                    self.peer,
                    exc,
                )
                await self._send_token()
                return True
            if self.phone.accept_new_keys:
                self.phone._authorize(key)
                log.info(
                    "emulated phone %s: accepted new key %s from %s",
                    self.phone.serial,
                    key.comment,
                    self.peer,
                )
                await self._go_online()
            else:
                # A phone whose user does not tap "Allow": a new challenge, never a CNXN.
                log.info(
                    "emulated phone %s: refused new key %s from %s",
                    self.phone.serial,
                    key.comment,
                    self.peer,
                )
                await self._send_token()
        return True

    async def _on_open(self, h: p.Header, data: bytes) -> None:
        if h.arg0 == 0:
            return
        service = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        handler = self.phone._service_handler(service)
        if handler is None:
            log.info("emulated phone %s: unsupported service %r", self.phone.serial, service)
            await self.send(p.A_CLSE, 0, h.arg0)
            return
        local_id = self._next_id
        self._next_id += 1
        stream = _Stream(self, local_id, h.arg0, service)
        self.streams[local_id] = stream
        await self.send(p.A_OKAY, local_id, h.arg0)
        stream.task = asyncio.create_task(self._run_service(stream, handler))

    async def _run_service(
        self, stream: _Stream, handler: Callable[[_Stream], Awaitable[None]]
    ) -> None:
        try:
            await handler(stream)
        except (_StreamClosed, asyncio.CancelledError):
            return
        except Exception:
            log.exception("emulated phone %s: service %r failed", self.phone.serial, stream.service)
        await stream.close()

    async def _close_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        tasks = []
        for stream in streams:
            stream.mark_closed()
            if stream.task is not None:
                stream.task.cancel()
                tasks.append(stream.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _teardown(self) -> None:
        self.closing = True
        await self._close_streams()
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), timeout=1.0)
        self.phone._connections.discard(self)


class EmulatedPhone:
    """A virtual Android phone that speaks ADB over TCP, as in ``adb tcpip`` mode.

    ``start()`` binds ``host:port`` (0 picks a free port) and serves from a background thread
    with its own event loop; several phones can run in one process. Shell commands run this
    host's ``/bin/sh`` inside the sandbox ``root`` (a temporary directory, removed on
    ``stop()``, unless given). ``isa="arm64"`` (or a profile whose ``isa`` is) makes the
    programs pushed to it aarch64 ones, run under qemu-user (:mod:`.isa`); starting one where
    qemu-user or the aarch64 C libraries are missing is an InfrastructureError naming them.
    The control surface (``set_temperature``, ``stall``, ``resume``, ``drop``,
    ``quota_bytes``, ``kill_after_bytes``) is the emulator's own, like ``adb emu`` commands of
    Android's emulator.
    """

    def __init__(
        self,
        profile: str | DeviceProfile = DEFAULT_PROFILE,
        *,
        root: str | Path | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        accept_new_keys: bool = True,
        require_auth: bool = True,
        authorized_keys: Iterable[str] = (),
        quota_bytes: int | None = None,
        kill_after_bytes: int | None = None,
        isolation: Isolation = "namespace",
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        thermal_time_constant_s: float = 30.0,
        tick_s: float = 0.5,
        isa: Isa | None = None,
    ) -> None:
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        if isa is not None:
            self.profile = self.profile.with_isa(isa)
        # Set at start: how a phone of another instruction set executes its programs.
        self.isa_emulation: IsaEmulation | None = None
        self._owns_root = root is None
        self._root_arg = Path(root) if root is not None else None
        self._requested_port = port
        self.host = host
        self.accept_new_keys = accept_new_keys
        self.require_auth = require_auth
        self._seed_keys = list(authorized_keys)
        self.quota_bytes: int | None = quota_bytes
        self._kill_after_bytes = kill_after_bytes
        self._send_bytes = 0
        self._isolation: Isolation = isolation
        if not p.MAX_PAYLOAD_V1 <= max_payload <= p.MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in [{p.MAX_PAYLOAD_V1}, {p.MAX_PAYLOAD}]")
        self.max_payload = max_payload
        self._tau_s = thermal_time_constant_s
        self._tick_s = tick_s

        self.port = 0
        self.sandbox: Sandbox | None = None
        self.state: PhoneState | None = None
        self._keys: list[p.AndroidPublicKey] = []
        self._serialno = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._answering: asyncio.Event = asyncio.Event()
        self._tick_task: asyncio.Task[None] | None = None
        self._started = False
        self._lock_file: IO[str] | None = None

    # -- identity ----------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        """The adb serial a client uses: ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def root(self) -> Path:
        if self.sandbox is None:
            raise RuntimeError("the emulated phone is not started")
        return self.sandbox.root

    @property
    def isolation(self) -> str:
        """How shell commands are isolated: "namespace" (confined) or "rewrite" (not
        confined: only literal device paths are mapped). Also ``ro.edgefarm.sandbox``."""
        return self.sandbox.isolation if self.sandbox is not None else self._isolation

    @property
    def adb_keys_path(self) -> Path:
        return self.root / ".edgefarm-emulator" / "adb_keys"

    def props(self) -> dict[str, str]:
        """The system properties ``getprop`` prints."""
        props = dict(self.profile.props)
        props["ro.serialno"] = self._serialno
        props["ro.boot.serialno"] = self._serialno
        props["service.adb.tcp.port"] = str(self.port)
        props["persist.adb.tcp.port"] = str(self.port)
        # Whoever reads the phone's facts can tell a confined emulated phone from one whose
        # commands run unconfined on the host.
        props["ro.edgefarm.sandbox"] = self.isolation
        if self.isa_emulation is not None:
            # Its programs run under an instruction-set emulator: their times are not the
            # phone's (nor this machine's).
            props["ro.edgefarm.isa_emulator"] = self.isa_emulation.version
        return props

    def banner(self) -> bytes:
        pr = self.profile.props
        fields = [
            f"ro.product.name={pr['ro.product.name']}",
            f"ro.product.model={pr['ro.product.model']}",
            f"ro.product.device={pr['ro.product.device']}",
            f"features={','.join(FEATURES)}",
        ]
        return ("device::" + ";".join(fields)).encode()

    def authorized_keys(self) -> list[str]:
        """The public keys this phone accepts, as stored in its adb_keys file."""
        return [k.text for k in self._keys]

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> EmulatedPhone:
        """Prepare the sandbox and listen; returns self. InfrastructureError if it cannot."""
        if self._started:
            return self
        root = self._root_arg or Path(tempfile.mkdtemp(prefix="edgefarm-phone-"))
        try:
            self._start(root)
        except BaseException:
            self._release()
            raise
        self._started = True
        log.debug(
            "emulated phone %s (%s) started, root %s, isolation %s",
            self.serial,
            self.profile.name,
            self.root,
            self.isolation,
        )
        return self

    def _start(self, root: Path) -> None:
        try:
            sandbox = Sandbox(root, isolation=self._isolation)
            sandbox.prepare()
        except OSError as exc:
            raise InfrastructureError(f"emulated phone cannot use root {root}: {exc}") from None
        self.sandbox = sandbox
        self._lock_root(sandbox.state_dir / "lock")
        if self.profile.isa != "host":
            self.isa_emulation = emulation(SPECS[self.profile.isa], sandbox.bin_dir)
            if self.isa_emulation is not None:
                sandbox.preload = self.isa_emulation.shim.name
        self._load_state()
        self.state = PhoneState(self.profile, sandbox.root / "sys", time_constant_s=self._tau_s)
        try:
            self.state.materialise()
        except OSError as exc:
            raise InfrastructureError(
                f"emulated phone cannot write {sandbox.root / 'sys'}: {exc}"
            ) from None
        try:
            sandbox.start_isolation()
        except ConfinementError as exc:
            raise InfrastructureError(f"emulated phone at {sandbox.root}: {exc}") from None
        sandbox.write_getprop(self.props())  # written again once the port is known

        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop,
            args=(ready,),
            name=f"emulated-phone-{self.profile.name}",
            daemon=True,
        )
        self._thread.start()
        ready.wait()
        try:
            self._call(self._astart(), timeout_s=10.0)
        except OSError as exc:
            raise InfrastructureError(
                f"emulated phone cannot listen on {self.host}:{self._requested_port}: "
                f"{exc.strerror or exc}"
            ) from None
        sandbox.write_getprop(self.props())

    def stop(self) -> None:
        """Close every connection, kill running commands, stop listening. Idempotent."""
        if not self._started:
            return
        self._started = False
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._call(self._astop(), timeout_s=15.0)
        self._release()

    def _release(self) -> None:
        """Undo whatever start() got done, in reverse."""
        self._shutdown_loop()
        if self.sandbox is not None:
            self.sandbox.stop_isolation()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
        self._cleanup_root()

    def _lock_root(self, path: Path) -> None:
        # Two phones on one root would fight over its files and mount points.
        f = open(path, "a")  # noqa: SIM115 - held open for the phone's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise InfrastructureError(
                f"emulated phone root {path.parent.parent} is in use by another emulated phone"
            ) from None
        self._lock_file = f

    def __enter__(self) -> EmulatedPhone:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control surface -------------------------------------------------------------------------

    def set_temperature(self, celsius: float) -> None:
        """Set the die temperature now (thermal_zone0 reads it; the others follow)."""
        self._require_state().set_temperature(celsius)

    @property
    def temperature_c(self) -> float:
        return self._require_state().die_c

    def hardware_state(self) -> HardwareState:
        """Thermal, battery and cpufreq numbers as the sysfs files currently say."""
        return self._require_state().snapshot()

    def stall(self) -> None:
        """Stop answering: keep reading from clients but send nothing, until resume()."""
        self._require_loop().call_soon_threadsafe(self._answering.clear)

    def resume(self) -> None:
        """Answer again after stall(); what arrived meanwhile is handled in order."""
        self._require_loop().call_soon_threadsafe(self._answering.set)

    def drop(self) -> None:
        """Close every client connection abruptly (a reset), e.g. in the middle of a transfer.
        The phone keeps listening; clients may reconnect."""
        self._call(self._adrop(), timeout_s=10.0)

    @property
    def kill_after_bytes(self) -> int | None:
        """One-shot fault: after this many bytes of push (SEND) data, counted from when it was
        set, the connection carrying them is dropped; then it resets to None."""
        return self._kill_after_bytes

    @kill_after_bytes.setter
    def kill_after_bytes(self, nbytes: int | None) -> None:
        self._send_bytes = 0
        self._kill_after_bytes = nbytes

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- internals ---------------------------------------------------------------------------

    def _require_state(self) -> PhoneState:
        if self.state is None:
            raise RuntimeError("the emulated phone is not started")
        return self.state

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the emulated phone is not started")
        return self._loop

    def _call(self, coro: Coroutine[Any, Any, _T], *, timeout_s: float) -> _T:
        loop = self._require_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=timeout_s)

    def _run_loop(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()
        self._loop.close()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10.0)
        self._loop = None
        self._thread = None

    def _cleanup_root(self) -> None:
        if self._owns_root and self.sandbox is not None:
            shutil.rmtree(self.sandbox.root, ignore_errors=True)

    def _load_state(self) -> None:
        assert self.sandbox is not None
        state_dir = self.sandbox.state_dir
        serial_file = state_dir / "serialno"
        if serial_file.is_file():
            self._serialno = serial_file.read_text().strip()
        if not self._serialno:
            self._serialno = "EF" + secrets.token_hex(6).upper()
            serial_file.write_text(self._serialno + "\n")
        self._keys = []
        keys_file = state_dir / "adb_keys"
        lines = keys_file.read_text().splitlines() if keys_file.is_file() else []
        for line in [*lines, *self._seed_keys]:
            if not line.strip():
                continue
            try:
                key = p.AndroidPublicKey.parse(line)
            except ValueError as exc:
                log.warning("emulated phone: ignoring bad key in %s: %s", keys_file, exc)
                continue
            if all(k.modulus != key.modulus for k in self._keys):
                self._keys.append(key)
        keys_file.write_text("".join(k.text + "\n" for k in self._keys))

    def _authorize(self, key: p.AndroidPublicKey) -> None:
        if any(k.modulus == key.modulus for k in self._keys):
            return
        self._keys.append(key)
        with open(self.adb_keys_path, "a") as f:
            f.write(key.text + "\n")

    async def _astart(self) -> None:
        self._answering = asyncio.Event()  # bound to this loop: a restart makes a new one
        self._answering.set()
        self._server = await asyncio.start_server(
            self._on_client, self.host, self._requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tick_task = asyncio.create_task(self._tick())

    async def _astop(self) -> None:
        self._answering.set()
        if self._server is not None:
            self._server.close()
        if self._tick_task is not None:
            self._tick_task.cancel()
        await self._adrop()
        for proc in list(self._procs):
            _kill_group(proc)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)

    async def _adrop(self) -> None:
        for conn in list(self._connections):
            conn.abort()
        tasks = list(self._conn_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def _tick(self) -> None:
        assert self.state is not None
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self._tick_s)
            now = loop.time()
            try:
                self.state.advance(now - last)
            except OSError as exc:
                log.warning("emulated phone %s: cannot update state files: %s", self.serial, exc)
            last = now

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        log.debug("emulated phone %s: connection from %s", self.serial, conn.peer)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._conn_tasks.discard(task)
            self._connections.discard(conn)

    def _note_send_data(self, stream: _Stream, nbytes: int) -> None:
        """Count SEND data for ``kill_after_bytes``; drop the connection when it is reached."""
        self._send_bytes += nbytes
        limit = self._kill_after_bytes
        if limit is not None and self._send_bytes >= limit:
            self.kill_after_bytes = None
            log.info(
                "emulated phone %s: dropping the connection after %d bytes of push data",
                self.serial,
                limit,
            )
            stream.conn.abort()
            raise _StreamClosed

    def _service_handler(self, service: str) -> Callable[[_Stream], Awaitable[None]] | None:
        if service.startswith("shell:"):
            command = service[len("shell:") :]
            return lambda s: self._shell(s, command, text=True)
        if service.startswith("exec:"):
            command = service[len("exec:") :]
            return lambda s: self._shell(s, command, text=False)
        if service == "sync:":
            assert self.sandbox is not None
            host = _SyncHost(self, self.sandbox)
            return lambda s: serve_sync(s, host)
        if service == "root:":
            return lambda s: s.write(b"adbd cannot run as root in production builds\n")
        if service == "unroot:":
            return lambda s: s.write(b"adbd not running as root\n")
        return None

    async def _shell(self, stream: _Stream, command: str, *, text: bool) -> None:
        assert self.sandbox is not None and self.state is not None
        if not command.strip():
            await stream.write(INTERACTIVE_MESSAGE)
            return
        argv, env, cwd = self.sandbox.shell_command(command)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._procs.add(proc)
        self.state.busy += 1
        feeder = asyncio.create_task(_feed_stdin(stream, proc))
        out_filter = self.sandbox.output_filter() if text else None
        assert proc.stdout is not None
        try:
            while True:
                chunk = await proc.stdout.read(stream.max_payload)
                if not chunk:
                    break
                if out_filter is not None:
                    chunk = out_filter.feed(chunk)
                if chunk:
                    await stream.write(chunk)
            if out_filter is not None and (tail := out_filter.flush()):
                await stream.write(tail)
            await proc.wait()
        finally:
            self.state.busy -= 1
            feeder.cancel()
            if proc.returncode is None:
                _kill_group(proc)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), timeout=5.0)
            self._procs.discard(proc)


class _SyncHost:
    """The phone as the sync service sees it (sync.SyncHost)."""

    def __init__(self, phone: EmulatedPhone, sandbox: Sandbox) -> None:
        self.phone = phone
        self.sandbox = sandbox

    @property
    def quota_bytes(self) -> int | None:
        return self.phone.quota_bytes

    def note_send_data(self, stream: SyncStream, nbytes: int) -> None:
        assert isinstance(stream, _Stream)
        self.phone._note_send_data(stream, nbytes)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill the command and everything it started.

    The command leads its own session, but not everything it starts stays in its process
    group: ``timeout`` (which edgefarm wraps every command in) moves its child into a group
    of its own. So every process of the session is killed, not only the group.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in _session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _session_members(sid: int) -> list[int]:
    """The pids whose session id is ``sid`` (from /proc; empty where there is no /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) start at state; session is
        # the 4th of them: state ppid pgrp session.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and fields[3] == str(sid):
            members.append(int(entry.name))
    return members


async def _feed_stdin(stream: _Stream, proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    try:
        while (data := await stream.read()) is not None:
            proc.stdin.write(data)
            await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError, _StreamClosed):
        pass


def serve(
    port: int = 5555,
    profile: str = DEFAULT_PROFILE,
    root: str | Path | None = None,
    accept_new_keys: bool = True,
    *,
    host: str = "127.0.0.1",
    require_auth: bool = True,
    quota_bytes: int | None = None,
    isolation: Isolation = "namespace",
    isa: Isa | None = None,
) -> None:
    """Run one emulated phone until SIGINT or SIGTERM (for ``edgefarm emulator start``)."""
    stop = threading.Event()
    phone = EmulatedPhone(
        profile,
        root=root,
        port=port,
        host=host,
        accept_new_keys=accept_new_keys,
        require_auth=require_auth,
        quota_bytes=quota_bytes,
        isolation=isolation,
        isa=isa,
    )
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda _n, _f: stop.set())
    try:
        with phone:
            log.info(
                "emulated phone %s listening on %s:%d, root %s",
                phone.profile.name,
                phone.host,
                phone.port,
                phone.root,
            )
            if phone.isa_emulation is not None:
                log.info(
                    "its %s programs run under %s (%s)",
                    phone.profile.isa,
                    phone.isa_emulation.version,
                    phone.isa_emulation.qemu,
                )
            if phone.isolation != "namespace":
                log.warning(
                    "shell commands are NOT confined: device paths are only rewritten "
                    "(isolation %s)",
                    phone.isolation,
                )
            while not stop.wait(0.5):
                pass
            log.info("emulated phone %s on port %d stopping", phone.profile.name, phone.port)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
