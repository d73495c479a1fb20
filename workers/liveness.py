"""Heartbeats of the farm's processes into the ``workers`` table (see harness.farm.liveness).

A Celery worker's main process starts a thread when it is ready that records, every
``heartbeat_s``, that it is alive and which queues it consumes; it marks itself ``stopped``
when it is asked to shut down. The thread lives in the main process, not in the pool: a pool
process busy with a run has the run's own heartbeat, and a killed main process falls silent,
which is exactly what the farm must notice.

The same thread health-checks, every ``health_recheck_s``, the devices of the worker that a
check found bad, so that a phone that comes back is offered again without anyone's help.
Beat's heartbeat is written by its scheduler (``workers.beat``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from harness.config import get_settings
from harness.db import Device, DeviceHealth, WorkerKind, WorkerStatus
from harness.farm.liveness import heartbeat, mark
from harness.farm.registry import check_device
from workers import settings as worker_settings
from workers.db import db_session

log = logging.getLogger(__name__)

PROCESS_NAME_ENV = "EDGEFARM_PROCESS_NAME"

_stop = threading.Event()


def process_name(default: str) -> str:
    """The name this process reports under: given by its supervisor, else ``default``."""
    return os.environ.get(PROCESS_NAME_ENV) or default


def beat_once(name: str, kind: WorkerKind, queues: list[str]) -> None:
    """One heartbeat; a failure is logged, not raised (the next one may get through)."""
    try:
        with db_session() as session:
            heartbeat(session, name=name, kind=kind, queues=queues, pid=os.getpid())
            session.commit()
    except Exception:
        log.warning("%s: heartbeat failed", name, exc_info=True)


def recheck_bad_devices(device_ids: list[int]) -> None:
    """Health-check this worker's devices that a check found bad: one that passes again is
    good again (and offered to new jobs). An operator's maintenance/retired is left alone."""
    for device_id in device_ids:
        try:
            with db_session() as session:
                device = session.get(Device, device_id)
                if device is None or device.health != DeviceHealth.bad:
                    continue
                health = check_device(session, device)
                session.commit()
                log.info("device %s re-checked: %s", device.address, health.get("problem") or "ok")
        except Exception:
            log.warning("re-checking device %s failed", device_id, exc_info=True)


def _on_ready(sender: Any, **_: Any) -> None:
    app: Celery = sender.app
    name = process_name(str(getattr(sender, "hostname", None) or "worker"))
    queues = sorted(str(q) for q in app.amqp.queues.consume_from)
    interval = worker_settings.heartbeat_interval_s()
    beat_once(name, WorkerKind.worker, queues)
    log.info("%s: alive, consuming %s (heartbeat every %g s)", name, ", ".join(queues), interval)

    devices = [int(q.split(".", 1)[1]) for q in queues if q.startswith("device.")]
    every = max(1, round(get_settings().health_recheck_s / interval))

    def loop() -> None:
        beats = 0
        while not _stop.wait(interval):
            beat_once(name, WorkerKind.worker, queues)
            beats += 1
            if beats % every == 0:
                recheck_bad_devices(devices)

    threading.Thread(target=loop, name="edgefarm-liveness", daemon=True).start()


def _on_shutting_down(**_: Any) -> None:
    _stop.set()
    name = os.environ.get(PROCESS_NAME_ENV)
    if not name:
        return
    try:
        with db_session() as session:
            mark(session, name, WorkerStatus.stopped, "shut down")
            session.commit()
    except Exception:
        log.warning("%s: could not record the shutdown", name, exc_info=True)


def connect() -> None:
    """Connect the worker's liveness to Celery's signals (called by ``make_app``)."""
    worker_ready.connect(_on_ready, weak=False)
    worker_shutting_down.connect(_on_shutting_down, weak=False)
