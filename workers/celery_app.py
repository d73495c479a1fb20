"""The Celery app ``edgefarm``: Redis in production, kombu's SQLAlchemy transport embedded.

Postgres (or the embedded SQLite) is the source of truth for jobs and runs; Celery only
carries ids. Queues: ``compile`` (starting and finishing jobs), ``tuning`` (farm tunings: hours
of search that must not hold up a job's compile), ``maintenance`` (the reaper,
on a worker of its own: behind a compile of many minutes its messages would expire unrun,
and no dead worker's run would be noticed meanwhile) and one ``device.<id>`` per phone,
consumed by the worker host the phone is attached to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from celery import Celery

from harness.config import get_settings
from harness.farm.broker import broker_url
from workers import settings as worker_settings

COMPILE_QUEUE = "compile"
MAINTENANCE_QUEUE = "maintenance"
TUNING_QUEUE = "tuning"

_F = TypeVar("_F", bound=Callable[..., Any])


def device_queue(device_id: int) -> str:
    return f"device.{device_id}"


# How often a worker on the embedded farm's SQL broker looks for a message while it has none.
SQL_POLLING_INTERVAL_S = 0.25


def make_app() -> Celery:
    settings = get_settings()
    url = broker_url(settings)
    transport_options: dict[str, float] = {}
    if url.startswith(("redis", "sentinel")):
        # A message is unacknowledged until its task returns; Redis hands it out again only
        # after this long, which must exceed the longest task or it would run twice at once.
        # (kombu's SQLAlchemy transport has no such option: it passes its options on to
        # create_engine.)
        transport_options["visibility_timeout"] = worker_settings.visibility_timeout(settings)
    elif url.startswith("sqla+"):
        # kombu's SQL transport polls its table, sleeping between empty polls: 1 s by default,
        # and with one message taken at a time every hop of a job (start, each run, finish)
        # waited up to that long: a night of six 0.3 s runs on the embedded farm took 10-11 s.
        # At 0.25 s it takes 4-6 s; the six consumers of an idle farm then use about 8% of a
        # core (16% at 0.1 s). The interval is a class attribute only (the transport's options
        # go to create_engine).
        from kombu.transport import sqlalchemy as sql_transport

        sql_transport.Transport.polling_interval = SQL_POLLING_INTERVAL_S
    app = Celery(
        "edgefarm",
        include=[
            "workers.tasks.jobs",
            "workers.tasks.runs",
            "workers.tasks.maintenance",
            "workers.tasks.nightly",
            "workers.tasks.notify",
            "workers.tasks.tuning",
        ],
    )
    app.conf.update(
        broker_url=url,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # a killed pool process's message is delivered again
        worker_prefetch_multiplier=1,
        # A run in progress when the broker connection drops finishes and records its result
        # (the database, not the broker, knows it is done).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=COMPILE_QUEUE,
        # ``edgefarm.run`` goes to the queue of its device, given when it is sent.
        task_routes={
            "edgefarm.start_job": {"queue": COMPILE_QUEUE},
            "edgefarm.finish_job": {"queue": COMPILE_QUEUE},
            "edgefarm.tune": {"queue": TUNING_QUEUE},
            "edgefarm.reap": {"queue": MAINTENANCE_QUEUE},
            "edgefarm.nightly": {"queue": MAINTENANCE_QUEUE},
            "edgefarm.deliver_webhooks": {"queue": MAINTENANCE_QUEUE},
        },
        beat_schedule={
            "reap": {
                "task": "edgefarm.reap",
                "schedule": settings.reap_interval_s,
                # A reap nobody picked up in time is superseded by the next one.
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.reap_interval_s},
            },
            "nightly": {
                "task": "edgefarm.nightly",
                "schedule": settings.nightly_tick_s,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.nightly_tick_s},
            },
            "deliver-webhooks": {
                "task": "edgefarm.deliver_webhooks",
                "schedule": settings.webhook_interval_s,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.webhook_interval_s},
            },
        },
        # Beat's heartbeat rides on its ticks (workers.beat).
        beat_max_loop_interval=worker_settings.heartbeat_interval_s(settings),
        worker_hijack_root_logger=True,
        timezone="UTC",
        enable_utc=True,
    )
    from workers import liveness

    liveness.connect()
    return app


app = make_app()


def task(**options: Any) -> Callable[[_F], _F]:
    """``app.task`` with its type: tasks are sent by name (``send_task``), never called."""
    return cast(Callable[[_F], _F], app.task(**options))
