"""Jobs: their status, runs and results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import IdPath, LimitQuery, OffsetQuery, SessionDep, next_url
from api.errors import answers
from api.schemas import MAX_ID, JobPublic, JobsPublic, JobSummaryPublic
from harness.db import JobStatus
from harness.farm import queries

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", responses=answers(422))
def list_jobs(
    request: Request,
    session: SessionDep,
    status: JobStatus | None = None,
    model_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> JobsPublic:
    """List jobs, newest first, with how many runs are in each status."""
    page = queries.list_jobs(
        session=session, limit=limit, offset=offset, status=status, model_id=model_id
    )
    return JobsPublic(
        data=[JobSummaryPublic.of(job) for job in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{job_id}", responses=answers(404, 422, n404="no such job"))
def get_job(job_id: IdPath, session: SessionDep) -> JobPublic:
    """One job: its runs with status, attempts, error, and result document when done."""
    return JobPublic.of(queries.get_job(job_id, session=session))
