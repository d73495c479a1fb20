"""Suites: what the farm measures every night, and when.

A suite names models (by name: a new upload under the same name is the next *version* of the
same series), backends, a device selector, measurement settings and an optional matrix of
compile options; ``tvm-cpu.opt_level: [2, 3]`` makes two *variants* of tvm-cpu, each its own
series. Its schedule is a cron expression read in the suite's time zone.

Everything here is checked when a suite is created or changed, so that a night never fails
on something a user could have been told at once (an unknown backend or option, a cron
expression that never fires): :class:`SuiteInvalid` names the field.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from harness.backends import get_backend
from harness.errors import JobError
from harness.jsontypes import MAX_THREADS
from harness.measure.protocol import NO_NUL, BackendOptions, MeasurementRequest
from harness.tuning import DEFAULT_POPULATION, MAX_POPULATION

DEFAULT_SCHEDULE = "0 2 * * *"
MAX_MODELS = 64
MAX_VARIANTS = 64  # option combinations per backend
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

SuiteName = Annotated[str, Field(pattern=NAME_PATTERN, description="letters, digits, . _ -")]
ModelName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00/\\]+$")]
BackendName = Annotated[str, Field(min_length=1, max_length=64)]


class SuiteInvalid(ValueError):
    """A suite that cannot run as given; ``field`` names what is wrong."""

    def __init__(self, field: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class SuiteDevices(BaseModel):
    """Which devices: every criterion given must hold; ``all`` alone takes every good one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # No text may hold NUL: the farm keeps suites in PostgreSQL's JSONB, which cannot.
    pool: str | None = Field(default=None, min_length=1, max_length=64, pattern=NO_NUL)
    soc: str | None = Field(default=None, min_length=1, max_length=255, pattern=NO_NUL)
    model: str | None = Field(default=None, min_length=1, max_length=255, pattern=NO_NUL)
    ids: list[int] | None = Field(default=None, min_length=1, max_length=1000)
    all: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> SuiteDevices:
        given = [k for k in ("pool", "soc", "model", "ids") if getattr(self, k) is not None]
        if self.all and given:
            raise ValueError(f"all takes every good device; give it alone, not with {given}")
        if not self.all and not given:
            raise ValueError("say which devices: pool, soc, model, ids, or all: true")
        return self


def _no_nul(value: object, field: tuple[str | int, ...]) -> None:
    """Suites are kept in PostgreSQL's JSONB, which cannot hold NUL: refuse it by name."""
    if isinstance(value, str) and "\x00" in value:
        raise SuiteInvalid(field, f"{'.'.join(map(str, field))} contains a NUL character")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, (*field, str(key)))
            _no_nul(item, (*field, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_nul(item, (*field, i))


def _check_schedule(schedule: str) -> str:
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule {schedule!r} is not a cron expression of five fields "
            "(minute hour day-of-month month day-of-week, e.g. '0 2 * * *')"
        )
    try:
        croniter(schedule, datetime(2026, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
        raise ValueError(f"schedule {schedule!r} is not a valid cron expression: {exc}") from None
    return " ".join(fields)


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"time zone {name!r} is unknown (an IANA name, e.g. Europe/Paris)"
        ) from None
    return name


Schedule = Annotated[str, Field(max_length=128, description="cron: minute hour dom month dow")]
TimeZone = Annotated[str, Field(max_length=64, description="IANA time zone of the schedule")]


class SuiteTuning(BaseModel):
    """A suite's tuning budget: each night, after its jobs are sent, the farm tunes each of
    the suite's models for tvm-cpu on the suite's device classes (``edgefarm submit --tune``
    as a night's part), measuring on phones only while no run waits for them. ``trials`` per
    task counts the records the farm has (once reached, a night tunes nothing); ``minutes``
    spends that long every night."""

    model_config = ConfigDict(extra="forbid")

    trials: int | None = Field(default=None, ge=1, le=100_000)
    minutes: float | None = Field(default=None, gt=0, le=24 * 60)
    batch: int = Field(default=16, ge=1, le=256)
    # TVM's thread pool while timing: the ``threads`` option of the suite's tvm-cpu runs
    # (0: the runtime's default).
    threads: int = Field(default=0, ge=0, le=MAX_THREADS)
    # The evolutionary search's population.
    population: int = Field(default=DEFAULT_POPULATION, ge=1, le=MAX_POPULATION)

    @model_validator(mode="after")
    def _one_budget(self) -> SuiteTuning:
        if (self.trials is None) == (self.minutes is None):
            raise ValueError("a suite's tuning takes trials (per task) or minutes, one of them")
        return self


class SuiteSpec(BaseModel):
    """What a suite measures each night."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelName] = Field(min_length=1, max_length=MAX_MODELS)
    backends: list[BackendName] = Field(min_length=1, max_length=8)
    devices: SuiteDevices = Field(default_factory=lambda: SuiteDevices(all=True))
    settings: MeasurementRequest = Field(default_factory=MeasurementRequest)
    matrix: dict[str, list[JsonValue]] = Field(
        default_factory=dict,
        description='option values to sweep, per "backend.option": one series per combination',
    )
    tuning: SuiteTuning | None = Field(
        default=None,
        description="a nightly tuning budget for tvm-cpu ({trials} per task or {minutes})",
    )

    def check(self) -> None:
        """:class:`SuiteInvalid` for a repeated model or backend, an unknown backend, or an
        option (given or swept) that the backend does not have or refuses."""
        if self.tuning is not None and "tvm-cpu" not in self.backends:
            raise SuiteInvalid(("tuning",), "tuning tunes tvm-cpu, which the suite does not use")
        _no_nul(self.settings.options, ("settings", "options"))
        _no_nul(self.matrix, ("matrix",))
        for field, values in (("models", self.models), ("backends", self.backends)):
            for i, value in enumerate(values):
                if value in values[:i]:
                    raise SuiteInvalid((field, i), f"{field[:-1]} {value!r} is given twice")
        for i, name in enumerate(self.backends):
            try:
                get_backend(name)
            except JobError as exc:
                raise SuiteInvalid(("backends", i), exc.message) from None
        for name in self.settings.options:
            if name not in self.backends:
                raise SuiteInvalid(
                    ("settings", "options", name),
                    f"settings.options names backend {name!r}, which the suite does not use",
                )
        for key, swept in self.matrix.items():
            backend, _, option = key.partition(".")
            if backend not in self.backends or not option:
                raise SuiteInvalid(
                    ("matrix", key),
                    f'matrix key {key!r} must be "backend.option" with a backend of the suite '
                    f"({', '.join(self.backends)})",
                )
            if not swept or len(swept) > MAX_VARIANTS:
                raise SuiteInvalid(
                    ("matrix", key), f"matrix {key} needs 1 to {MAX_VARIANTS} values"
                )
            if len({json.dumps(v, sort_keys=True) for v in swept}) != len(swept):
                raise SuiteInvalid(("matrix", key), f"matrix {key} repeats a value")
        for backend in self.backends:
            found = self.variants(backend)
            if len(found) > MAX_VARIANTS:
                raise SuiteInvalid(
                    ("matrix",),
                    f"{backend} has {len(found)} option combinations; at most {MAX_VARIANTS}",
                )
            for variant in found:
                try:
                    get_backend(backend).resolve_options(dict(variant.options))
                except JobError as exc:
                    raise SuiteInvalid(
                        ("matrix",) if variant.label else ("settings", "options", backend),
                        exc.message,
                    ) from None

    def variants(self, backend: str) -> list[Variant]:
        """Every combination of ``backend``'s swept options, over its fixed ones; one variant
        with an empty label when nothing is swept."""
        fixed = dict(self.settings.options.get(backend) or {})
        swept = sorted(
            (key.partition(".")[2], values)
            for key, values in self.matrix.items()
            if key.partition(".")[0] == backend
        )
        if not swept:
            return [Variant(backend, "", fixed)]
        names = [name for name, _ in swept]
        out = []
        for combination in itertools.product(*(values for _, values in swept)):
            chosen = dict(zip(names, combination, strict=True))
            label = ",".join(f"{n}={json.dumps(v, sort_keys=True)}" for n, v in chosen.items())
            out.append(Variant(backend, label, {**fixed, **chosen}))
        return out


@dataclass(frozen=True)
class Variant:
    """One combination of a backend's options: ``label`` is ``""`` or ``opt_level=2``."""

    backend: str
    label: str
    options: BackendOptions


class SuiteFields(BaseModel):
    """A suite as created: its name, what it measures and when."""

    model_config = ConfigDict(extra="forbid")

    name: SuiteName
    description: str = Field(default="", max_length=4000, pattern=NO_NUL)
    spec: SuiteSpec
    schedule: Schedule = DEFAULT_SCHEDULE
    timezone: TimeZone = "UTC"
    enabled: bool = True

    _schedule = field_validator("schedule")(_check_schedule)
    _timezone = field_validator("timezone")(_check_timezone)


class SuiteChanges(BaseModel):
    """A change to a suite: what is given replaces what was (a new spec is a new version)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)
    spec: SuiteSpec | None = None
    schedule: Schedule | None = None
    timezone: TimeZone | None = None
    enabled: bool | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return None if value is None else _check_schedule(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)


def due_time(schedule: str, timezone: str, *, now: datetime, after: datetime) -> datetime | None:
    """The latest time ``schedule`` fires at or before ``now`` and after ``after`` (UTC), or
    None. A farm that was down over several firings gets the latest one only: it runs the
    missed night once, not once per missed tick. Cron fields are read in ``timezone`` (with
    its daylight-saving shifts)."""
    zone = ZoneInfo(timezone)
    latest = croniter(schedule, now.astimezone(zone)).get_prev(datetime)
    # croniter returns the time at or before ``now`` only when ``now`` is not itself a firing.
    following = croniter(schedule, latest).get_next(datetime)
    if following <= now.astimezone(zone):
        latest = following
    fired = latest.astimezone(UTC)
    return fired if fired > after.astimezone(UTC) else None


def next_time(schedule: str, timezone: str, *, now: datetime) -> datetime:
    """When ``schedule`` fires next after ``now`` (UTC)."""
    zone = ZoneInfo(timezone)
    fired: datetime = croniter(schedule, now.astimezone(zone)).get_next(datetime)
    return fired.astimezone(UTC)
