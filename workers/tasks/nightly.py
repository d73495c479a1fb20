"""The nightly loop (``edgefarm.nightly``, sent by beat every ``nightly_tick_s``), from the
database's state alone, so that any number of ticks, beats or redeliveries do each thing once:

* each suite whose schedule fired since its last night starts that night (its row is unique
  on suite and time: of two ticks, one starts it), then its jobs are sent;
* running nights whose jobs have all finished are closed;
* closed nights not yet analysed are analysed (claimed by a conditional UPDATE): the alerts
  they raise are recorded, and the A/B jobs confirming their regressions created, in one
  commit; those jobs are then sent;
* alerts whose A/B job has finished are decided (confirmed, rejected, unavailable), and each
  analysed night none of whose alerts awaits confirmation has its notifications queued for
  the webhooks (one per group of the alerts that stand), in one commit
  (:mod:`harness.farm.confirm`).
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from harness.db import Night, NightStatus, NightTrigger, utcnow
from harness.farm.analysis import analyse_night, close_finished_nights
from harness.farm.confirm import notify_settled, request_confirmations, settle_confirmations
from harness.farm.suites import due, start_night
from harness.regression.webhooks import notify
from workers.celery_app import task
from workers.db import db_session
from workers.dispatch import send_start_job, send_tune

log = logging.getLogger(__name__)


@task(name="edgefarm.nightly", acks_late=True)
def nightly() -> None:
    """Start due nights, close finished ones, analyse closed ones. Periodic: a tick that fails
    is not retried, the next one does its work."""
    now = utcnow()
    to_send: list[int] = []
    tunings: list[int] = []
    with db_session() as session:
        for suite, when in due(session, now):
            started = start_night(session, suite, scheduled_for=when, trigger=NightTrigger.schedule)
            if started is not None and started.night.problems:
                notify(
                    session,
                    suite,
                    event_key=f"problems:{started.night.id}",
                    payload={
                        "event": "night_problems",
                        "suite": suite.name,
                        "night": {"id": started.night.id, "scheduled_for": when.isoformat()},
                        "status": str(started.night.status),
                        "problems": started.night.problems,
                    },
                )
            session.commit()
            if started is not None:
                log.info(
                    "suite %s: night %s for %s with %d job(s)",
                    suite.name, started.night.id, when.isoformat(), len(started.job_ids),
                )  # fmt: skip
                to_send += started.job_ids
                tunings += started.tuning_ids
    for job_id in to_send:
        send_start_job(job_id)
    for tuning_id in tunings:  # after the jobs: their runs come first on every phone
        send_tune(tuning_id)

    with db_session() as session:
        close_finished_nights(session, now)
        session.commit()
        pending = list(
            session.scalars(
                select(Night.id).where(
                    Night.status == NightStatus.done, Night.analysed_at.is_(None)
                )
            )
        )
    confirmations: list[int] = []
    for night_id in pending:
        with db_session() as session:
            alerts = analyse_night(session, night_id)
            night = session.get(Night, night_id)
            if night is not None and alerts:
                confirmations += request_confirmations(session, night, alerts)
            session.commit()
    for job_id in confirmations:
        send_start_job(job_id)

    with db_session() as session:
        _, follow_ups = settle_confirmations(session)
        notify_settled(session)
        session.commit()
    for job_id in follow_ups:
        send_start_job(job_id)
