"""Reading and triaging alerts. Functions take ``session`` and never commit.

An alert's state changes only through :func:`set_alert_state`, which records who changed it,
when and why (an :class:`~harness.db.AlertEvent`): the history is what the false-alarm rate is
measured from (alerts marked ``invalid`` over all triaged alerts). Alerts are *created* by the
nightly analysis (:mod:`harness.farm.analysis`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from harness.db import (
    Alert,
    AlertEvent,
    AlertKind,
    AlertState,
    ConfirmationStatus,
    Series,
    Suite,
    utcnow,
)
from harness.farm import NotFound
from harness.farm.queries import DEFAULT_LIMIT, Page, paginate


@dataclass(frozen=True)
class AlertFilter:
    """What to list: every criterion given must hold."""

    state: AlertState | None = None
    suite: str | None = None  # the suite's name
    series_id: int | None = None
    kind: AlertKind | None = None
    night_id: int | None = None
    confirmation: ConfirmationStatus | None = None


def list_alerts(
    session: Session,
    filters: AlertFilter = AlertFilter(),
    *,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Page[Alert]:
    """Alerts newest first, each with its series loaded."""
    query = (
        select(Alert)
        .order_by(Alert.created_at.desc(), Alert.id.desc())
        .options(selectinload(Alert.series))
    )
    if filters.state is not None:
        query = query.where(Alert.state == filters.state)
    if filters.kind is not None:
        query = query.where(Alert.kind == filters.kind)
    if filters.series_id is not None:
        query = query.where(Alert.series_id == filters.series_id)
    if filters.night_id is not None:
        query = query.where(Alert.night_id == filters.night_id)
    if filters.confirmation is not None:
        query = query.where(Alert.confirmation_status == filters.confirmation)
    if filters.suite is not None:
        query = query.where(
            Alert.series_id.in_(
                select(Series.id)
                .join(Suite, Series.suite_id == Suite.id)
                .where(Suite.name == filters.suite)
            )
        )
    return paginate(session, query, limit=limit, offset=offset)


def get_alert(session: Session, alert_id: int) -> Alert:
    """The alert with its series and its history loaded; NotFound otherwise."""
    alert = session.scalar(
        select(Alert)
        .where(Alert.id == alert_id)
        .options(selectinload(Alert.series), selectinload(Alert.events))
    )
    if alert is None:
        raise NotFound("alert", "id", alert_id)
    return alert


def set_alert_state(
    session: Session, alert: Alert, state: AlertState, *, actor: str, note: str = ""
) -> AlertEvent:
    """Move ``alert`` to ``state`` and record it in its history (also when the state stays
    the same: a note on an acknowledged alert is history too)."""
    now = utcnow()
    event = AlertEvent(alert_id=alert.id, state=state, actor=actor, note=note, at=now)
    session.add(event)
    alert.state = state
    alert.updated_at = now
    session.flush()
    session.refresh(alert, attribute_names=["events"])
    return event


def suite_names(session: Session, series_ids: set[int]) -> dict[int, str]:
    """The suite name of each series id given (for alerts' public form)."""
    if not series_ids:
        return {}
    rows = session.execute(
        select(Series.id, Suite.name)
        .join(Suite, Series.suite_id == Suite.id)
        .where(Series.id.in_(series_ids))
    ).all()
    return {series_id: name for series_id, name in rows}
