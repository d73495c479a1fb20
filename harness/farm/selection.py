"""Which devices a benchmark runs on, and the device settings an operator may change."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.db import Device, DeviceHealth
from harness.errors import EdgefarmError
from harness.farm import InvalidRequest, NotFound
from harness.farm.liveness import device_worker, liveness, offered


class SelectorJson(TypedDict, total=False):
    """A :class:`DeviceSelector` as JSON (a submission's ``devices``): every criterion given
    must hold; ``all`` alone takes every good device."""

    pool: str
    soc: str
    model: str
    ids: list[int]
    all: bool


class DeviceSummary(TypedDict):
    """What a user needs to pick devices again (the API's 409 lists the farm's devices)."""

    id: int
    address: str
    pool: str
    soc: str
    model: str
    health: str


@dataclass(frozen=True)
class DeviceSelector:
    """Criteria that all have to hold (``all`` alone takes every good device).

    ``soc`` compares case-insensitively; ``model`` is a case-insensitive substring of the
    device's model name (``"pixel"`` matches ``"Pixel 3a"``); ``ids`` are device ids, each of
    which must name a good device.
    """

    pool: str | None = None
    soc: str | None = None
    model: str | None = None
    ids: tuple[int, ...] | None = None
    all: bool = False

    def criteria(self) -> SelectorJson:
        """The criteria given (``all`` apart)."""
        out: SelectorJson = {}
        if self.pool is not None:
            out["pool"] = self.pool
        if self.soc is not None:
            out["soc"] = self.soc
        if self.model is not None:
            out["model"] = self.model
        if self.ids is not None:
            out["ids"] = list(self.ids)
        return out

    def to_dict(self) -> SelectorJson:
        out = self.criteria()
        if self.all:
            out["all"] = True
        return out

    def describe(self) -> str:
        if self.all:
            return "all good devices"
        return ", ".join(f"{k}={v}" for k, v in self.criteria().items())


def device_summary(device: Device) -> DeviceSummary:
    """What a user needs to pick devices: id, address, pool, soc, model, health."""
    return {
        "id": device.id,
        "address": device.address,
        "pool": device.pool,
        "soc": device.soc,
        "model": device.model_name,
        "health": str(device.health),
    }


class NoDevicesMatch(EdgefarmError):
    """No good device fits the selector. Carries the farm's devices (the API answers 409
    with them, so that the user can pick again)."""

    def __init__(self, message: str, devices: list[DeviceSummary]) -> None:
        super().__init__(message)
        self.devices = devices


def _all_devices(session: Session) -> list[DeviceSummary]:
    return [device_summary(d) for d in session.scalars(select(Device).order_by(Device.id))]


def select_devices(
    selector: DeviceSelector, *, session: Session, suspect: bool = False
) -> list[Device]:
    """The good devices that ``selector`` matches, by id; :class:`NoDevicesMatch` when none
    does (or when an id in ``selector.ids`` is unknown or not good).

    A ``suspect`` device (its canary drifted: it works, its timings may not be its usual
    ones) is taken when ``suspect`` is set (a suite's night: its canary is how it comes back)
    or when ``selector.ids`` names it (the user asked for that phone); a benchmark that
    selects by pool, soc, model or ``all`` does not land on it unawares."""
    criteria = selector.criteria()
    if selector.all and criteria:
        raise InvalidRequest(
            "devices.all takes every good device; give it alone, without "
            f"{', '.join(sorted(criteria))}",
            field=("devices", "all"),
        )
    if not selector.all and not criteria:
        raise InvalidRequest(
            "say which devices: pool, soc, model, ids, or all: true", field=("devices",)
        )
    if selector.ids is not None and not selector.ids:
        raise InvalidRequest("devices.ids is empty", field=("devices", "ids"))
    usable = [DeviceHealth.good]
    if suspect or selector.ids is not None:
        usable.append(DeviceHealth.suspect)
    query = select(Device).where(Device.health.in_(usable)).order_by(Device.id)
    if selector.pool is not None:
        query = query.where(Device.pool == selector.pool)
    if selector.soc is not None:
        query = query.where(func.lower(Device.soc) == selector.soc.lower())
    if selector.model is not None:
        query = query.where(
            func.lower(Device.model_name).contains(selector.model.lower(), autoescape=True)
        )
    if selector.ids is not None:
        query = query.where(Device.id.in_(selector.ids))
    matching = list(session.scalars(query))
    # A device whose worker is gone would keep its runs waiting for nobody.
    live = liveness(session)
    devices = [d for d in matching if offered(d, live)]
    workerless = [d for d in matching if d not in devices]
    unattended = (
        "; without a live worker: "
        + ", ".join(f"{d.id} ({device_worker(d, live)['reason']})" for d in workerless)
        if workerless
        else ""
    )
    if selector.ids is not None:
        missing = sorted(set(selector.ids) - {d.id for d in devices})
        if missing:
            raise NoDevicesMatch(
                f"device(s) {', '.join(map(str, missing))} do not exist, are not good, have no "
                f"live worker, or do not match the other criteria ({selector.describe()})"
                + unattended,
                _all_devices(session),
            )
    if not devices:
        message = (
            "the farm has no good device with a live worker"
            if selector.all
            else f"no good device with a live worker matches {selector.describe()}"
        )
        raise NoDevicesMatch(message + unattended, _all_devices(session))
    return devices


def update_device(
    device_id: int,
    *,
    session: Session,
    pool: str | None = None,
    health: DeviceHealth | None = None,
    health_reason: str | None = None,
) -> Device:
    """Change a device's pool and health (``None``: unchanged). Marking a device good clears
    its health reason unless one is given; an empty reason clears it."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("device", "id", device_id)
    if pool is not None:
        device.pool = pool
    if health is not None:
        device.health = health
        if health == DeviceHealth.good and health_reason is None:
            device.health_reason = None
    if health_reason is not None:
        device.health_reason = health_reason or None
    session.flush()
    return device
