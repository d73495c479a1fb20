"""Nights: one suite's measurements for one scheduled time, with their jobs."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import IdPath, SessionDep
from api.errors import answers
from api.schemas_nightly import NightPublic
from harness.farm.suite_queries import get_night, night_jobs

router = APIRouter(prefix="/nights", tags=["suites"])


@router.get("/{night_id}", responses=answers(404, 422, n404="no such night"))
def get_night_route(night_id: IdPath, session: SessionDep) -> NightPublic:
    """One night: its status, toolchain, problems and jobs."""
    night = get_night(session, night_id)
    return NightPublic.of(night, night.suite, night_jobs(session, night))
