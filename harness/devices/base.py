"""The Device protocol: what a measurement needs from a phone (or from this machine).

Every transport (``local``, ``tcp:HOST:PORT``, ``usb:SERIAL``) implements it. Paths are
device paths (POSIX strings). Errors: a transport failure is an InfrastructureError naming the
device; nothing else escapes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from harness.devices.records import CooldownWait, HealthReport, StateSnapshot

# A device with less free space under its work root than this is unhealthy: an artifact push
# would fail halfway.
MIN_FREE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ShellResult:
    """What a shell command on the device returned."""

    exit_code: int
    stdout: str
    stderr: str = ""


@dataclass(frozen=True)
class Preflight:
    """What :meth:`Device.preflight` found right before a run: the leftover runners it ended,
    which of the markers asked about exist (each touched: recently used), the state."""

    ended: list[int]
    present: frozenset[str]
    state: StateSnapshot


def _empty(value: dict[str, str | int]) -> bool:
    return not value


class DeviceFacts(BaseModel):
    """What a device is. ``extra`` holds the raw properties it was read from (absent from the
    JSON form when there are none). The JSON form, :meth:`dump`, is what a result document's
    ``device``, a farm device row's ``facts`` and the API's devices hold."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: str  # "local" | "adb"; "" for a device never probed
    manufacturer: str = ""
    model: str = ""
    soc: str = ""
    abi: str = ""
    android_release: str = ""
    sdk_level: int | None = None
    fingerprint: str = ""
    nnapi_feature_level: int | None = None
    emulated: bool = False
    # The compile target that runs on it: "host" | "android-arm64" | "linux-arm64".
    target: str = "host"
    # What the device is, wherever it is attached: ro.serialno, ``local@HOST`` for a host.
    serial: str = ""
    extra: dict[str, str | int] = Field(default_factory=dict, exclude_if=_empty)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DeviceFacts:
        """Facts as :meth:`dump` wrote them (a registered device's, a result's); keys it does
        not know are ignored, and a device never probed (no ``kind``) counts as a phone."""
        return cls.model_validate({"kind": "", **data, "id": str(data.get("id", ""))})

    @property
    def on_this_machine(self) -> bool:
        """The device is the machine edgefarm runs on (``local``)."""
        return self.kind == "local"

    @property
    def runs_host_python(self) -> bool:
        """It can start this interpreter's Python runners (a phone has no Python)."""
        return self.on_this_machine

    @property
    def android_nnapi(self) -> bool:
        """Its NNAPI is Android's, bounded by its feature level (``nnapi_feature_level``,
        None below SDK level 27); on this machine BYOC artifacts run the host reference
        driver, which has no such bound."""
        return not self.on_this_machine

    @property
    def isa_emulated(self) -> bool:
        """Its programs run under an instruction-set emulator (an emulated arm64 phone on an
        x86-64 machine: ``extra.isa_emulator`` names it). Its latencies measure the emulator:
        neither a phone's speed nor this machine's."""
        return bool(self.extra.get("isa_emulator"))

    def dump(self) -> dict[str, JsonValue]:
        """The JSON form."""
        return self.model_dump(mode="json")

    to_dict = dump


@runtime_checkable
class Device(Protocol):
    """A place a measurement runs. Implementations: LocalDevice, AdbDevice."""

    @property
    def id(self) -> str: ...

    @property
    def work_root(self) -> str:
        """Root directory on the device under which edgefarm keeps everything."""
        ...

    def facts(self) -> DeviceFacts: ...

    def state(self) -> StateSnapshot:
        """A snapshot of thermal/battery/CPU-frequency state (may be empty for local)."""
        ...

    def push(
        self, local: Path, remote: str, *, timeout_s: float | None = None, atomic: bool = True
    ) -> None:
        """Copy a local file to ``remote``, creating parent directories. With ``atomic``, it is
        written under a temporary name and renamed, so it never looks complete when it is not."""
        ...

    def pull(self, remote: str, local: Path, *, timeout_s: float | None = None) -> None: ...

    def shell(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> ShellResult:
        """Run ``argv`` (every element quoted by the implementation) and wait at most
        ``timeout_s``; a timeout is an InfrastructureError."""
        ...

    def exists(self, remote: str) -> bool: ...

    def remove(self, remote: str) -> None:
        """Remove a file or directory tree under the work root (missing is fine)."""
        ...

    def free_bytes(self) -> int:
        """Free space under the work root."""
        ...

    def reset(self) -> list[int]:
        """End runners left over from interrupted runs and remove their run directories
        (for an exclusive owner of the device); returns the pids ended."""
        ...

    def usage(self, remote_dir: str) -> list[tuple[str, int, float]]:
        """(name, bytes, last used as a Unix time) of each subdirectory of ``remote_dir``;
        last use is the mtime of its ``.complete`` marker."""
        ...

    def touch(self, remote: str) -> None:
        """Set the mtime of ``remote`` to now."""
        ...

    def health(self, *, bundle_hash: str | None = None) -> HealthReport:
        """Whether the device can take a run now: ``reachable``, ``shell``, ``free_bytes``,
        ``bundle_present`` (when ``bundle_hash`` is given), ``ok`` and ``problem``. Never
        raises: a device that cannot be asked is not ok."""
        ...

    def preflight(self, *, reset: bool, markers: Sequence[str]) -> Preflight:
        """Right before a run, in one round trip where the transport allows: with ``reset``,
        what :meth:`reset` does; which of ``markers`` (files under the work root) exist,
        each of those touched as by :meth:`touch`; and a snapshot as :meth:`state` takes."""
        ...

    def shell_then_state(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> tuple[ShellResult, StateSnapshot]:
        """:meth:`shell`, and a :meth:`state` snapshot right after ``argv`` ends (or is
        killed at its timeout), in one round trip where the transport allows."""
        ...

    def close(self) -> None: ...


def wait_cool(
    device: Device,
    *,
    max_temp_c: float,
    max_wait_s: float,
    poll_s: float = 2.0,
    initial: StateSnapshot | None = None,
) -> CooldownWait:
    """Wait, at most ``max_wait_s``, until the device's hottest sensor is at or below
    ``max_temp_c``. Returns what happened (recorded with the result): ``waited_s``,
    ``cooled``, ``start_temp_c``, ``end_temp_c``, ``threshold_c``, and ``state``, the last
    snapshot read. A device with no temperature sensors counts as cool. ``initial``: a snapshot
    just taken, read instead of a first one."""
    started = time.monotonic()
    state = initial if initial is not None else device.state()
    first = current = state.get("max_temp_c")
    while current is not None and current > max_temp_c:
        left = max_wait_s - (time.monotonic() - started)
        if left <= 0:
            break
        time.sleep(min(poll_s, left))
        state = device.state()
        current = state.get("max_temp_c")
    hot = first is not None and first > max_temp_c
    return {
        "waited_s": round(time.monotonic() - started, 3) if hot else 0.0,
        "cooled": current is None or current <= max_temp_c,
        "start_temp_c": first,
        "end_temp_c": current,
        "threshold_c": max_temp_c,
        "state": state,
    }
