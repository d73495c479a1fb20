"""The device registry: a worker host announces the phones attached to it.

Registering opens the device and reads its facts, so a row always describes what is really
there. A device is identified by its serial (``ro.serialno``), not by its address: a phone that
comes back at another address (an emulated phone restarted on a new port, a phone with a new
IP) is found again — the same row, its history and its queue — and its address is updated. A
row without a serial (registered before serials were kept) is adopted by the first device
registered at its address.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.db import Device, DeviceHealth, utcnow
from harness.devices import open_device
from harness.devices.records import HealthReport, unhealthy
from harness.errors import EdgefarmError

log = logging.getLogger(__name__)

# Health an operator set on purpose; a worker coming up does not override it.
_OPERATOR_HEALTH = (DeviceHealth.maintenance, DeviceHealth.retired)


def register_device(
    address: str, *, session: Session, pool: str = "default", worker: str | None = None
) -> Device:
    """Open the device at ``address``, read its facts and upsert its row (health good unless
    an operator set maintenance/retired). Raises what opening it raises: InfrastructureError
    when it cannot be reached, JobError for a malformed address."""
    device = open_device(address)
    try:
        facts = device.facts()
    finally:
        device.close()
    serial = facts.serial or None
    row = session.scalar(select(Device).where(Device.serial == serial)) if serial else None
    holder = session.scalar(select(Device).where(Device.address == address))
    if row is None and holder is not None and holder.serial in (None, serial):
        row = holder
    if holder is not None and holder is not row:
        # Another device was registered here before: it has moved, or it is gone. Its row
        # keeps its history; its address no longer leads anywhere.
        holder.address = f"gone:{holder.id}:{address}"[:255]
        if holder.health not in _OPERATOR_HEALTH:
            holder.health = DeviceHealth.bad
            holder.health_reason = f"another device ({serial}) is at {address} now"
        session.flush()
        log.warning("device %s is no longer at %s (%s is)", holder.id, address, serial)
    if row is None:
        row = Device(address=address, serial=serial)
        session.add(row)
    elif row.address != address:
        log.info("device %s (%s) moved from %s to %s", row.id, serial, row.address, address)
    row.address = address
    row.serial = serial
    row.pool = pool
    row.facts = facts.to_dict()
    row.soc = facts.soc[:64]
    row.model_name = facts.model[:128]
    row.target = facts.target
    row.worker = worker
    row.last_seen_at = utcnow()
    if row.health not in (*_OPERATOR_HEALTH, DeviceHealth.suspect):  # its canary decides
        row.health = DeviceHealth.good
        row.health_reason = None
    session.flush()
    log.info("registered %s as device %s (%s, %s)", address, row.id, facts.model, row.target)
    return row


def mark_unreachable(address: str, reason: str, *, session: Session) -> Device | None:
    """Set the health of the device at ``address`` to bad with ``reason``, if it is known."""
    row = session.scalar(select(Device).where(Device.address == address))
    if row is not None and row.health not in _OPERATOR_HEALTH:
        row.health = DeviceHealth.bad
        row.health_reason = reason
        session.flush()
    return row


def record_health(session: Session, device: Device, health: HealthReport) -> None:
    """A health check's verdict becomes the device's health (good or bad, with the problem);
    what an operator set (maintenance, retired) stays, and a passed check leaves a
    ``suspect`` phone suspect (its canary decides)."""
    if device.health in (DeviceHealth.maintenance, DeviceHealth.retired):
        return
    if health["ok"]:
        if device.health == DeviceHealth.bad:
            log.info("device %s passes its health check again", device.address)
        # A suspect phone answers its checks; only its canary says when it is good again.
        if device.health != DeviceHealth.suspect:
            device.health, device.health_reason = DeviceHealth.good, None
    else:
        if device.health == DeviceHealth.good:
            log.warning("device %s failed its health check: %s", device.address, health["problem"])
        device.health = DeviceHealth.bad
        device.health_reason = f"health check: {health['problem']}"
    device.last_seen_at = utcnow()


def check_device(session: Session, device: Device) -> HealthReport:
    """Run the device's health check now and record it (not committed). Opening the device
    may take up to the ADB timeout when it is gone."""
    try:
        handle = open_device(device.address)
    except EdgefarmError as exc:
        health = unhealthy(exc.message)
    else:
        try:
            health = handle.health()
        finally:
            handle.close()
    record_health(session, device, health)
    return health
