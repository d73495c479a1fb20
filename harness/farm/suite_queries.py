"""Reading suites and their nights: pages of suites, each suite's last night, a suite's nights
newest first, one night with its jobs. Functions take ``session`` and never commit.

Writing suites and starting nights is :mod:`harness.farm.suites`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from harness.db import Job, Night, Suite
from harness.farm import NotFound
from harness.farm.queries import DEFAULT_LIMIT, Page, paginate


def suites_page(
    session: Session,
    *,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    enabled: bool | None = None,
) -> Page[Suite]:
    """Suites by name; only enabled (or only paused) ones when ``enabled`` is given."""
    query = select(Suite).order_by(Suite.name, Suite.id)
    if enabled is not None:
        query = query.where(Suite.enabled.is_(enabled))
    return paginate(session, query, limit=limit, offset=offset)


def last_nights(session: Session, suite_ids: Sequence[int]) -> dict[int, Night]:
    """The newest night (latest scheduled time; the higher id if two share it) of each of
    ``suite_ids`` that has one."""
    # One indexed query per suite (ix_nights_suite_id): a page holds at most a few hundred.
    found: dict[int, Night] = {}
    for suite_id in suite_ids:
        night = session.scalar(
            select(Night)
            .where(Night.suite_id == suite_id)
            .order_by(Night.scheduled_for.desc(), Night.id.desc())
            .limit(1)
        )
        if night is not None:
            found[suite_id] = night
    return found


def list_nights(
    session: Session, suite: Suite, *, limit: int = DEFAULT_LIMIT, offset: int = 0
) -> Page[Night]:
    """``suite``'s nights, newest scheduled time first."""
    query = (
        select(Night)
        .where(Night.suite_id == suite.id)
        .order_by(Night.scheduled_for.desc(), Night.id.desc())
    )
    return paginate(session, query, limit=limit, offset=offset)


def get_night(session: Session, night_id: int) -> Night:
    """The night with id ``night_id``; NotFound otherwise."""
    night = session.get(Night, night_id)
    if night is None:
        raise NotFound("night", "id", night_id)
    return night


def night_jobs(session: Session, night: Night) -> list[Job]:
    """The jobs ``night`` started, by id, with their runs loaded."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.night_id == night.id)
            .order_by(Job.id)
            .options(selectinload(Job.runs))
        )
    )
