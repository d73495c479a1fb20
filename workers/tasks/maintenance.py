"""The reaper (``edgefarm.reap``, sent by beat every ``reap_interval_s``): it repairs what lost
messages and dead workers leave behind, from the database's state alone.

* A ``running`` run silent for longer than ``lease_timeout_s``: its worker died. Its lease is
  released and it is queued again, or, after ``max_run_attempts``, ends failed.
* A run waiting for its job's start (queued and never sent, or ``compiling``) that nobody
  touched for long: the ``start_job`` message or its worker was lost; start_job is sent again.
* A queued run whose message is overdue while its device has a live worker that would have
  taken it by now — the device has sat idle as long, or has since started a run sent after it
  (a device's queue is first in, first out): its message was lost (a broker restarted
  empty); it is sent again.
* A queued run whose device has had no live worker for ``no_worker_timeout_s``: nobody will
  take it; it ends failed, saying so (instead of being sent again forever).
* A farm tuning whose worker died (``running``, silent), or whose message was lost (``queued``
  for ``queued_timeout_s``): ``edgefarm.tune`` is sent again, and the next attempt continues
  from the records already saved. Slices of ended tunings are deleted.
* Leases nobody renews are released (a run's or a tuning slice's); jobs whose runs all ended
  are finished.

"Silent" means no heartbeat for ``lease_timeout_s`` (30 s by default; heartbeats come every
few seconds), so a killed worker's run is noticed within about a minute.

Every change is a conditional UPDATE of the state it was decided on, so a worker that comes
back to life, a second reaper or a run task in flight cannot be overruled by a stale decision.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from harness.config import get_settings
from harness.db import (
    Device,
    DeviceState,
    Job,
    JobStatus,
    Run,
    RunStatus,
    Tuning,
    TuningSlice,
    TuningStatus,
    utcnow,
)
from harness.errors import InfrastructureError
from harness.farm.leases import expire_leases, release_lease
from harness.farm.liveness import FarmLiveness, liveness
from harness.farm.results import record_result
from workers.celery_app import task
from workers.db import aware, db_session
from workers.dispatch import send_finish_job, send_run, send_start_job, send_tune
from workers.lifecycle import failed_run_document, finish_if_done

log = logging.getLogger(__name__)

ENDED = (RunStatus.done, RunStatus.failed)


def _dead_runs(
    session: Session, now: datetime, stale_before: datetime
) -> tuple[list[tuple[int, int]], set[int]]:
    """Runs whose worker died: queued again (returned, to send) or ended failed (their jobs
    returned, to finish)."""
    settings = get_settings()
    resend: list[tuple[int, int]] = []
    ended_jobs: set[int] = set()
    silent = or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < stale_before)
    for run in session.scalars(select(Run).where(Run.status == RunStatus.running, silent)).all():
        still_dead = and_(
            Run.id == run.id,
            Run.status == RunStatus.running,
            Run.attempts == run.attempts,
            silent,
        )
        address = run.device.address
        if run.attempts >= settings.max_run_attempts:
            error = InfrastructureError(
                f"{address}: the worker running it died {run.attempts} times "
                f"(no sign of life for {settings.lease_timeout_s:g} s)",
                stage="run",
            )
            changed = session.execute(
                update(Run)
                .where(still_dead)
                .values(
                    status=RunStatus.failed,
                    error_stage="run",
                    error_message=error.message,
                    finished_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount == 1:  # type: ignore[attr-defined]
                record_result(run, failed_run_document(run, error), session=session)
                release_lease(session, run.device_id, run.id, attempt=run.attempts)
                ended_jobs.add(run.job_id)
                log.warning("run %s: %s", run.id, error.message)
            continue
        changed = session.execute(
            update(Run)
            .where(still_dead)
            .values(status=RunStatus.queued, enqueued_at=now)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            release_lease(session, run.device_id, run.id, attempt=run.attempts)
            resend.append((run.id, run.device_id))
            log.warning(
                "run %s: its worker on %s died during attempt %s; queued again",
                run.id,
                address,
                run.attempts,
            )
    return resend, ended_jobs


def _stalled_tunings(session: Session, now: datetime) -> list[int]:
    """Tunings to send again: running but silent (their worker died), or queued while their
    message was lost. ``enqueued_at`` records the send, so the next reaps wait for it to be
    taken. Slices of ended tunings are deleted."""
    settings = get_settings()
    stale_before = now - timedelta(seconds=settings.lease_timeout_s)
    sent = func.coalesce(Tuning.enqueued_at, Tuning.created_at)
    stalled = or_(
        and_(
            Tuning.status == TuningStatus.running,
            or_(Tuning.heartbeat_at.is_(None), Tuning.heartbeat_at < stale_before),
            sent < stale_before,
        ),
        and_(
            Tuning.status == TuningStatus.queued,
            sent < now - timedelta(seconds=settings.queued_timeout_s),
        ),
    )
    ids = list(session.scalars(select(Tuning.id).where(stalled)))
    if ids:
        session.execute(
            update(Tuning)
            .where(Tuning.id.in_(ids), stalled)
            .values(enqueued_at=now)
            .execution_options(synchronize_session=False)
        )
        log.warning("tunings %s lost their worker or message; sending them again", ids)
    ended = select(Tuning.id).where(
        Tuning.status.in_([TuningStatus.done, TuningStatus.failed, TuningStatus.cancelled])
    )
    session.execute(delete(TuningSlice).where(TuningSlice.tuning_id.in_(ended)))
    return ids


def _unstarted_jobs(session: Session, now: datetime) -> set[int]:
    """Jobs whose start_job was lost (or died): runs never sent to a phone, untouched for
    long. Their runs' ``heartbeat_at`` is set, so the next reap does not send again."""
    settings = get_settings()
    last_touched = func.coalesce(Run.heartbeat_at, Run.created_at)
    forgotten = and_(
        Run.enqueued_at.is_(None),
        or_(
            and_(
                Run.status == RunStatus.compiling,
                last_touched < now - timedelta(seconds=settings.lease_timeout_s),
            ),
            and_(
                Run.status == RunStatus.queued,
                last_touched < now - timedelta(seconds=settings.queued_timeout_s),
            ),
        ),
    )
    rows = session.execute(select(Run.id, Run.job_id).where(forgotten)).all()
    if not rows:
        return set()
    session.execute(
        update(Run)
        .where(Run.id.in_([r.id for r in rows]), forgotten)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    jobs = {r.job_id for r in rows}
    log.warning("jobs %s were never started (start_job lost); starting them again", sorted(jobs))
    return jobs


def _lost_runs(session: Session, now: datetime, live: FarmLiveness) -> list[tuple[int, int]]:
    """Queued runs whose message is overdue (``enqueued_at`` is when it was due) on a device
    that has a live worker, which would have taken the message had it been there: the device
    has been idle since before it was due, or it has since started a run sent after it. (A
    busy device alone says nothing: the message may wait behind others; but one sent later
    and taken already means this one is gone. Without that, a lost run waited for as long as
    its phone was kept busy.)"""
    cutoff = now - timedelta(seconds=get_settings().queued_timeout_s)
    later = aliased(Run)
    lost = and_(
        Run.status == RunStatus.queued,
        Run.enqueued_at.is_not(None),
        Run.enqueued_at < cutoff,
        or_(
            exists().where(
                Device.id == Run.device_id,
                Device.state == DeviceState.idle,
                or_(Device.last_seen_at.is_(None), Device.last_seen_at < cutoff),
            ),
            exists().where(
                later.device_id == Run.device_id,
                later.id != Run.id,
                later.enqueued_at > Run.enqueued_at,
                later.status != RunStatus.queued,
                later.heartbeat_at >= later.enqueued_at,  # claimed since it was sent
            ),
        ),
    )
    rows = [
        r
        for r in session.execute(select(Run.id, Run.device_id).where(lost)).all()
        if f"device.{r.device_id}" in live.live_queues
    ]
    if not rows:
        return []
    session.execute(
        update(Run)
        .where(Run.id.in_([r.id for r in rows]), lost)
        .values(enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    log.warning("runs %s lost their messages; sending them again", [r.id for r in rows])
    return [(r.id, r.device_id) for r in rows]


def _workerless_runs(session: Session, now: datetime, live: FarmLiveness) -> set[int]:
    """Queued runs on a device that has had no live worker for ``no_worker_timeout_s``
    (counted from the later of the run's sending and its worker's last heartbeat) end failed;
    their jobs are returned, to finish."""
    limit = timedelta(seconds=get_settings().no_worker_timeout_s)
    ended_jobs: set[int] = set()
    waiting = session.scalars(
        select(Run).where(Run.status == RunStatus.queued, Run.enqueued_at.is_not(None))
    ).all()
    for run in waiting:
        queue = f"device.{run.device_id}"
        if queue in live.live_queues:
            continue
        worker = live.worker_for(queue)
        since = aware(run.enqueued_at)
        assert since is not None
        if worker is not None and worker.heartbeat_at > since:
            since = worker.heartbeat_at
        if now - since < limit:
            continue
        gone = (
            f"its worker {worker.name} was last heard {worker.heartbeat_age_s:.0f} s ago"
            + (f" ({worker.reason})" if worker.reason else "")
            if worker is not None
            else "no worker has ever consumed its queue"
        )
        error = InfrastructureError(
            f"{run.device.address}: no live worker for {limit.total_seconds():g} s ({gone}); "
            "start the device's worker host and submit again",
            stage="run",
        )
        changed = session.execute(
            update(Run)
            .where(
                Run.id == run.id,
                Run.status == RunStatus.queued,
                Run.attempts == run.attempts,
            )
            .values(
                status=RunStatus.failed,
                error_stage="run",
                error_message=error.message,
                finished_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            record_result(run, failed_run_document(run, error), session=session)
            ended_jobs.add(run.job_id)
            log.warning("run %s: %s", run.id, error.message)
    return ended_jobs


def _finished_jobs(session: Session) -> set[int]:
    """Jobs not marked done although every run of theirs ended."""
    unfinished_run = exists().where(Run.job_id == Job.id, Run.status.not_in(ENDED))
    jobs = session.scalars(select(Job).where(Job.status != JobStatus.done, ~unfinished_run))
    return {job.id for job in jobs if finish_if_done(session, job)}


@task(name="edgefarm.reap", acks_late=True)
def reap() -> None:
    """Repair what lost messages and dead workers left (see the module doc). Periodic: a reap
    that fails is not retried, the next one does its work."""
    settings = get_settings()
    now = utcnow()
    with db_session() as session:
        resend, ended_jobs = _dead_runs(
            session, now, now - timedelta(seconds=settings.lease_timeout_s)
        )
        restart = _unstarted_jobs(session, now)
        live = liveness(session, now=now)
        resend += _lost_runs(session, now, live)
        ended_jobs |= _workerless_runs(session, now, live)
        expire_leases(session, now)
        tunings = _stalled_tunings(session, now)
        finished = _finished_jobs(session)
        session.commit()
    for tuning_id in tunings:
        send_tune(tuning_id)
    for job_id in sorted(restart):
        send_start_job(job_id)
    for run_id, device_id in resend:
        send_run(run_id, device_id)
    for job_id in sorted(ended_jobs - finished):
        send_finish_job(job_id)
