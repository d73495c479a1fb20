"""Device leases: one run per phone at a time.

A lease is held in the ``devices`` row itself: ``state`` leaves ``idle``, ``current_run_id``
names the run and ``lease_expires_at`` says until when the holder is trusted (its worker renews
it while measuring). Taking a lease is one short transaction of the caller's:

* PostgreSQL: ``SELECT ... FOR UPDATE`` of the device row, then the update; a second taker
  waits on the row lock and then sees the device taken.
* SQLite (no row locks): one conditional ``UPDATE ... WHERE state = 'idle'``; the database
  serialises writers, and the row count says who won.

A lease held by the same run may be taken again: the run's previous attempt died (its worker
was killed) and the run's own status transition, not the lease, decides who runs it now. The
lease then names the new attempt (``lease_attempt``), and renewing, marking and releasing are
keyed by (run, attempt): an earlier attempt that turns out to be alive after all can neither
keep nor free the lease of the attempt that replaced it. Functions here never commit.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from harness.db import Device, DeviceState, utcnow

log = logging.getLogger(__name__)


def _takeable(device_id: int, run_id: int) -> list[object]:
    return [
        Device.id == device_id,
        or_(Device.state == DeviceState.idle, Device.current_run_id == run_id),
    ]


def _held(device_id: int, run_id: int, attempt: int) -> list[Any]:
    return [
        Device.id == device_id,
        Device.current_run_id == run_id,
        Device.lease_attempt == attempt,
    ]


def acquire_lease(
    session: Session,
    device_id: int,
    run_id: int,
    timeout_s: float,
    *,
    attempt: int,
    now: datetime | None = None,
) -> bool:
    """Lease ``device_id`` to attempt ``attempt`` of ``run_id`` until ``now + timeout_s``;
    False if another run holds it (or the device is gone)."""
    now = now or utcnow()
    values = {
        "state": DeviceState.leased,
        "current_run_id": run_id,
        "lease_attempt": attempt,
        "lease_expires_at": now + timedelta(seconds=timeout_s),
    }
    if session.get_bind().dialect.name == "postgresql":
        device = session.execute(
            select(Device)
            .where(Device.id == device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if device is None:
            return False
        if device.state != DeviceState.idle and device.current_run_id != run_id:
            return False
        for key, value in values.items():
            setattr(device, key, value)
        session.flush()
        return True
    result = session.execute(
        update(Device)
        .where(*_takeable(device_id, run_id))  # type: ignore[arg-type]
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew_lease(
    session: Session,
    device_id: int,
    run_id: int,
    timeout_s: float,
    *,
    attempt: int,
    now: datetime | None = None,
) -> bool:
    """Push the lease's expiry to ``now + timeout_s`` if attempt ``attempt`` of ``run_id``
    still holds it."""
    now = now or utcnow()
    result = session.execute(
        update(Device)
        .where(*_held(device_id, run_id, attempt))
        .values(lease_expires_at=now + timedelta(seconds=timeout_s), last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_running(session: Session, device_id: int, run_id: int, *, attempt: int) -> bool:
    """The lease holder started measuring: state ``leased`` becomes ``running``."""
    result = session.execute(
        update(Device)
        .where(*_held(device_id, run_id, attempt))
        .values(state=DeviceState.running)
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def release_lease(session: Session, device_id: int, run_id: int, *, attempt: int) -> bool:
    """Give the device back (idle) if attempt ``attempt`` of ``run_id`` holds it; a lease
    someone else holds by now (another run, or a later attempt of this one) is left alone.
    Returns whether anything was released."""
    result = session.execute(
        update(Device)
        .where(*_held(device_id, run_id, attempt))
        .values(
            state=DeviceState.idle,
            current_run_id=None,
            lease_attempt=None,
            lease_expires_at=None,
            last_seen_at=utcnow(),
        )
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def expire_leases(session: Session, now: datetime) -> list[int]:
    """Release every lease whose holder stopped renewing it before ``now``; the ids of the
    devices freed."""
    expired = list(
        session.scalars(
            select(Device.id).where(
                Device.state != DeviceState.idle,
                or_(Device.lease_expires_at.is_(None), Device.lease_expires_at < now),
            )
        )
    )
    if expired:
        session.execute(
            update(Device)
            .where(
                Device.id.in_(expired),
                Device.state != DeviceState.idle,
                or_(Device.lease_expires_at.is_(None), Device.lease_expires_at < now),
            )
            .values(
                state=DeviceState.idle,
                current_run_id=None,
                lease_attempt=None,
                tuning_slice_id=None,  # a tuning's slice whose worker died
                lease_expires_at=None,
            )
            .execution_options(synchronize_session="fetch")
        )
        log.warning("released expired device leases: %s", expired)
    return expired
