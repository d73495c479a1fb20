"""Tunings: MetaSchedule's search as a farm job, its candidates measured on the phones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlalchemy import select

from api.deps import IdPath, LimitQuery, OffsetQuery, SessionDep, SettingsDep, WriterDep, next_url
from api.errors import NOT_JSON, answers
from api.queue import enqueue_tuning
from api.schemas import MAX_ID
from api.schemas_tuning import TuningCreate, TuningPublic, TuningsPublic, TuningsSubmitted
from harness.db import Tuning, TuningStatus, utcnow
from harness.farm import NotFound, queries
from harness.farm import tunings as farm_tunings
from harness.farm.tunings import create_tunings

router = APIRouter(prefix="/tunings", tags=["tunings"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=answers(400, 401, 404, 409, 422, n400=NOT_JSON, n404="no such model"),
)
def submit_tuning(
    body: TuningCreate, session: SessionDep, settings: SettingsDep, writer: WriterDep
) -> TuningsSubmitted:
    """Tune a model: one tuning per device class of the selected devices."""
    # Searched on the ``tuning`` queue, candidates measured on the class's idle phones; the
    # records go to the farm's database, and every later tvm-cpu build for the class applies
    # them (harness.farm.tunings, workers.tasks.tuning).
    model = queries.named_model(body.model_id, body.model_sha256, session=session)
    tunings = create_tunings(body.request(), model=model, session=session, submitted_by=writer.name)
    now = utcnow()
    for tuning in tunings:
        tuning.enqueued_at = now
    session.commit()  # the worker must find the rows when the message arrives
    enqueued = all([enqueue_tuning(t.id, settings=settings) for t in tunings])
    return TuningsSubmitted(data=[TuningPublic.of(t) for t in tunings], enqueued=enqueued)


@router.get("", responses=answers(422))
def list_tunings(
    request: Request,
    session: SessionDep,
    status: TuningStatus | None = None,
    model_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> TuningsPublic:
    """List tunings, newest first."""
    query = select(Tuning)
    if status is not None:
        query = query.where(Tuning.status == status)
    if model_id is not None:
        query = query.where(Tuning.model_id == model_id)
    page = queries.paginate(session, query.order_by(Tuning.id.desc()), limit=limit, offset=offset)
    return TuningsPublic(
        data=[TuningPublic.of(t) for t in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


def _get(tuning_id: int, session: SessionDep) -> Tuning:
    tuning = session.get(Tuning, tuning_id)
    if tuning is None:
        raise NotFound("tuning", "id", tuning_id)
    return tuning


@router.get("/{tuning_id}", responses=answers(404, 422, n404="no such tuning"))
def get_tuning(tuning_id: IdPath, session: SessionDep) -> TuningPublic:
    """One tuning: its budget, status and report (tasks, trials, records saved, phones)."""
    return TuningPublic.of(_get(tuning_id, session))


@router.post("/{tuning_id}/cancel", responses=answers(401, 404, 422, n404="no such tuning"))
def cancel_tuning(tuning_id: IdPath, session: SessionDep, writer: WriterDep) -> TuningPublic:
    """Stop a tuning after the batch it is measuring; its records stay."""
    # A later tuning of the model continues from them. An ended tuning is answered as it is.
    _get(tuning_id, session)
    farm_tunings.cancel_tuning(session, tuning_id)
    session.commit()
    return TuningPublic.of(_get(tuning_id, session))
