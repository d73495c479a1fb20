"""Reading the farm: models, devices, jobs with their runs and results, result history.

Pagination is by ``limit`` (at most :data:`MAX_LIMIT`) and ``offset`` (at most
:data:`MAX_OFFSET`) over a stable order, newest first: ``created_at`` descending, then ``id``
descending to break ties. Result history filtered by model, device and backend walks
``ix_results_points`` (model_id, device_id, backend, created_at) backwards; unfiltered
listings walk ``ix_results_created``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from harness.db import Device, Job, Model, Result, Run
from harness.farm import InvalidRequest, NotFound

MAX_LIMIT = 1000
MAX_ID = 2**31 - 1  # ids are PostgreSQL integers
# No table holds more rows than there are ids; a larger offset would not fit PostgreSQL's
# bigint OFFSET at all.
MAX_OFFSET = MAX_ID
DEFAULT_LIMIT = 100
T = TypeVar("T")

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the total count of what matched."""

    items: list[T]
    count: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        following = self.offset + len(self.items)
        return following if self.items and following < self.count else None


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit is 1 to {MAX_LIMIT}, not {limit}", field=("query", "limit"))
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidRequest(
            f"offset is 0 to {MAX_OFFSET}, not {offset}", field=("query", "offset")
        )


def _page(session: Session, query: Select[T], limit: int, offset: int) -> Page[T]:
    check_page(limit, offset)
    count = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = list(session.scalars(query.limit(limit).offset(offset)))
    return Page(items=items, count=count or 0, limit=limit, offset=offset)


def paginate(session: Session, query: Select[T], *, limit: int, offset: int) -> Page[T]:
    """One page of ``query`` (which must have a stable order) and the count of all it
    matches; InvalidRequest for a limit or offset out of bounds."""
    return _page(session, query, limit, offset)


# Models.


def get_model(model_id: int, *, session: Session) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound("model", "id", model_id)
    return model


def get_model_by_sha256(sha256: str, *, session: Session) -> Model:
    model = session.scalar(select(Model).where(Model.sha256 == sha256.lower()))
    if model is None:
        raise NotFound("model", "sha256", sha256)
    return model


def named_model(model_id: int | None, sha256: str | None, *, session: Session) -> Model:
    """The model a submission names, by id or else by sha256 (its schema demands one)."""
    if model_id is not None:
        return get_model(model_id, session=session)
    assert sha256 is not None
    return get_model_by_sha256(sha256, session=session)


def list_models(
    *, session: Session, limit: int = DEFAULT_LIMIT, offset: int = 0, name: str | None = None
) -> Page[Model]:
    query = select(Model).order_by(Model.created_at.desc(), Model.id.desc())
    if name is not None:
        query = query.where(Model.name == name)
    return _page(session, query, limit, offset)


def model_ids(ref: str, *, session: Session) -> list[int]:
    """The models ``ref`` names: digits are an id, 64 hex digits a sha256, anything else a
    name (several models may share one)."""
    ref = ref.strip()
    if ref.isdigit() and int(ref) <= MAX_ID:
        return [int(ref)]
    column = Model.sha256 if _SHA256.match(ref) else Model.name
    value = ref.lower() if _SHA256.match(ref) else ref
    return list(session.scalars(select(Model.id).where(column == value).order_by(Model.id)))


# Devices.


def get_device(device_id: int, *, session: Session) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("device", "id", device_id)
    return device


def list_devices(
    *,
    session: Session,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    pool: str | None = None,
    health: str | None = None,
) -> Page[Device]:
    query = select(Device).order_by(Device.id)
    if pool is not None:
        query = query.where(Device.pool == pool)
    if health is not None:
        query = query.where(Device.health == health)
    return _page(session, query, limit, offset)


# Jobs.


def get_job(job_id: int, *, session: Session) -> Job:
    """The job with its runs and each run's result loaded."""
    job = session.scalar(
        select(Job).where(Job.id == job_id).options(selectinload(Job.runs).selectinload(Run.result))
    )
    if job is None:
        raise NotFound("job", "id", job_id)
    return job


def list_jobs(
    *,
    session: Session,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    status: str | None = None,
    model_id: int | None = None,
) -> Page[Job]:
    """Jobs newest first, with their runs loaded (not their results)."""
    query = (
        select(Job).order_by(Job.created_at.desc(), Job.id.desc()).options(selectinload(Job.runs))
    )
    if status is not None:
        query = query.where(Job.status == status)
    if model_id is not None:
        query = query.where(Job.model_id == model_id)
    return _page(session, query, limit, offset)


# Results.


@dataclass(frozen=True)
class ResultFilter:
    """Result history filters; all given ones must hold."""

    model: str | None = None  # id, sha256 or name
    device: int | None = None
    backend: str | None = None
    since: datetime | None = None  # created at or after
    status: str | None = None  # ok | failed
    job: int | None = None


def get_result(result_id: int, *, session: Session) -> Result:
    result = session.get(Result, result_id)
    if result is None:
        raise NotFound("result", "id", result_id)
    return result


def _model_condition(ids: Sequence[int]) -> Any:
    # One id: an equality, so the planner uses ix_results_points's leading column.
    return Result.model_id == ids[0] if len(ids) == 1 else Result.model_id.in_(ids)


def results_query(filters: ResultFilter, *, session: Session) -> Select[Result] | None:
    """The query behind :func:`list_results`, newest first; None when ``filters.model``
    names no model."""
    query = select(Result).order_by(Result.created_at.desc(), Result.id.desc())
    if filters.model is not None:
        ids = model_ids(filters.model, session=session)
        if not ids:
            return None
        query = query.where(_model_condition(ids))
    if filters.device is not None:
        query = query.where(Result.device_id == filters.device)
    if filters.backend is not None:
        query = query.where(Result.backend == filters.backend)
    if filters.since is not None:
        query = query.where(Result.created_at >= filters.since)
    if filters.status is not None:
        query = query.where(Result.status == filters.status)
    if filters.job is not None:
        query = query.where(Result.job_id == filters.job)
    return query


def list_results(
    filters: ResultFilter,
    *,
    session: Session,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Page[Result]:
    """Results matching ``filters``, newest first."""
    check_page(limit, offset)
    query = results_query(filters, session=session)
    if query is None:
        return Page(items=[], count=0, limit=limit, offset=offset)
    return _page(session, query, limit, offset)
