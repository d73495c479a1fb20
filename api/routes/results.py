"""Results: the measurement history, filtered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from api.deps import IdPath, SessionDep, next_url
from api.schemas import MAX_ID, ErrorPublic, ResultPublic, ResultsPublic
from harness.farm import queries

router = APIRouter(prefix="/results", tags=["results"])


@router.get("")
def list_results(
    request: Request,
    session: SessionDep,
    model: Annotated[str | None, Query(description="model id, sha256 or name")] = None,
    device: Annotated[int | None, Query(ge=1, le=MAX_ID, description="device id")] = None,
    backend: str | None = None,
    since: Annotated[
        datetime | None, Query(description="created at or after (ISO 8601; UTC if no zone)")
    ] = None,
    status: Literal["ok", "failed"] | None = None,
    job: Annotated[int | None, Query(ge=1, le=MAX_ID, description="job id")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = queries.DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ResultsPublic:
    """List results, newest first; filters combine."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    filters = queries.ResultFilter(
        model=model, device=device, backend=backend, since=since, status=status, job=job
    )
    page = queries.list_results(filters, session=session, limit=limit, offset=offset)
    return ResultsPublic(
        data=[ResultPublic.of(r) for r in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{result_id}", responses={404: {"model": ErrorPublic}})
def get_result(result_id: IdPath, session: SessionDep) -> ResultPublic:
    """One result and its document."""
    return ResultPublic.of(queries.get_result(result_id, session=session))
