"""What a device reports about itself besides its facts, as typed records: a snapshot of its
state (thermal zones, battery, CPU frequencies), how a wait for it to cool went, and whether
it can take a run now. They cross into result documents, the farm's device rows and the CLI's
listings as they are; JSON keys are these names, in this order.
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict  # pydantic validates these only on 3.11


class BatteryState(TypedDict, total=False):
    """What the battery says; a key is absent when the phone does not report it."""

    level_pct: int
    temp_c: float
    status: str  # Charging, Discharging, Full, ...


class CpuState(TypedDict):
    """One CPU core's frequency and governor."""

    cur_khz: int
    governor: str
    max_khz: NotRequired[int]


class StateSnapshot(TypedDict):
    """A device's state at one moment. ``max_temp_c`` is the hottest sensor (None: none)."""

    thermal_c: dict[str, float]  # by thermal zone type
    battery: NotRequired[BatteryState]  # phones
    cpu: dict[str, CpuState]  # by core (cpu0, cpu1, ...)
    loadavg_1m: NotRequired[float]  # this machine
    max_temp_c: float | None


class Cooldown(TypedDict):
    """How waiting for a device to cool down went (recorded with each result)."""

    waited_s: float
    cooled: bool
    start_temp_c: float | None
    end_temp_c: float | None
    threshold_c: float


class CooldownWait(Cooldown):
    """:class:`Cooldown` and the last state snapshot it read."""

    state: NotRequired[StateSnapshot]


class HealthReport(TypedDict):
    """Whether a device can take a run now. ``bundle_present`` is None when no runtime bundle
    was asked about; ``problem`` says what is wrong when ``ok`` is false."""

    reachable: bool
    shell: bool
    free_bytes: int | None
    bundle_present: bool | None
    ok: bool
    problem: str | None


def unhealthy(problem: str | None = None, *, reachable: bool = False) -> HealthReport:
    """The report of a device that cannot take a run (and could not be asked much)."""
    return {
        "reachable": reachable,
        "shell": False,
        "free_bytes": None,
        "bundle_present": None,
        "ok": False,
        "problem": problem,
    }
