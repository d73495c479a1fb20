"""Devices: facts, pool, state, health and current run; pool and health are editable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import IdPath, LimitQuery, OffsetQuery, SessionDep, WriterDep, next_url
from api.errors import NOT_JSON, answers
from api.schemas import NO_NUL, DevicePublic, DevicesPublic, DeviceUpdate
from harness.db import Device, DeviceHealth, Run
from harness.farm import queries
from harness.farm.liveness import liveness
from harness.farm.selection import update_device

router = APIRouter(prefix="/devices", tags=["devices"])


def _public(devices: list[Device], session: Session) -> list[DevicePublic]:
    wanted = {d.current_run_id for d in devices if d.current_run_id is not None}
    runs = (
        {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(wanted)))} if wanted else {}
    )
    live = liveness(session)
    return [
        DevicePublic.of(d, runs.get(d.current_run_id) if d.current_run_id else None, live)
        for d in devices
    ]


@router.get("", responses=answers(422))
def list_devices(
    request: Request,
    session: SessionDep,
    pool: Annotated[str | None, Query(pattern=NO_NUL, max_length=64)] = None,
    health: DeviceHealth | None = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> DevicesPublic:
    """List devices by id."""
    page = queries.list_devices(
        session=session, limit=limit, offset=offset, pool=pool, health=health
    )
    return DevicesPublic(
        data=_public(page.items, session),
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{device_id}", responses=answers(404, 422, n404="no such device"))
def get_device(device_id: IdPath, session: SessionDep) -> DevicePublic:
    """One device."""
    return _public([queries.get_device(device_id, session=session)], session)[0]


@router.patch(
    "/{device_id}",
    responses=answers(400, 401, 404, 422, n400=NOT_JSON, n404="no such device"),
)
def patch_device(
    device_id: IdPath, body: DeviceUpdate, session: SessionDep, _writer: WriterDep
) -> DevicePublic:
    """Change a device's pool, health and health reason."""
    device = update_device(
        device_id,
        session=session,
        pool=body.pool,
        health=body.health,
        health_reason=body.health_reason,
    )
    return _public([device], session)[0]
