"""Phones over ADB (adb-shell): ``tcp:HOST:PORT`` (a phone in ``adb tcpip`` mode, or an
emulated phone) and ``usb:SERIAL``.

adb-shell's exceptions share no base class; every one of them, and every socket error, becomes
an InfrastructureError that names the device and the operation. Every argument sent to the
phone's shell is quoted with :func:`shlex.quote`; paths are confined to the work root.
"""

from __future__ import annotations

import logging
import math
import posixpath
import re
import shlex
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from harness.config import get_settings
from harness.devices.adbkeys import load_signer
from harness.devices.address import DeviceAddress
from harness.devices.base import MIN_FREE_BYTES, DeviceFacts, Preflight, ShellResult
from harness.devices.records import (
    BatteryState,
    CpuState,
    HealthReport,
    StateSnapshot,
    unhealthy,
)
from harness.errors import CommandTimeout, InfrastructureError, JobError, one_line

log = logging.getLogger(__name__)

WORK_ROOT = "/data/local/tmp/edgefarm"
_EXIT_MARKER = "__edgefarm_exit="
_T = TypeVar("_T")

# The NNAPI feature level each Android SDK level brings (NNAPI appeared in API 27).
_NNAPI_FEATURE_LEVELS = {27: 1, 28: 2, 29: 3, 30: 4, 31: 5, 32: 5, 33: 6, 34: 7, 35: 8}


def nnapi_feature_level(sdk_level: int | None) -> int | None:
    """NNAPI feature level of an SDK level; None when the phone has no NNAPI (below API 27)."""
    if sdk_level is None or sdk_level < 27:
        return None
    return _NNAPI_FEATURE_LEVELS.get(sdk_level, max(_NNAPI_FEATURE_LEVELS.values()))


_PROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        match = _PROP_LINE.match(line.strip())
        if match:
            props[match["key"]] = match["value"]
    return props


def facts_from_props(device_id: str, props: dict[str, str]) -> DeviceFacts:
    """Device facts from ``getprop`` output."""
    sdk_text = props.get("ro.build.version.sdk", "")
    sdk = int(sdk_text) if sdk_text.isdigit() else None
    abi = props.get("ro.product.cpu.abi", "")
    emulated = props.get("ro.edgefarm.emulated") == "1"
    exec_abi = props.get("ro.edgefarm.exec_abi", abi)
    target = "host" if exec_abi in ("x86_64", "x86-64") else "android-arm64"
    soc = (
        props.get("ro.soc.model")
        or props.get("ro.board.platform")
        or props.get("ro.hardware")
        or ""
    )
    return DeviceFacts(
        id=device_id,
        kind="adb",
        manufacturer=props.get("ro.product.manufacturer", ""),
        model=props.get("ro.product.model", ""),
        soc=soc,
        abi=abi,
        android_release=props.get("ro.build.version.release", ""),
        sdk_level=sdk,
        fingerprint=props.get("ro.build.fingerprint", ""),
        nnapi_feature_level=nnapi_feature_level(sdk),
        emulated=emulated,
        target=target,
        serial=props.get("ro.serialno", ""),
        extra={
            "soc_manufacturer": props.get("ro.soc.manufacturer", ""),
            "platform": props.get("ro.board.platform", ""),
            "serialno": props.get("ro.serialno", ""),
            # An emulated phone says how its commands are confined: namespace | rewrite.
            **(
                {"exec_abi": exec_abi, "sandbox": props.get("ro.edgefarm.sandbox", "")}
                if emulated
                else {}
            ),
        },
    )


# One round trip for the whole state snapshot: thermal zones, battery, CPU frequencies.
# Shell builtins only (read, set, echo): a fork per file read made one snapshot cost 150-600 ms
# on an emulated phone, twice per run, inside the lease.
_STATE_SCRIPT = r"""
o=$IFS
for z in /sys/class/thermal/thermal_zone*; do
  [ -r "$z/temp" ] || continue
  n=; t=; read -r n < "$z/type"; read -r t < "$z/temp"
  IFS=$o; set -f; set -- $n; set +f; IFS=_; echo "T $* $t"
done 2>/dev/null
IFS=$o
b=/sys/class/power_supply/battery
if [ -r "$b/capacity" ]; then
  l=; t=; s=; read -r l < $b/capacity; read -r t < $b/temp; read -r s < $b/status
  echo "B $l $t $s"
fi 2>/dev/null
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  f=$c/cpufreq
  [ -r "$f/scaling_cur_freq" ] || continue
  u=; g=; m=; read -r u < $f/scaling_cur_freq; read -r g < $f/scaling_governor
  read -r m < $f/cpuinfo_max_freq; echo "C ${c##*/} $u $g $m"
done 2>/dev/null
true
"""


# End the runners of interrupted runs (each wrote its pid to runner.pid) and remove every run
# directory; prints "killed PID" for each runner ended.
_RESET_SCRIPT = (
    f"cd {posixpath.join(WORK_ROOT, 'runs')} 2>/dev/null || exit 0; "
    'for f in */runner.pid; do [ -f "$f" ] || continue; read -r p < "$f"; '
    'kill -9 "$p" 2>/dev/null && echo "killed $p"; done; '
    f"cd / && rm -rf {posixpath.join(WORK_ROOT, 'runs')}"
)
_STATE_MARKER = "EDGEFARM-STATE-FOLLOWS"
_PRESENT = "EDGEFARM-PRESENT "


def _killed(output: str) -> list[int]:
    return [
        int(w)
        for ln in output.splitlines()
        if ln.startswith("killed ")
        for w in ln.split()[1:2]
        if w.isdigit()
    ]


def parse_state(text: str) -> StateSnapshot:
    thermal: dict[str, float] = {}
    cpus: dict[str, CpuState] = {}
    battery: BatteryState = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "T" and parts[2].lstrip("-").isdigit():
            value = int(parts[2])
            # Most zones report millidegrees; a few report degrees.
            thermal[parts[1]] = value / 1000.0 if abs(value) > 200 else float(value)
        elif len(parts) >= 2 and parts[0] == "B":
            if parts[1].isdigit():
                battery["level_pct"] = int(parts[1])
            if len(parts) >= 3 and parts[2].lstrip("-").isdigit():
                battery["temp_c"] = int(parts[2]) / 10.0
            if len(parts) >= 4:
                battery["status"] = parts[3]
        elif len(parts) >= 3 and parts[0] == "C" and parts[2].isdigit():
            cpu: CpuState = {
                "cur_khz": int(parts[2]),
                "governor": parts[3] if len(parts) >= 4 else "",
            }
            if len(parts) >= 5 and parts[4].isdigit():
                cpu["max_khz"] = int(parts[4])
            cpus[parts[1]] = cpu
    hottest = max(thermal.values()) if thermal else battery.get("temp_c")
    return {"thermal_c": thermal, "battery": battery, "cpu": cpus, "max_temp_c": hottest}


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


class AdbDevice:
    """A phone reached over ADB. Connects lazily; reconnects after a failed operation."""

    def __init__(self, address: str | DeviceAddress, *, timeout_s: float | None = None) -> None:
        settings = get_settings()
        parsed = address if isinstance(address, DeviceAddress) else DeviceAddress.parse(address)
        if parsed.is_local:
            raise JobError("run", "local is this machine, not a phone over ADB")
        self._address = str(parsed)
        self._timeout_s = timeout_s or settings.adb_timeout_s
        self._transfer_timeout_s = settings.adb_transfer_timeout_s
        self._config_dir = settings.config_path
        self._adb: Any = None
        self._facts: DeviceFacts | None = None
        self._host, self._port, self._serial = parsed.host, parsed.port, parsed.serial
        self._kind = parsed.transport

    @classmethod
    def open(cls, address: str | DeviceAddress) -> AdbDevice:
        device = cls(address)
        device.connect()
        return device

    @property
    def id(self) -> str:
        return self._address

    @property
    def work_root(self) -> str:
        return WORK_ROOT

    # -- connection ------------------------------------------------------------------------

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
                    f"{self.id}: USB needs libusb1: pip install 'adb-shell[usb]'"
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
                f"{self.id}: the phone refused authentication ({exc}); allow USB debugging for "
                f"the key in {self._config_dir / 'adbkey.pub'} on the phone"
            ) from None
        except (ConnectionRefusedError, socket.gaierror) as exc:
            self._drop(adb)
            raise InfrastructureError(f"{self.id}: unreachable ({exc.strerror or exc})") from None
        except _adb_exceptions() as exc:
            self._drop(adb)
            if key_offered:
                raise InfrastructureError(
                    f"{self.id}: the phone refused authentication (our key was not accepted "
                    f"within {self._timeout_s:g} s); allow USB debugging for the key in "
                    f"{self._config_dir / 'adbkey.pub'} on the phone"
                ) from None
            raise InfrastructureError(
                f"{self.id}: connecting failed: {type(exc).__name__}: {exc or 'no answer'}"
            ) from None
        if not adb.available:
            self._drop(adb)
            raise InfrastructureError(f"{self.id}: connected but the phone is not available")
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

    def _call(self, what: str, fn: Callable[[Any], _T], *, stage: str | None = "run") -> _T:
        """Run ``fn(adb)``; any transport failure closes the connection and is reported."""
        self.connect()
        try:
            return fn(self._adb)
        except _adb_exceptions() as exc:
            from adb_shell.exceptions import AdbCommandFailureException, PushFailedError

            kind = type(exc).__name__
            if isinstance(exc, PushFailedError | AdbCommandFailureException):
                # The phone answered FAIL (no space, bad path): the connection is still fine.
                message = f"{self.id}: {what} failed: {one_line(str(exc))}"
            elif "Timeout" in kind or isinstance(exc, TimeoutError | socket.timeout):
                self.close()
                message = f"{self.id}: {what} timed out (the phone stopped answering)"
            else:
                self.close()
                message = f"{self.id}: {what} failed, connection lost ({kind}: {exc or 'closed'})"
            raise InfrastructureError(message, stage=stage) from None  # type: ignore[arg-type]

    # -- paths -----------------------------------------------------------------------------

    def _confined(self, remote: str) -> str:
        """``remote`` normalised, refusing anything outside the work root."""
        path = posixpath.normpath(remote)
        if path != WORK_ROOT and not path.startswith(WORK_ROOT + "/"):
            raise JobError("run", f"{self.id}: refusing path {remote!r} outside {WORK_ROOT}")
        return path

    # -- shell -----------------------------------------------------------------------------

    def _raw_shell(self, command: str, timeout_s: float, what: str) -> tuple[int, str]:
        """Run a shell command line; returns (exit code, combined output)."""
        # A subshell, so that an ``exit`` in the command still lets the marker be printed.
        wrapped = f"( {command}\n); echo {_EXIT_MARKER}$?"
        output = self._call(
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
                f"{self.id}: {what}: the shell ended without an exit status (killed?)", stage="run"
            )
        code = tail.strip()
        return (int(code) if code.lstrip("-").isdigit() else 255), head

    def shell(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> ShellResult:
        """Run ``argv`` on the phone with every element quoted; killed on the phone at the
        timeout (toybox ``timeout``), and given up on by us a few seconds later."""
        command = self._command(argv, timeout_s=timeout_s, env=env, cwd=cwd)
        started = time.monotonic()
        code, output = self._raw_shell(command, timeout_s + 10, f"running {Path(argv[0]).name}")
        self._check_timeout(argv, code, started, timeout_s)
        return ShellResult(exit_code=code, stdout=output, stderr="")

    def shell_then_state(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> tuple[ShellResult, StateSnapshot]:
        """:meth:`shell` and :meth:`state` in one round trip: the snapshot follows the
        command's output, after a line of its own."""
        command = self._command(argv, timeout_s=timeout_s, env=env, cwd=cwd)
        script = f"{command}\nrc=$?; echo; echo {_STATE_MARKER}\n{_STATE_SCRIPT.strip()}\nexit $rc"
        started = time.monotonic()
        code, output = self._raw_shell(script, timeout_s + 15, f"running {Path(argv[0]).name}")
        self._check_timeout(argv, code, started, timeout_s)
        head, sep, tail = output.rpartition(f"\n{_STATE_MARKER}\n")
        if not sep:
            raise InfrastructureError(f"{self.id}: no state after {Path(argv[0]).name}")
        # The newline echoed before the marker went with the marker: ``head`` is the output.
        return ShellResult(exit_code=code, stdout=head), parse_state(tail)

    def _command(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None,
        cwd: str | None,
    ) -> str:
        for key in env or {}:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise JobError("run", f"bad environment variable name {key!r}")
        parts = []
        if cwd is not None:
            parts.append(f"cd {shlex.quote(self._confined(cwd))} &&")
        # Rounded up: a kill before ``timeout_s`` would not be recognised as a timeout below.
        parts.append("timeout -s KILL " + str(max(1, math.ceil(timeout_s))))
        if env:
            parts.append("env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
        parts.append(" ".join(shlex.quote(a) for a in argv))
        return " ".join(parts)

    def _check_timeout(self, argv: list[str], code: int, started: float, timeout_s: float) -> None:
        if code == 137 and time.monotonic() - started >= timeout_s - 0.5:
            raise CommandTimeout(
                f"{self.id}: {Path(argv[0]).name} did not finish within {timeout_s:.0f} s and "
                "was killed",
                stage="run",
            )

    def run_script(self, script: str, *, timeout_s: float | None = None) -> tuple[int, str]:
        """Run a fixed script of ours (never built from user input)."""
        return self._raw_shell(script.strip(), timeout_s or self._timeout_s, "a shell command")

    # -- files -----------------------------------------------------------------------------

    def push(
        self, local: Path, remote: str, *, timeout_s: float | None = None, atomic: bool = True
    ) -> None:
        """Push ``local`` to ``remote``. Atomic by default: written under a temporary name and
        renamed, so a broken push never leaves something that looks complete. adbd creates
        missing parent directories itself (sync SEND)."""
        dest = self._confined(remote)
        target = f"{dest}.partial-{uuid.uuid4().hex[:8]}" if atomic else dest
        size = local.stat().st_size
        timeout = timeout_s or max(self._timeout_s, self._transfer_timeout_s)
        mode = 0o100755 if local.stat().st_mode & 0o111 else 0o100644
        try:
            self._call(
                f"pushing {local.name} ({size} bytes)",
                lambda adb: adb.push(
                    str(local),
                    target,
                    st_mode=mode,
                    mtime=int(time.time()),
                    transport_timeout_s=timeout,
                    read_timeout_s=timeout,
                ),
            )
        except InfrastructureError as exc:
            self._cleanup(target)
            if "space" in exc.message.lower():
                raise InfrastructureError(
                    f"{self.id}: disk full while pushing {local.name} ({size} bytes)"
                ) from None
            raise
        if atomic:
            code, out = self._raw_shell(
                f"mv -f {shlex.quote(target)} {shlex.quote(dest)}", self._timeout_s, "rename"
            )
            if code != 0:
                self._cleanup(target)
                raise InfrastructureError(f"{self.id}: renaming {target} failed: {out.strip()}")

    def _cleanup(self, remote: str) -> None:
        try:
            self._raw_shell(f"rm -f {shlex.quote(remote)}", self._timeout_s, "cleanup")
        except InfrastructureError:
            log.info("%s: could not remove %s (the phone is gone?)", self.id, remote)

    def pull(self, remote: str, local: Path, *, timeout_s: float | None = None) -> None:
        src = self._confined(remote)
        timeout = timeout_s or max(self._timeout_s, self._transfer_timeout_s)
        tmp = local.with_name(f".{local.name}.partial")
        try:
            self._call(
                f"pulling {posixpath.basename(src)}",
                lambda adb: adb.pull(
                    src, str(tmp), transport_timeout_s=timeout, read_timeout_s=timeout
                ),
            )
            tmp.replace(local)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, remote: str) -> bool:
        path = self._confined(remote)
        mode, _size, _mtime = self._call(f"stat {path}", lambda adb: adb.stat(path))
        return bool(mode)

    def remove(self, remote: str) -> None:
        path = self._confined(remote)
        if path == WORK_ROOT:
            raise JobError("run", f"{self.id}: refusing to remove the whole work root")
        self._raw_shell(f"rm -rf {shlex.quote(path)}", self._timeout_s, f"removing {path}")

    def list_dir(self, remote: str) -> list[tuple[str, int, int]]:
        """(name, size, mtime) of the entries of a directory under the work root."""
        path = self._confined(remote)
        entries = self._call(f"listing {path}", lambda adb: adb.list(path))
        return [
            (e.filename.decode(errors="replace"), int(e.size), int(e.mtime))
            for e in entries
            if e.filename not in (b".", b"..")
        ]

    def free_bytes(self) -> int:
        code, out = self._raw_shell(
            f"mkdir -p {WORK_ROOT} && df -k {WORK_ROOT}", self._timeout_s, "df"
        )
        lines = [ln.split() for ln in out.strip().splitlines() if ln.strip()]
        if code != 0 or len(lines) < 2 or len(lines[-1]) < 4 or not lines[-1][3].isdigit():
            raise InfrastructureError(f"{self.id}: cannot read free space: {out.strip()[:200]}")
        return int(lines[-1][3]) * 1024

    # -- facts and state -------------------------------------------------------------------

    def facts(self) -> DeviceFacts:
        if self._facts is None:
            code, out = self._raw_shell("getprop", self._timeout_s, "getprop")
            props = parse_getprop(out)
            if code != 0 or not props:
                raise InfrastructureError(f"{self.id}: getprop returned nothing usable")
            self._facts = facts_from_props(self.id, props)
        return self._facts

    def state(self) -> StateSnapshot:
        _code, out = self._raw_shell(_STATE_SCRIPT.strip(), self._timeout_s, "reading state")
        return parse_state(out)

    def reset(self) -> list[int]:
        """End runners left over from interrupted runs and remove their run directories.

        Only for a caller that owns the phone (a farm worker under its lease): every run
        directory present is then stale. Each runner wrote its pid to ``runner.pid``. Returns
        the pids signalled."""
        _code, out = self._raw_shell(_RESET_SCRIPT, self._timeout_s, "ending leftover runners")
        return _killed(out)

    def preflight(self, *, reset: bool, markers: Sequence[str]) -> Preflight:
        """:meth:`reset`, the markers' check and :meth:`state` in one shell command."""
        checks = [
            f"[ -f {m} ] && touch {m} && echo {_PRESENT}{m}"
            for m in (shlex.quote(self._confined(marker)) for marker in markers)
        ]
        script = "\n".join(
            [
                f"( {_RESET_SCRIPT}\n)" if reset else "true",
                *checks,
                f"echo {_STATE_MARKER}",
                _STATE_SCRIPT.strip(),
            ]
        )
        _code, out = self._raw_shell(script, self._timeout_s, "getting ready to run")
        head, sep, tail = out.rpartition(f"{_STATE_MARKER}\n")
        if not sep:
            raise InfrastructureError(f"{self.id}: getting ready to run: no state in the answer")
        present = frozenset(
            line[len(_PRESENT) :] for line in head.splitlines() if line.startswith(_PRESENT)
        )
        return Preflight(_killed(head), present, parse_state(tail))

    def usage(self, remote_dir: str) -> list[tuple[str, int, float]]:
        path = self._confined(remote_dir)
        script = (
            f"cd {shlex.quote(path)} 2>/dev/null || exit 0; for d in */; do "
            '[ -d "$d" ] || continue; '
            'echo "$(du -sk "$d" | cut -f1) $(stat -c %Y "$d.complete" 2>/dev/null || echo 0) $d"; '
            "done"
        )
        _code, out = self._raw_shell(script, self._timeout_s, f"measuring {path}")
        entries = []
        for line in out.splitlines():
            parts = line.split(maxsplit=2)
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                entries.append((parts[2].rstrip("/"), int(parts[0]) * 1024, float(parts[1])))
        return entries

    def touch(self, remote: str) -> None:
        path = self._confined(remote)
        self._raw_shell(f"touch {shlex.quote(path)}", self._timeout_s, f"touching {path}")

    def health(self, *, bundle_hash: str | None = None) -> HealthReport:
        """Reachable, shell works, free space, runtime bundle present. Never raises."""
        report = unhealthy()
        try:
            # Reachable means it answered: a connection left over from before the phone went
            # away proves nothing until a round trip over it succeeds.
            code, out = self._raw_shell("echo edgefarm-ok", self._timeout_s, "shell check")
            report["reachable"] = True
            report["shell"] = code == 0 and "edgefarm-ok" in out
            report["free_bytes"] = free = self.free_bytes()
            if bundle_hash is not None:
                report["bundle_present"] = self.exists(
                    posixpath.join(WORK_ROOT, "runtime", bundle_hash, ".complete")
                )
            report["ok"] = report["shell"] and free > MIN_FREE_BYTES
            if not report["ok"]:
                report["problem"] = "shell broken" if not report["shell"] else "low disk space"
        except InfrastructureError as exc:
            report["problem"] = exc.message
        return report


@contextmanager
def adb_device(address: str) -> Iterator[AdbDevice]:
    device = AdbDevice.open(address)
    try:
        yield device
    finally:
        device.close()
