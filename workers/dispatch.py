"""Sending the farm's messages — always after the commit that made them true.

A message that cannot be sent (the broker is down) is logged, not raised: the database already
says what should happen next, and the reaper sends it again (a queued run whose message was
lost, a job whose start was lost).
"""

from __future__ import annotations

import logging

from workers.celery_app import COMPILE_QUEUE, TUNING_QUEUE, app, device_queue

log = logging.getLogger(__name__)


def _send(name: str, arg: int, queue: str, countdown: float | None = None) -> bool:
    try:
        app.send_task(name, args=[arg], queue=queue, countdown=countdown)
    except Exception:  # any broker failure: the reaper re-sends from the database's state
        log.error("could not send %s(%s) to %s; the reaper will", name, arg, queue, exc_info=True)
        return False
    return True


def send_start_job(job_id: int) -> bool:
    return _send("edgefarm.start_job", job_id, COMPILE_QUEUE)


def send_run(run_id: int, device_id: int, countdown: float | None = None) -> bool:
    return _send("edgefarm.run", run_id, device_queue(device_id), countdown)


def send_finish_job(job_id: int) -> bool:
    return _send("edgefarm.finish_job", job_id, COMPILE_QUEUE)


def send_tune(tuning_id: int) -> bool:
    return _send("edgefarm.tune", tuning_id, TUNING_QUEUE)


def send_slice(slice_id: int, device_id: int) -> bool:
    return _send("edgefarm.measure_slice", slice_id, device_queue(device_id))
