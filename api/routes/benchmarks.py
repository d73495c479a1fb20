"""Benchmarks: submitting a job (one run per device and backend)."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import SessionDep, SettingsDep, WriterDep
from api.errors import NOT_JSON, answers
from api.queue import enqueue_job
from api.schemas import BenchmarkCreate, JobPublic, JobSubmitted
from harness.farm import queries
from harness.farm.jobs import create_job
from harness.farm.selection import select_devices

router = APIRouter(prefix="/benchmarks", tags=["benchmarks"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=answers(400, 401, 404, 409, 422, n400=NOT_JSON, n404="no such model"),
)
def submit_benchmark(
    body: BenchmarkCreate, session: SessionDep, settings: SettingsDep, writer: WriterDep
) -> JobSubmitted:
    """Submit a benchmark; its runs are queued for the workers."""
    model = queries.named_model(body.model_id, body.model_sha256, session=session)
    devices = select_devices(body.devices.selector(), session=session)
    job = create_job(
        session=session,
        model=model,
        devices=devices,
        backends=body.backends,
        settings=body.settings,
        submitted_by=writer.name,
        defaults=settings,
    )
    # The workers must find the job and its runs when the message arrives: commit first.
    session.commit()
    enqueued = enqueue_job(job.id, settings=settings)
    public = JobPublic.of(job, with_results=False)
    return JobSubmitted(**public.model_dump(), enqueued=enqueued)
