"""Ending runs and jobs: the bookkeeping every task shares."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.bench import failed_document
from harness.db import Job, JobStatus, Result, Run, RunStatus, utcnow
from harness.errors import EdgefarmError, InfrastructureError
from harness.farm.models import model_path
from harness.farm.results import record_result
from harness.measure.document import DeviceRecord, ResultDocument, device_record
from harness.modelio import ModelDescription, PreparedModel

log = logging.getLogger(__name__)


def device_document(run: Run) -> DeviceRecord:
    """The ``device`` object of a result document, from the registered facts."""
    return device_record({"id": run.device.address, **(run.device.facts or {})})


def failed_run_document(
    run: Run, error: EdgefarmError, *, model: PreparedModel | None = None
) -> ResultDocument:
    """A failed result document for ``run``, which never got to (or through) a measurement.
    A failure of the farm is marked ``retryable``, as :func:`harness.bench.measure` does."""
    doc = failed_document(
        model=model,
        model_path=model_path(run.job.model),
        device=device_document(run),
        backend=run.backend,
        error=error,
    )
    if doc.error is not None and isinstance(error, InfrastructureError):
        doc.error.retryable = True
    if model is None:
        stored = run.job.model
        doc.model = ModelDescription.model_validate(
            {
                "name": stored.name,
                "sha256": stored.sha256,
                "format": stored.format,
                "inputs": list(stored.input_spec or []),
            }
        )
    return doc


def end_run(session: Session, run: Run, document: ResultDocument) -> Result:
    """Record ``document`` as the run's result (unless it has one) and end the run
    accordingly: done when the stored result is ok, failed with its stage and message
    otherwise. Does not commit."""
    result = record_result(run, document, session=session)
    run.status = RunStatus.done if result.status == "ok" else RunStatus.failed
    run.error_stage = result.error_stage
    run.error_message = result.error_message
    run.finished_at = run.finished_at or utcnow()
    session.flush()
    log.info(
        "run %s (%s on %s) %s%s",
        run.id,
        run.backend,
        run.device.address,
        run.status.value,
        f" at {run.error_stage}: {run.error_message}" if run.error_stage else "",
    )
    return result


def finish_if_done(session: Session, job: Job) -> bool:
    """Mark ``job`` done if every run of it ended. Does not commit."""
    if job.status == JobStatus.done:
        return True
    statuses = session.scalars(select(Run.status).where(Run.job_id == job.id)).all()
    if not all(RunStatus(s).ended for s in statuses):
        return False
    job.status = JobStatus.done
    job.finished_at = utcnow()
    job.started_at = job.started_at or job.finished_at
    session.flush()
    log.info("job %s done", job.id)
    return True
