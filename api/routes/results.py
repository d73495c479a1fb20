"""Results: the measurement history, filtered."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BeforeValidator

from api.deps import IdPath, LimitQuery, OffsetQuery, SessionDep, next_url
from api.errors import answers
from api.schemas import MAX_ID, NO_NUL, ResultPublic, ResultsPublic
from harness.farm import queries

router = APIRouter(prefix="/results", tags=["results"])

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _not_a_number(value: object) -> object:
    # pydantic reads a bare number as epoch seconds ("-1.5" is 1969): not part of the contract.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("since is an ISO 8601 date and time (2026-01-31T12:00:00Z), not a number")
    return value


def _in_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("since is out of range once in UTC") from None


Since = Annotated[
    datetime | None,
    BeforeValidator(_not_a_number),
    AfterValidator(_in_utc),
    Query(
        description="created at or after: an ISO 8601 date and time, e.g. "
        "2026-01-31T12:00:00Z or 2026-01-31T14:00:00+02:00; without a zone it is UTC. "
        "Numbers (epoch seconds) are refused."
    ),
]


@router.get("", responses=answers(422))
def list_results(
    request: Request,
    session: SessionDep,
    model: Annotated[
        str | None,
        Query(pattern=NO_NUL, max_length=255, description="model id, sha256 or name"),
    ] = None,
    device: Annotated[int | None, Query(ge=1, le=MAX_ID, description="device id")] = None,
    backend: Annotated[str | None, Query(pattern=NO_NUL, max_length=64)] = None,
    since: Since = None,
    status: Literal["ok", "failed"] | None = None,
    job: Annotated[int | None, Query(ge=1, le=MAX_ID, description="job id")] = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> ResultsPublic:
    """List results, newest first; filters combine."""
    filters = queries.ResultFilter(
        model=model, device=device, backend=backend, since=since, status=status, job=job
    )
    page = queries.list_results(filters, session=session, limit=limit, offset=offset)
    return ResultsPublic(
        data=[ResultPublic.of(r) for r in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{result_id}", responses=answers(404, 422, n404="no such result"))
def get_result(result_id: IdPath, session: SessionDep) -> ResultPublic:
    """One result and its document."""
    return ResultPublic.of(queries.get_result(result_id, session=session))
