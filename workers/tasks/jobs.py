"""Starting a job (compile each distinct artifact once, then send its runs to their phones)
and finishing it once every run has ended. Queue ``compile``."""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from celery import Task
from sqlalchemy import update
from sqlalchemy.orm import Session

from harness.backends import get_backend
from harness.compile import Artifact as BuiltArtifact
from harness.compile.tuned import AppliedRecords
from harness.config import get_settings
from harness.db import Artifact, Job, JobStatus, Run, RunStatus, scoped, utcnow
from harness.devices.base import DeviceFacts
from harness.errors import InfrastructureError, JobError, Stage, one_line
from harness.farm.results import record_artifact
from harness.jsontypes import BackendOptions
from harness.modelio import PreparedModel
from workers import settings as worker_settings
from workers.celery_app import task
from workers.db import db_session, session_factory
from workers.dispatch import send_finish_job, send_run
from workers.heartbeat import Heartbeat
from workers.lifecycle import end_run, failed_run_document, finish_if_done
from workers.measurement import backend_options, prepare_job_model
from workers.tasks import retry_on_infrastructure

log = logging.getLogger(__name__)

START_JOB_RETRIES = 5


def _pending(job: Job) -> list[Run]:
    """Runs start_job still has to deal with: not ended and never sent to a phone."""
    return [r for r in job.runs if not r.status.ended and r.enqueued_at is None]


def _artifact(
    session: Session,
    job: Job,
    model: PreparedModel,
    backend_name: str,
    target: str,
    given_options: BackendOptions | None,
    tuning: AppliedRecords | None = None,
) -> Artifact | None:
    """What the backend builds for (target, options, the tuning records its runs' device
    class applies) before the runs go to their phones, compiled now unless the local
    artifact cache already has it; the Artifact row of the runs' own artifact, or None when
    they have none built here (a backend that does not compile, or a cost-guided partition,
    built by the run after calibration on its phone)."""
    backend = get_backend(backend_name)
    backend.check_format(model.format, model_name=model.name)
    options = backend.resolve_options(given_options)
    row: Artifact | None = None
    for build in backend.job_builds(options):
        session.commit()  # no transaction stays open through a build of many minutes
        if not build.for_run:
            backend.compile(model, target=target, options=build.options)
            continue
        key = backend.artifact_key(model, target, build.options, tuning)
        log.info(
            "job %s: artifact %s (%s for %s%s)",
            job.id,
            key,
            backend_name,
            target,
            f", tuned for {tuning.provenance['device_class']}" if tuning is not None else "",
        )
        built: BuiltArtifact | None = None
        error: JobError | None = None
        try:
            built = backend.compile(model, target=target, options=build.options, tuning=tuning)
        except JobError as exc:
            error = exc
        row = record_artifact(
            session=session,
            model_id=job.model_id,
            key=key,
            backend=backend_name,
            target=target,
            options=build.options,
            built=built,
            error=error,
        )
        if error is not None:
            raise error
    return row


@task(
    bind=True,
    name="edgefarm.start_job",
    **retry_on_infrastructure(),
    max_retries=START_JOB_RETRIES,
)
def start_job(self: Task, job_id: int) -> None:
    """Compile what the job's runs need, once per (backend, device target), and send each
    run to its phone's queue. Runs whose artifact cannot be built end failed at once."""
    try:
        _start_job(job_id)
    except InfrastructureError as exc:
        if self.request.retries < START_JOB_RETRIES:
            raise
        _fail_pending(job_id, exc.message, exc.stage or "compile")
    except Exception as exc:
        # Our defect: the runs end with it rather than wait for a start that cannot succeed.
        _fail_pending(job_id, f"internal error ({type(exc).__name__}): {exc}", "compile")
        raise


def _start_job(job_id: int) -> None:
    settings = get_settings()
    with db_session() as session:
        job = session.get(Job, job_id)
        if job is None:
            log.info("job %s is gone", job_id)
            return
        pending = _pending(job)
        if not pending:
            if finish_if_done(session, job):
                session.commit()
            return
        now = utcnow()
        if job.status == JobStatus.queued:
            job.status = JobStatus.running
        job.started_at = job.started_at or now
        for run in pending:
            run.status = RunStatus.compiling
            run.heartbeat_at = now
        session.commit()
        run_ids = [r.id for r in pending]

        def beat(s: Session) -> None:
            s.execute(
                update(Run)
                .where(Run.id.in_(run_ids), Run.status == RunStatus.compiling)
                .values(heartbeat_at=utcnow())
            )

        interval = worker_settings.heartbeat_interval_s(settings)
        with Heartbeat(f"job {job_id}", beat, interval):
            try:
                model = prepare_job_model(job)
            except JobError as exc:
                for run in pending:
                    end_run(session, run, failed_run_document(run, exc))
                session.commit()
                send_finish_job(job_id)
                return
            # One artifact per (backend, target, options as completed by the device, tuning
            # records of the device's class): a phone's NNAPI feature level changes what
            # tvm-nnapi may offload; the farm's records for its class, what tvm-cpu applies.
            # The records are resolved as the run's prepare resolves them, so that it finds
            # its artifact in the cache rather than build it for minutes on the phone's turn.
            groups: dict[tuple[str, str, str, str], list[Run]] = defaultdict(list)
            group_options: dict[tuple[str, str, str, str], BackendOptions | None] = {}
            group_tuning: dict[tuple[str, str, str, str], AppliedRecords | None] = {}
            records = scoped(session_factory())
            ended = False
            for run in pending:
                try:
                    backend_of_run = get_backend(run.backend)
                    facts = DeviceFacts.from_dict(run.device.facts or {"id": run.device.address})
                    options = backend_of_run.device_options(
                        facts, backend_options(job, run.backend)
                    )
                    tuning = backend_of_run.records_for(options, facts, records, model=model)
                except JobError as exc:  # e.g. tvm-nnapi on a phone without NNAPI
                    end_run(session, run, failed_run_document(run, exc, model=model))
                    ended = True
                    continue
                key = (
                    run.backend,
                    run.device.target,
                    json.dumps(options, sort_keys=True),
                    tuning.digest if tuning is not None else "",
                )
                groups[key].append(run)
                group_options[key] = options
                group_tuning[key] = tuning
            session.commit()
            for key, runs in groups.items():
                backend, target, _, _ = key
                artifact: Artifact | None = None
                error: JobError | None = None
                try:
                    artifact = _artifact(
                        session, job, model, backend, target, group_options[key], group_tuning[key]
                    )
                except JobError as exc:
                    error = exc
                sent: list[Run] = []
                for run in runs:
                    session.refresh(run)
                    if run.status.ended or run.enqueued_at is not None:
                        continue  # another start_job of this job got there first
                    if error is not None:
                        end_run(session, run, failed_run_document(run, error, model=model))
                        ended = True
                        continue
                    run.artifact_id = artifact.id if artifact is not None else None
                    run.status = RunStatus.queued
                    run.enqueued_at = utcnow()
                    sent.append(run)
                session.commit()
                for run in sent:
                    send_run(run.id, run.device_id)
        if ended:
            # After the commit, so that the last run to end, here or on a phone, finishes it.
            send_finish_job(job_id)


def _fail_pending(job_id: int, reason: str, stage: Stage) -> None:
    """End the job's runs that start_job could not get to a phone, saying why."""
    log.error("job %s: giving up on its runs: %s", job_id, reason)
    message = f"the farm could not prepare this run: {one_line(reason)}"
    failure = InfrastructureError(message, stage=stage)
    with db_session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        for run in _pending(job):
            end_run(session, run, failed_run_document(run, failure))
        session.commit()
    send_finish_job(job_id)


@task(
    bind=True,
    name="edgefarm.finish_job",
    **retry_on_infrastructure(),
    max_retries=10,
)
def finish_job(self: Task, job_id: int) -> None:
    """Mark the job done once all its runs ended (idempotent; early calls do nothing)."""
    with db_session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        if job.status != JobStatus.done and finish_if_done(session, job):
            session.commit()
