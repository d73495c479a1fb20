"""Alerts: regressions, improvements, accuracy changes and failures found in nightly series,
and their triage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import IdPath, LimitQuery, OffsetQuery, SessionDep, WriterDep, next_url
from api.errors import NOT_JSON, answers
from api.schemas import MAX_ID
from api.schemas_nightly import AlertPublic, AlertsPublic, AlertSummaryPublic, AlertUpdate
from harness.db import AlertKind, AlertState, ConfirmationStatus
from harness.farm import queries
from harness.farm.alerts import AlertFilter, get_alert, list_alerts, set_alert_state, suite_names
from harness.regression.suites import NAME_PATTERN

router = APIRouter(prefix="/alerts", tags=["alerts"])

NO_ALERT = "no such alert"


@router.get("", responses=answers(422))
def list_alerts_route(
    request: Request,
    session: SessionDep,
    state: AlertState | None = None,
    suite: Annotated[
        str | None, Query(pattern=NAME_PATTERN, max_length=128, description="a suite's name")
    ] = None,
    series: Annotated[int | None, Query(ge=1, le=MAX_ID, description="a series id")] = None,
    kind: AlertKind | None = None,
    night: Annotated[int | None, Query(ge=1, le=MAX_ID, description="a night id")] = None,
    confirmation: Annotated[
        ConfirmationStatus | None, Query(description="where its A/B confirmation stands")
    ] = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> AlertsPublic:
    """List alerts, newest first."""
    filters = AlertFilter(
        state=state,
        suite=suite,
        series_id=series,
        kind=kind,
        night_id=night,
        confirmation=confirmation,
    )
    page = list_alerts(session, filters, limit=limit, offset=offset)
    names = suite_names(session, {alert.series_id for alert in page.items})
    return AlertsPublic(
        data=[AlertSummaryPublic.of(alert, names[alert.series_id]) for alert in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{alert_id}", responses=answers(404, 422, n404=NO_ALERT))
def get_alert_route(alert_id: IdPath, session: SessionDep) -> AlertPublic:
    """One alert, with its triage history."""
    alert = get_alert(session, alert_id)
    return AlertPublic.with_events(alert, suite_names(session, {alert.series_id})[alert.series_id])


@router.patch("/{alert_id}", responses=answers(400, 401, 404, 422, n400=NOT_JSON, n404=NO_ALERT))
def patch_alert(
    alert_id: IdPath, body: AlertUpdate, session: SessionDep, writer: WriterDep
) -> AlertPublic:
    """Triage an alert: a new state and a note, recorded with who and when."""
    alert = get_alert(session, alert_id)
    set_alert_state(session, alert, body.state, actor=writer.name, note=body.note)
    return AlertPublic.with_events(alert, suite_names(session, {alert.series_id})[alert.series_id])
