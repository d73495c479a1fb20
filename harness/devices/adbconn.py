"""One ADB connection to a phone (adb-shell), over TCP or USB, authenticated with our key.

adb-shell's exceptions share no base class; every one of them, and every socket error, becomes
an InfrastructureError that names the device and the operation.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from harness.devices.adbkeys import load_signer
from harness.devices.address import DeviceAddress
from harness.errors import InfrastructureError, one_line

log = logging.getLogger(__name__)

_EXIT_MARKER = "__edgefarm_exit="
_T = TypeVar("_T")


def _adb_exceptions() -> tuple[type[BaseException], ...]:
    from adb_shell import exceptions as e

    return (
        e.AdbCommandFailureException,
        e.AdbConnectionError,
        e.AdbTimeoutError,
        e.DeviceAuthError,
        e.InvalidChecksumError,
        e.InvalidCommandError,
        e.InvalidResponseError,
        e.InvalidTransportError,
        e.PushFailedError,
        e.TcpTimeoutException,
        e.UsbDeviceNotFoundError,
        e.UsbReadFailedError,
        e.UsbWriteFailedError,
        e.DevicePathInvalidError,
        OSError,
        EOFError,
        ValueError,
        IndexError,
        TimeoutError,
    )


def _disable_nagle(adb: Any) -> None:
    """Turn on TCP_NODELAY on adb-shell's socket.

    adb-shell writes a message's header and payload in two sends and leaves Nagle's algorithm
    on, so every small request waits for the peer's delayed ACK (about 40 ms on Linux): a sync
    ``stat`` took 130 ms instead of a few. adb-shell has no option for it, hence the reach into
    its transport; if the attribute is not there (another adb-shell version), nothing happens.
    """
    sock = getattr(getattr(adb, "_io_manager", None), "_transport", None)
    sock = getattr(sock, "_connection", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            log.debug("could not set TCP_NODELAY", exc_info=True)
    else:
        log.debug("adb-shell transport has no socket attribute; Nagle stays on")


class AdbConnection:
    """A connection to the phone at ``address``. Connects lazily; after a transport failure it
    is closed, and the next call connects again."""

    def __init__(self, address: DeviceAddress, *, timeout_s: float, config_dir: Path) -> None:
        self._id = str(address)
        self._kind = address.transport
        self._host, self._port, self._serial = address.host, address.port, address.serial
        self._timeout_s = timeout_s
        self._config_dir = config_dir
        self._adb: Any = None

    def connect(self) -> None:
        if self._adb is not None:
            return
        if self._kind == "tcp":
            from adb_shell.adb_device import AdbDeviceTcp

            adb: Any = AdbDeviceTcp(
                self._host, self._port, default_transport_timeout_s=self._timeout_s
            )
        else:
            try:
                from adb_shell.adb_device import AdbDeviceUsb
            except ImportError:
                raise InfrastructureError(
                    f"{self._id}: USB needs libusb1: pip install 'adb-shell[usb]'"
                ) from None
            adb = AdbDeviceUsb(serial=self._serial, default_transport_timeout_s=self._timeout_s)
        signer = load_signer(self._config_dir)
        from adb_shell.exceptions import DeviceAuthError

        key_offered = False

        def on_key_offered(_adb: Any) -> None:
            # adb-shell calls this when the phone did not accept our signature, just before it
            # offers our public key: from then on only the phone's user can let us in, and a
            # phone that refuses simply never answers (adb-shell then times out).
            nonlocal key_offered
            key_offered = True

        try:
            adb.connect(
                rsa_keys=[signer],
                transport_timeout_s=self._timeout_s,
                auth_timeout_s=self._timeout_s,
                read_timeout_s=self._timeout_s,
                auth_callback=on_key_offered,
            )
        except DeviceAuthError as exc:
            self._drop(adb)
            raise InfrastructureError(
                f"{self._id}: the phone refused authentication ({exc}); allow USB debugging for "
                f"the key in {self._config_dir / 'adbkey.pub'} on the phone"
            ) from None
        except (ConnectionRefusedError, socket.gaierror) as exc:
            self._drop(adb)
            raise InfrastructureError(f"{self._id}: unreachable ({exc.strerror or exc})") from None
        except _adb_exceptions() as exc:
            self._drop(adb)
            if key_offered:
                raise InfrastructureError(
                    f"{self._id}: the phone refused authentication (our key was not accepted "
                    f"within {self._timeout_s:g} s); allow USB debugging for the key in "
                    f"{self._config_dir / 'adbkey.pub'} on the phone"
                ) from None
            raise InfrastructureError(
                f"{self._id}: connecting failed: {type(exc).__name__}: {exc or 'no answer'}"
            ) from None
        if not adb.available:
            self._drop(adb)
            raise InfrastructureError(f"{self._id}: connected but the phone is not available")
        _disable_nagle(adb)
        self._adb = adb

    @staticmethod
    def _drop(adb: Any) -> None:
        try:
            adb.close()
        except Exception:  # closing a broken transport may raise anything; nothing to do
            log.debug("closing a failed ADB transport raised", exc_info=True)

    def close(self) -> None:
        if self._adb is not None:
            self._drop(self._adb)
            self._adb = None

    def call(self, what: str, fn: Callable[[Any], _T], *, stage: str | None = "run") -> _T:
        """Run ``fn(adb)``; any transport failure closes the connection and is reported."""
        self.connect()
        try:
            return fn(self._adb)
        except _adb_exceptions() as exc:
            from adb_shell.exceptions import AdbCommandFailureException, PushFailedError

            kind = type(exc).__name__
            if isinstance(exc, PushFailedError | AdbCommandFailureException):
                # The phone answered FAIL (no space, bad path): the connection is still fine.
                message = f"{self._id}: {what} failed: {one_line(str(exc))}"
            elif "Timeout" in kind or isinstance(exc, TimeoutError | socket.timeout):
                self.close()
                message = f"{self._id}: {what} timed out (the phone stopped answering)"
            else:
                self.close()
                message = f"{self._id}: {what} failed, connection lost ({kind}: {exc or 'closed'})"
            raise InfrastructureError(message, stage=stage) from None  # type: ignore[arg-type]

    def run(self, command: str, timeout_s: float, what: str) -> tuple[int, str]:
        """Run a shell command line; returns (exit code, combined output)."""
        # A subshell, so that an ``exit`` in the command still lets the marker be printed.
        wrapped = f"( {command}\n); echo {_EXIT_MARKER}$?"
        output = self.call(
            what,
            lambda adb: adb.shell(
                wrapped,
                timeout_s=timeout_s,
                read_timeout_s=timeout_s,
                # A command may print nothing for its whole run (the runner prints once, at
                # the end): waiting for its next output is bounded by its own budget.
                transport_timeout_s=timeout_s,
                decode=False,
            ),
        )
        text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else output
        head, sep, tail = text.rpartition(_EXIT_MARKER)
        if not sep:
            raise InfrastructureError(
                f"{self._id}: {what}: the shell ended without an exit status (killed?)", stage="run"
            )
        code = tail.strip()
        return (int(code) if code.lstrip("-").isdigit() else 255), head
