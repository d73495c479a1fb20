"""One run: a (device, backend) measurement of a job, on the queue of its device.

Ownership of a run is decided by the database, never by the message: a message *claims* the
run with one conditional UPDATE (queued, or running but silent for longer than the lease
timeout) that increments ``attempts``; whoever made attempt N is the only one that may end the
run or hand it back while ``attempts`` is still N. So a redelivered message, the reaper's
re-sent message and a worker thought dead that was only slow never record a run twice, and a
run that has ended is left alone.

A phone is held only while it works. Steps: first, off the lease, all that needs no phone:
the prepared model, inputs and reference, what the phone will run (the compile cache's
artifact), the connection, the phone's facts and a health check (read-only) (:class:`_Plan`).
Then claim the run and lease its device, recording that health (one short transaction); end
leftover runners, deploy, push, run, pull (a heartbeat thread keeps the run and the lease
fresh); release the lease (keyed by the attempt). Then, off the lease again, compare with the
reference, record the result and end the run (one transaction), send finish_job. A backend
that measures on the phone while preparing (``partition: cost``) does that under the lease. A
failure of the farm (device unreachable, gone mid-run) hands the run back for another attempt
with backoff, up to ``max_run_attempts``; the user's errors are recorded at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from celery import Task
from celery.exceptions import MaxRetriesExceededError
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, object_session

from harness.backends import get_backend
from harness.bench import Measurement, Reference
from harness.config import get_settings
from harness.db import Model, Run, RunStatus, scoped, utcnow
from harness.devices import Device as DeviceHandle
from harness.devices import open_device
from harness.devices.records import HealthReport
from harness.errors import HarnessBug, InfrastructureError, JobError
from harness.farm.confirm import ArmSpec, ExperimentSpec
from harness.farm.leases import acquire_lease, mark_running, release_lease, renew_lease
from harness.farm.registry import check_device, record_health
from harness.measure.document import ResultDocument
from harness.modelio import PreparedModel
from harness.regression.ab import Arm, interleaved
from workers import settings as worker_settings
from workers.celery_app import task
from workers.db import db_session, session_factory
from workers.dispatch import send_finish_job
from workers.heartbeat import Heartbeat
from workers.lifecycle import end_run, failed_run_document
from workers.measurement import (
    backend_options,
    job_protocol,
    job_settings,
    prepare_run,
    prepare_stored_model,
)
from workers.tasks import retry_on_infrastructure

log = logging.getLogger(__name__)


class _Superseded(Exception):
    """Another attempt of the run has started, or the run ended meanwhile."""


def _claim(session: Session, run_id: int, now: datetime, stale_before: datetime) -> bool:
    """Start an attempt of the run if it is queued, or running but silent since
    ``stale_before`` (its worker died). One conditional UPDATE: of two claimants, one wins."""
    result = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.enqueued_at.is_not(None),
            or_(
                Run.status == RunStatus.queued,
                and_(
                    Run.status == RunStatus.running,
                    or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < stale_before),
                ),
            ),
        )
        .values(
            status=RunStatus.running,
            attempts=Run.attempts + 1,
            heartbeat_at=now,
            started_at=func.coalesce(Run.started_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _current(session: Session, run_id: int, attempt: int) -> Run:
    """The run, re-read, if attempt ``attempt`` still owns it."""
    run = session.get(Run, run_id, populate_existing=True)
    if run is None or run.status.ended or run.attempts != attempt:
        raise _Superseded
    return run


@task(
    bind=True,
    name="edgefarm.run",
    **retry_on_infrastructure(),
    # Bounds the waits for a busy device; attempts on the device are bounded by the
    # database's ``runs.attempts`` (settings.max_run_attempts).
    max_retries=worker_settings.busy_max_retries(),
)
def run(self: Task, run_id: int) -> None:
    """Measure run ``run_id`` on its device and record its result (see the module doc)."""
    settings = get_settings()
    with db_session() as session:
        runrow = session.get(Run, run_id)
        if runrow is None or runrow.status.ended:
            return  # gone, or done already: a redelivered message does nothing
        if runrow.enqueued_at is None:
            log.info("run %s is not ready yet (its job is being started)", run_id)
            return
        plan = _plan(runrow)  # off the lease: nothing here needs the phone
        session.rollback()  # no transaction stays open meanwhile
        try:
            now = utcnow()
            stale_before = now - timedelta(seconds=settings.lease_timeout_s)
            if not _claim(session, run_id, now, stale_before):
                session.rollback()
                runrow = session.get(Run, run_id, populate_existing=True)
                if runrow is None or runrow.status.ended or runrow.enqueued_at is None:
                    return
                _wait(self, session, runrow, "it is in progress elsewhere")
                return
            device_id = runrow.device_id
            attempt = int(session.scalar(select(Run.attempts).where(Run.id == run_id)) or 0)
            if not acquire_lease(
                session, device_id, run_id, settings.lease_timeout_s, attempt=attempt, now=now
            ):
                session.rollback()
                runrow = session.get(Run, run_id, populate_existing=True)
                if runrow is None or runrow.status.ended:
                    return
                _wait(self, session, runrow, f"device {device_id} is busy")
                return
            if plan.health is not None:
                record_health(session, runrow.device, plan.health)
                if plan.health["ok"]:
                    mark_running(session, device_id, run_id, attempt=attempt)
            session.commit()
            log.info(
                "run %s: attempt %s on device %s (pid %s)",
                run_id,
                attempt,
                device_id,
                os.getpid(),
            )
            try:
                _attempt(self, session, run_id, attempt, plan)
            except _Superseded:
                log.info(
                    "run %s: attempt %s was superseded; its outcome is dropped", run_id, attempt
                )
        finally:
            plan.close()


@dataclass(frozen=True)
class _Experiment:
    """An A/B job's run (harness.farm.confirm): its two arms and how to compare them."""

    spec: ExperimentSpec
    control: Arm
    treatment: Arm


def _experiment_of(runrow: Run, treatment_model: PreparedModel) -> _Experiment:
    """The arms of an A/B job's run; a JobError when its control's model is gone."""
    job = runrow.job
    spec = ExperimentSpec.model_validate(job.experiment)
    session = object_session(runrow)
    assert session is not None
    stored = session.get(Model, spec.control.model_id)
    if stored is None:
        raise JobError("import", f"the control's model version {spec.control.model_id} is gone")
    control_model = prepare_stored_model(stored, tuple(job_settings(job).inputs))
    backend = get_backend(runrow.backend)

    def arm(side: ArmSpec, model: PreparedModel) -> Arm:
        return Arm(side.label, model, backend, side.options, side.artifact_key)

    return _Experiment(spec, arm(spec.control, control_model), arm(spec.treatment, treatment_model))


@dataclass
class _Plan:
    """What a run needs that does not need its phone, made before the lease is taken: the
    measurement started (and prepared, unless its backend measures on the phone to prepare),
    its inputs and reference, the phone connected. Or what went wrong making it, handled once
    the run is claimed as if measuring had raised it."""

    measurement: Measurement | None = None
    inputs: dict[str, np.ndarray] | None = None
    reference: Reference | None = None
    device: DeviceHandle | None = None
    experiment: _Experiment | None = None  # an A/B job's run: what it measures instead
    health: HealthReport | None = None  # the phone's, checked right before the claim
    document: ResultDocument | None = None  # the run failed already (the user's input)
    error: BaseException | None = None

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None


def _wait(self: Task, session: Session, runrow: Run, why: str) -> None:
    """Come back later, without counting an attempt. A queued run's ``enqueued_at`` is
    refreshed: its message is alive, the reaper need not send another."""
    if runrow.status == RunStatus.queued:
        runrow.enqueued_at = utcnow()
        session.commit()
    log.info("run %s waits: %s", runrow.id, why)
    try:
        raise self.retry(
            countdown=get_settings().busy_retry_s,
            max_retries=worker_settings.busy_max_retries(),
        )
    except MaxRetriesExceededError:
        log.warning("run %s waited too long (%s); left to the reaper", runrow.id, why)


def _plan(runrow: Run) -> _Plan:
    """The run's :class:`_Plan` (never raises)."""
    job = runrow.job
    try:
        backend = get_backend(runrow.backend)
        protocol = job_protocol(job)
        prepared = prepare_run(job)
    except JobError as exc:
        return _Plan(document=failed_run_document(runrow, exc))
    except Exception as exc:
        return _Plan(error=exc)
    plan = _Plan(inputs=prepared.inputs, reference=prepared.reference)
    if job.experiment is not None:
        try:
            plan.experiment = _experiment_of(runrow, prepared.model)
        except JobError as exc:
            return _Plan(document=failed_run_document(runrow, exc, model=prepared.model))
        except Exception as exc:
            return _Plan(error=exc)
    try:
        plan.device = open_device(runrow.device.address)
    except JobError as exc:  # a malformed address
        plan.document = failed_run_document(runrow, exc, model=prepared.model)
        return plan
    except Exception as exc:
        plan.error = exc
        return plan
    if plan.experiment is not None:
        try:  # the arms are prepared under the lease, by the experiment
            plan.health = plan.device.health()
        except Exception as exc:
            plan.error = exc
        return plan
    try:
        facts = plan.device.facts()
        measurement = Measurement(
            prepared.model,
            backend,
            facts,
            protocol=protocol,
            options=backend_options(job, runrow.backend),
        )
        measurement.start()
        if not measurement.needs_device_to_prepare:
            # The compile cache's artifact, built on the compile queue: tuned with the
            # farm's records for the phone's class, as start_job resolved them.
            measurement.prepare(cost_sessions=scoped(session_factory()))
        # Read-only, so taken before the claim; recorded in the claim's transaction.
        plan.health = plan.device.health()
    except Exception as exc:
        plan.error = exc
        return plan
    plan.measurement = measurement
    return plan


def _attempt(self: Task, session: Session, run_id: int, attempt: int, plan: _Plan) -> None:
    settings = get_settings()
    runrow = _current(session, run_id, attempt)
    device_id = runrow.device_id

    def beat(s: Session) -> None:
        s.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.running, Run.attempts == attempt)
            .values(heartbeat_at=utcnow())
        )
        renew_lease(s, device_id, run_id, settings.lease_timeout_s, attempt=attempt)

    interval = worker_settings.heartbeat_interval_s(settings)
    document: ResultDocument | None = None
    failure: InfrastructureError | None = None
    with Heartbeat(f"run {run_id}", beat, interval):
        try:
            document = _measure(session, runrow, attempt, plan)
        except InfrastructureError as exc:
            failure = exc
        except (_Superseded, SQLAlchemyError):
            raise  # not the measurement's fault: the run stays as it is
        except MemoryError:
            # The run asked for more memory than this host has (huge inputs or outputs): its
            # own fault, recorded; the worker process goes on.
            error = JobError(
                "prepare", "not enough memory on the worker for this run's inputs or outputs"
            )
            _record(session, run_id, attempt, failed_run_document(runrow, error))
            return
        except Exception as exc:
            # Our defect: the run ends with it (recorded) instead of failing again and again.
            bug = HarnessBug(f"internal error ({type(exc).__name__}): {exc}")
            _record(session, run_id, attempt, failed_run_document(runrow, bug))
            raise
    if document is not None and document.error is not None and document.error.retryable is True:
        # measure() turned a failure of the farm (phone gone mid-run) into a document.
        failure = InfrastructureError(document.error.message, stage=document.error.stage)
    if failure is not None:
        _hand_back(self, session, run_id, attempt, failure, document=document)
        return
    assert document is not None
    _record(session, run_id, attempt, document)


def _measure(session: Session, runrow: Run, attempt: int, plan: _Plan) -> ResultDocument:
    """The result document of the measurement; InfrastructureError when the device could not
    be used at all (the caller hands the run back). The lease is released as soon as the
    phone's part is done: the comparison happens off it."""
    if plan.error is not None:
        raise plan.error
    if plan.document is not None:
        return plan.document
    assert plan.device is not None
    assert plan.inputs is not None and plan.reference is not None
    device = plan.device
    health = plan.health
    assert health is not None  # recorded with the claim
    if not health["ok"]:
        raise InfrastructureError(
            f"{runrow.device.address} failed its health check: {health['problem']}",
            stage="run",
        )
    if plan.experiment is not None:
        return _measure_experiment(session, runrow, attempt, plan, plan.experiment)
    assert plan.measurement is not None
    measurement = plan.measurement
    measurement.on_device(
        device,
        plan.inputs,
        exclusive=True,  # under our lease: runners of interrupted attempts are ended first
        # partition "cost": per-device-class costs live in the farm's database, read and
        # written in short sessions of their own (the task's stays as it is).
        cost_sessions=scoped(session_factory()),
    )
    if measurement.doc.error is None or measurement.doc.error.retryable is not True:
        # The phone's part is done: free it for the next run before comparing and
        # recording. Keyed by the attempt: a superseded attempt frees nothing.
        release_lease(session, runrow.device_id, runrow.id, attempt=attempt)
        session.commit()
    plan.close()  # after the release: closing the connection needs no lease
    return measurement.compare(plan.reference, f"{runrow.backend} on {device.id}")


def _measure_experiment(
    session: Session, runrow: Run, attempt: int, plan: _Plan, experiment: _Experiment
) -> ResultDocument:
    """An A/B job's run: control and treatment interleaved under the lease; the treatment's
    last block's document, compared with the reference, carrying the ``experiment``. A
    failed block fails the run (JobError: recorded; InfrastructureError: handed back)."""
    assert plan.device is not None and plan.reference is not None
    spec = experiment.spec
    settings = job_settings(runrow.job)
    try:
        done = interleaved(
            plan.device,
            experiment.control,
            experiment.treatment,
            blocks=spec.blocks,
            protocol=settings.protocol(),
            seed=settings.seed,
            min_effect=spec.min_effect,
            alpha=spec.alpha,
            exclusive=True,  # under our lease
        )
    except JobError as exc:
        release_lease(session, runrow.device_id, runrow.id, attempt=attempt)
        session.commit()
        return failed_run_document(runrow, exc, model=experiment.treatment.model)
    release_lease(session, runrow.device_id, runrow.id, attempt=attempt)
    session.commit()
    plan.close()
    treatment = done.measurements[experiment.treatment.label]
    document = treatment.compare(plan.reference, f"{runrow.backend} on {runrow.device.address}")
    document.experiment = done.record()
    return document


def _end_attempt(session: Session, run_id: int, attempt: int, **values: Any) -> None:
    """Take the right to end (or hand back) the run: one conditional UPDATE keyed by the
    attempt, so that of an attempt thought dead and the one that replaced it, only the owner
    does it. Raises _Superseded for the other."""
    changed = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.attempts == attempt, Run.status == RunStatus.running)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise _Superseded


def _record(session: Session, run_id: int, attempt: int, document: ResultDocument) -> None:
    """Record the result, end the run and release the lease: one transaction, taken only by
    the attempt that owns the run. Then finish_job. A job's failure never changes the device's
    health: only health checks do (:func:`record_health`)."""
    now = utcnow()
    _end_attempt(session, run_id, attempt, finished_at=now)
    runrow = _current(session, run_id, attempt)
    end_run(session, runrow, document)
    release_lease(session, runrow.device_id, run_id, attempt=attempt)
    runrow.device.last_seen_at = now
    job_id = runrow.job_id
    session.commit()
    send_finish_job(job_id)


def _hand_back(
    self: Task,
    session: Session,
    run_id: int,
    attempt: int,
    exc: InfrastructureError,
    *,
    document: ResultDocument | None = None,
) -> None:
    """The farm failed this attempt: check the device's health (a failed check marks it bad),
    release the lease and retry with backoff, or, after ``max_run_attempts``, end the run
    failed with the reason."""
    settings = get_settings()
    session.rollback()
    runrow = _current(session, run_id, attempt)
    if not exc.message.startswith(f"{runrow.device.address} failed its health check"):
        check_device(session, runrow.device)  # the check at the start already recorded its own
    if attempt >= settings.max_run_attempts:
        log.warning("run %s: attempt %s failed, giving up: %s", run_id, attempt, exc.message)
        document = document or failed_run_document(runrow, exc)
        _record(session, run_id, attempt, document)
        return
    countdown = min(settings.retry_backoff_max_s, 2.0**attempt)
    # enqueued_at is when the message is due: the reaper takes a message as lost only once
    # it is overdue.
    _end_attempt(
        session,
        run_id,
        attempt,
        status=RunStatus.queued,
        enqueued_at=utcnow() + timedelta(seconds=countdown),
    )
    release_lease(session, runrow.device_id, run_id, attempt=attempt)
    session.commit()
    log.warning(
        "run %s: attempt %s failed (%s); retrying in %.0f s", run_id, attempt, exc, countdown
    )
    raise self.retry(exc=exc, countdown=countdown, max_retries=self.request.retries + 1)
