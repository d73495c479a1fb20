"""Enqueueing jobs for the workers, without importing them: a Celery client of our own that
only sends ``edgefarm.start_job`` by name to the ``compile`` queue, and ``edgefarm.tune`` to
the ``tuning`` queue.

Call :func:`enqueue_job` only after the transaction that created the job has committed: a
worker may pick the message up at once and must find the rows.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import celery
from kombu.utils.url import maybe_sanitize_url

from harness.config import Settings
from harness.farm.broker import broker_url

log = logging.getLogger(__name__)

START_JOB = "edgefarm.start_job"
QUEUE = "compile"
TUNE = "edgefarm.tune"
TUNING_QUEUE = "tuning"
# A broker that is down should cost a request well under a second, not Celery's default.
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


@lru_cache(maxsize=8)
def client(url: str) -> celery.Celery:
    """The lightweight Celery app that sends to ``url`` (one per URL, reused)."""
    app = celery.Celery("edgefarm", broker=url, set_as_current=False)
    app.conf.broker_connection_timeout = 3.0
    if url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport_options = {"socket_connect_timeout": 3, "socket_timeout": 5}
    return app


def enqueue_job(job_id: int, *, settings: Settings | None = None) -> bool:
    """Send ``edgefarm.start_job(job_id)`` to the ``compile`` queue. False when the broker
    is unreachable: the job's runs stay ``queued`` in the database and the workers' reaper
    enqueues them again, so the submission itself has not failed."""
    return _send(START_JOB, QUEUE, job_id, f"job {job_id}", settings)


def enqueue_tuning(tuning_id: int, *, settings: Settings | None = None) -> bool:
    """Send ``edgefarm.tune(tuning_id)`` to the ``tuning`` queue; False when the broker is
    unreachable (the tuning stays ``queued`` and the reaper sends it)."""
    return _send(TUNE, TUNING_QUEUE, tuning_id, f"tuning {tuning_id}", settings)


def _send(name: str, queue: str, arg: int, what: str, settings: Settings | None) -> bool:
    url = broker_url(settings)
    try:
        client(url).send_task(name, args=[arg], queue=queue, retry=True, retry_policy=_RETRY_POLICY)
    except Exception as exc:  # kombu, redis and socket errors share no base
        log.warning(
            "%s is committed but not enqueued (broker %s: %s); the reaper will enqueue it",
            what,
            maybe_sanitize_url(url),
            exc,
        )
        return False
    return True


def broker_problem(url: str, *, timeout_s: float = 2.0) -> str | None:
    """None when the broker at ``url`` answers, else why not (one line)."""
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            connection: Any = redis.Redis.from_url(
                url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
            )
            try:
                connection.ping()
            finally:
                connection.close()
        else:
            import kombu

            conn: Any = kombu.Connection(url, connect_timeout=timeout_s)  # type: ignore[attr-defined,no-untyped-call]
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2)
            finally:
                conn.release()
    except Exception as exc:  # every transport raises its own errors
        return f"{maybe_sanitize_url(url)}: {type(exc).__name__}: {exc}"
    return None
