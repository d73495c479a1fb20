"""Suites: what the farm measures every night; their nights, on-demand runs and webhooks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import (
    LimitQuery,
    OffsetQuery,
    SessionDep,
    SettingsDep,
    TokenDep,
    WriterDep,
    next_url,
)
from api.errors import NOT_JSON, answers
from api.queue import enqueue_job, enqueue_tuning
from api.schemas_nightly import (
    NightPublic,
    NightsPublic,
    NightStarted,
    NightSummaryPublic,
    SuiteCreate,
    SuitePublic,
    SuitesPublic,
    SuiteUpdate,
    WebhookCreate,
    WebhookCreated,
    WebhookPublic,
    WebhooksPublic,
)
from harness.db import Night, NightTrigger, Suite, utcnow
from harness.farm import queries
from harness.farm import suites as store
from harness.farm.suite_queries import last_nights, list_nights, night_jobs, suites_page
from harness.farm.webhooks import create_webhook, list_webhooks
from harness.regression.suites import NAME_PATTERN, SuiteChanges

router = APIRouter(prefix="/suites", tags=["suites"])

SuiteName = Annotated[
    str, Path(pattern=NAME_PATTERN, max_length=128, description="the suite's name (or id)")
]
NO_SUITE = "no such suite"


def _public(session: Session, suite: Suite) -> SuitePublic:
    return SuitePublic.of(suite, last_nights(session, [suite.id]).get(suite.id))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=answers(400, 401, 422, n400=NOT_JSON),
)
def create_suite(body: SuiteCreate, session: SessionDep, writer: WriterDep) -> SuitePublic:
    """Create a suite (version 1)."""
    suite = store.create_suite(session, body, created_by=writer.name)
    return _public(session, suite)


@router.get("", responses=answers(422))
def list_suites(
    request: Request,
    session: SessionDep,
    enabled: Annotated[bool | None, Query(description="false: the paused ones")] = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> SuitesPublic:
    """List suites by name."""
    page = suites_page(session, limit=limit, offset=offset, enabled=enabled)
    last = last_nights(session, [suite.id for suite in page.items])
    return SuitesPublic(
        data=[SuitePublic.of(suite, last.get(suite.id)) for suite in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{name}", responses=answers(404, 422, n404=NO_SUITE))
def get_suite(name: SuiteName, session: SessionDep) -> SuitePublic:
    """One suite, with its next scheduled time and its last night."""
    return _public(session, store.get_suite(session, name))


@router.patch("/{name}", responses=answers(400, 401, 404, 422, n400=NOT_JSON, n404=NO_SUITE))
def patch_suite(
    name: SuiteName, body: SuiteUpdate, session: SessionDep, _writer: WriterDep
) -> SuitePublic:
    """Change a suite; a changed spec is its next version."""
    suite = store.update_suite(session, store.get_suite(session, name), body)
    return _public(session, suite)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=answers(401, 404, 422, n404=NO_SUITE),
)
def delete_suite(name: SuiteName, session: SessionDep, _writer: WriterDep) -> Response:
    """Delete a suite with its nights, series, alerts and webhooks (its jobs stay)."""
    store.delete_suite(session, store.get_suite(session, name))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/pause", responses=answers(401, 404, 422, n404=NO_SUITE))
def pause_suite(name: SuiteName, session: SessionDep, _writer: WriterDep) -> SuitePublic:
    """Stop scheduling a suite's nights (it still runs on demand)."""
    suite = store.update_suite(session, store.get_suite(session, name), SuiteChanges(enabled=False))
    return _public(session, suite)


@router.post("/{name}/resume", responses=answers(401, 404, 422, n404=NO_SUITE))
def resume_suite(name: SuiteName, session: SessionDep, _writer: WriterDep) -> SuitePublic:
    """Schedule a paused suite's nights again (from the next scheduled time on)."""
    suite = store.update_suite(session, store.get_suite(session, name), SuiteChanges(enabled=True))
    return _public(session, suite)


@router.post(
    "/{name}/runs",
    status_code=status.HTTP_201_CREATED,
    responses=answers(401, 404, 422, n404=NO_SUITE),
)
def run_suite(
    name: SuiteName, session: SessionDep, settings: SettingsDep, _writer: WriterDep
) -> NightStarted:
    """Start a night of the suite now; its jobs are queued for the workers."""
    suite = store.get_suite(session, name)
    when = utcnow()
    started = store.start_night(session, suite, scheduled_for=when, trigger=NightTrigger.manual)
    if started is None:  # a night at this very microsecond exists: that is the one asked for
        night = session.scalar(
            select(Night).where(Night.suite_id == suite.id, Night.scheduled_for == when)
        )
        assert night is not None
        job_ids = [job.id for job in night_jobs(session, night)]
        tuning_ids: list[int] = []
    else:
        night, job_ids, tuning_ids = started.night, started.job_ids, started.tuning_ids
    # The workers must find the jobs and their runs when the messages arrive: commit first.
    session.commit()
    enqueued = all([enqueue_job(job_id, settings=settings) for job_id in job_ids])
    # The suite's tuning budget, after the jobs: their runs come first on every phone.
    enqueued = all([enqueue_tuning(t, settings=settings) for t in tuning_ids]) and enqueued
    public = NightPublic.of(night, suite, night_jobs(session, night))
    return NightStarted(**public.model_dump(), enqueued=enqueued)


@router.get("/{name}/nights", responses=answers(404, 422, n404=NO_SUITE))
def list_suite_nights(
    request: Request,
    name: SuiteName,
    session: SessionDep,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> NightsPublic:
    """A suite's nights, newest first."""
    page = list_nights(session, store.get_suite(session, name), limit=limit, offset=offset)
    return NightsPublic(
        data=[NightSummaryPublic.model_validate(night) for night in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.post(
    "/{name}/webhooks",
    status_code=status.HTTP_201_CREATED,
    responses=answers(400, 401, 404, 422, n400=NOT_JSON, n404=NO_SUITE),
)
def add_suite_webhook(
    name: SuiteName, body: WebhookCreate, session: SessionDep, _writer: WriterDep
) -> WebhookCreated:
    """Add a webhook to a suite; the answer shows its secret, this once."""
    webhook = create_webhook(
        session, store.get_suite(session, name), url=body.url, secret=body.secret
    )
    return WebhookCreated(**WebhookPublic.of(webhook).model_dump(), secret=webhook.secret)


# A webhook's URL is often a credential itself (chat services put their key in it): reading
# webhooks takes the token even when reads are open.
@router.get("/{name}/webhooks", responses=answers(401, 404, 422, n404=NO_SUITE))
def list_suite_webhooks(name: SuiteName, session: SessionDep, _reader: TokenDep) -> WebhooksPublic:
    """A suite's webhooks (never their secrets); needs the token."""
    found = list_webhooks(session, store.get_suite(session, name))
    return WebhooksPublic(data=[WebhookPublic.of(w) for w in found], count=len(found), next=None)
