"""Phones over ADB (adb-shell): ``tcp:HOST:PORT`` (a phone in ``adb tcpip`` mode, or an
emulated phone) and ``usb:SERIAL``: the :class:`~harness.devices.base.Device` on top of
:mod:`~harness.devices.adbconn` (the connection), :mod:`~harness.devices.adbshell` (quoted,
confined command lines), :mod:`~harness.devices.adbscripts` (state and reset scripts) and
:mod:`~harness.devices.adbfacts` (``getprop``).
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.config import get_settings
from harness.devices.adbconn import AdbConnection
from harness.devices.adbfacts import facts_from_props, parse_getprop
from harness.devices.adbscripts import (
    PRESENT_MARKER,
    RESET_SCRIPT,
    STATE_MARKER,
    STATE_SCRIPT,
    killed_pids,
    parse_state,
)
from harness.devices.adbshell import WORK_ROOT, check_timeout, command_line, confined
from harness.devices.address import DeviceAddress
from harness.devices.base import MIN_FREE_BYTES, DeviceFacts, Preflight, ShellResult
from harness.devices.records import HealthReport, StateSnapshot, unhealthy
from harness.errors import InfrastructureError, JobError

log = logging.getLogger(__name__)

__all__ = ["WORK_ROOT", "AdbDevice", "adb_device"]


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
        self._conn = AdbConnection(
            parsed, timeout_s=self._timeout_s, config_dir=settings.config_path
        )
        self._facts: DeviceFacts | None = None

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
        self._conn.connect()

    def close(self) -> None:
        self._conn.close()

    # -- shell -----------------------------------------------------------------------------

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
        command = command_line(self.id, argv, timeout_s=timeout_s, env=env, cwd=cwd)
        started = time.monotonic()
        code, output = self._conn.run(command, timeout_s + 10, f"running {Path(argv[0]).name}")
        check_timeout(self.id, argv, code, started, timeout_s)
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
        command = command_line(self.id, argv, timeout_s=timeout_s, env=env, cwd=cwd)
        script = f"{command}\nrc=$?; echo; echo {STATE_MARKER}\n{STATE_SCRIPT.strip()}\nexit $rc"
        started = time.monotonic()
        code, output = self._conn.run(script, timeout_s + 15, f"running {Path(argv[0]).name}")
        check_timeout(self.id, argv, code, started, timeout_s)
        head, sep, tail = output.rpartition(f"\n{STATE_MARKER}\n")
        if not sep:
            raise InfrastructureError(f"{self.id}: no state after {Path(argv[0]).name}")
        # The newline echoed before the marker went with the marker: ``head`` is the output.
        return ShellResult(exit_code=code, stdout=head), parse_state(tail)

    def run_script(self, script: str, *, timeout_s: float | None = None) -> tuple[int, str]:
        """Run a fixed script of ours (never built from user input)."""
        return self._conn.run(script.strip(), timeout_s or self._timeout_s, "a shell command")

    # -- files -----------------------------------------------------------------------------

    def push(
        self, local: Path, remote: str, *, timeout_s: float | None = None, atomic: bool = True
    ) -> None:
        """Push ``local`` to ``remote``. Atomic by default: written under a temporary name and
        renamed, so a broken push never leaves something that looks complete. adbd creates
        missing parent directories itself (sync SEND)."""
        dest = confined(self.id, remote)
        target = f"{dest}.partial-{uuid.uuid4().hex[:8]}" if atomic else dest
        size = local.stat().st_size
        timeout = timeout_s or max(self._timeout_s, self._transfer_timeout_s)
        mode = 0o100755 if local.stat().st_mode & 0o111 else 0o100644
        try:
            self._conn.call(
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
            code, out = self._conn.run(
                f"mv -f {shlex.quote(target)} {shlex.quote(dest)}", self._timeout_s, "rename"
            )
            if code != 0:
                self._cleanup(target)
                raise InfrastructureError(f"{self.id}: renaming {target} failed: {out.strip()}")

    def _cleanup(self, remote: str) -> None:
        try:
            self._conn.run(f"rm -f {shlex.quote(remote)}", self._timeout_s, "cleanup")
        except InfrastructureError:
            log.info("%s: could not remove %s (the phone is gone?)", self.id, remote)

    def pull(self, remote: str, local: Path, *, timeout_s: float | None = None) -> None:
        src = confined(self.id, remote)
        timeout = timeout_s or max(self._timeout_s, self._transfer_timeout_s)
        tmp = local.with_name(f".{local.name}.partial")
        try:
            self._conn.call(
                f"pulling {posixpath.basename(src)}",
                lambda adb: adb.pull(
                    src, str(tmp), transport_timeout_s=timeout, read_timeout_s=timeout
                ),
            )
            tmp.replace(local)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, remote: str) -> bool:
        path = confined(self.id, remote)
        mode, _size, _mtime = self._conn.call(f"stat {path}", lambda adb: adb.stat(path))
        return bool(mode)

    def remove(self, remote: str) -> None:
        path = confined(self.id, remote)
        if path == WORK_ROOT:
            raise JobError("run", f"{self.id}: refusing to remove the whole work root")
        self._conn.run(f"rm -rf {shlex.quote(path)}", self._timeout_s, f"removing {path}")

    def list_dir(self, remote: str) -> list[tuple[str, int, int]]:
        """(name, size, mtime) of the entries of a directory under the work root."""
        path = confined(self.id, remote)
        entries = self._conn.call(f"listing {path}", lambda adb: adb.list(path))
        return [
            (e.filename.decode(errors="replace"), int(e.size), int(e.mtime))
            for e in entries
            if e.filename not in (b".", b"..")
        ]

    def free_bytes(self) -> int:
        code, out = self._conn.run(
            f"mkdir -p {WORK_ROOT} && df -k {WORK_ROOT}", self._timeout_s, "df"
        )
        lines = [ln.split() for ln in out.strip().splitlines() if ln.strip()]
        if code != 0 or len(lines) < 2 or len(lines[-1]) < 4 or not lines[-1][3].isdigit():
            raise InfrastructureError(f"{self.id}: cannot read free space: {out.strip()[:200]}")
        return int(lines[-1][3]) * 1024

    # -- facts and state -------------------------------------------------------------------

    def facts(self) -> DeviceFacts:
        if self._facts is None:
            code, out = self._conn.run("getprop", self._timeout_s, "getprop")
            props = parse_getprop(out)
            if code != 0 or not props:
                raise InfrastructureError(f"{self.id}: getprop returned nothing usable")
            self._facts = facts_from_props(self.id, props)
        return self._facts

    def state(self) -> StateSnapshot:
        _code, out = self._conn.run(STATE_SCRIPT.strip(), self._timeout_s, "reading state")
        return parse_state(out)

    def reset(self) -> list[int]:
        """End runners left over from interrupted runs and remove their run directories.

        Only for a caller that owns the phone (a farm worker under its lease): every run
        directory present is then stale. Each runner wrote its pid to ``runner.pid``. Returns
        the pids signalled."""
        _code, out = self._conn.run(RESET_SCRIPT, self._timeout_s, "ending leftover runners")
        return killed_pids(out)

    def preflight(self, *, reset: bool, markers: Sequence[str]) -> Preflight:
        """:meth:`reset`, the markers' check and :meth:`state` in one shell command."""
        checks = [
            f"[ -f {m} ] && touch {m} && echo {PRESENT_MARKER}{m}"
            for m in (shlex.quote(confined(self.id, marker)) for marker in markers)
        ]
        script = "\n".join(
            [
                f"( {RESET_SCRIPT}\n)" if reset else "true",
                *checks,
                f"echo {STATE_MARKER}",
                STATE_SCRIPT.strip(),
            ]
        )
        _code, out = self._conn.run(script, self._timeout_s, "getting ready to run")
        head, sep, tail = out.rpartition(f"{STATE_MARKER}\n")
        if not sep:
            raise InfrastructureError(f"{self.id}: getting ready to run: no state in the answer")
        present = frozenset(
            line[len(PRESENT_MARKER) :]
            for line in head.splitlines()
            if line.startswith(PRESENT_MARKER)
        )
        return Preflight(killed_pids(head), present, parse_state(tail))

    def usage(self, remote_dir: str) -> list[tuple[str, int, float]]:
        path = confined(self.id, remote_dir)
        script = (
            f"cd {shlex.quote(path)} 2>/dev/null || exit 0; for d in */; do "
            '[ -d "$d" ] || continue; '
            'echo "$(du -sk "$d" | cut -f1) $(stat -c %Y "$d.complete" 2>/dev/null || echo 0) $d"; '
            "done"
        )
        _code, out = self._conn.run(script, self._timeout_s, f"measuring {path}")
        entries = []
        for line in out.splitlines():
            parts = line.split(maxsplit=2)
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                entries.append((parts[2].rstrip("/"), int(parts[0]) * 1024, float(parts[1])))
        return entries

    def touch(self, remote: str) -> None:
        path = confined(self.id, remote)
        self._conn.run(f"touch {shlex.quote(path)}", self._timeout_s, f"touching {path}")

    def health(self, *, bundle_hash: str | None = None) -> HealthReport:
        """Reachable, shell works, free space, runtime bundle present. Never raises."""
        report = unhealthy()
        try:
            # Reachable means it answered: a connection left over from before the phone went
            # away proves nothing until a round trip over it succeeds.
            code, out = self._conn.run("echo edgefarm-ok", self._timeout_s, "shell check")
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
