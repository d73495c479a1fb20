"""Beat's scheduler: Celery's own, plus a heartbeat (``beat@HOST`` in the ``workers`` table)
so that health can say when beat last ticked. Beat only ticks; the database decides."""

from __future__ import annotations

import time
from typing import Any

from celery import beat

from harness.db import WorkerKind
from harness.farm.liveness import process_name as default_name
from workers import settings as worker_settings
from workers.liveness import beat_once, process_name


class Scheduler(beat.Scheduler):  # type: ignore[misc]
    """``celery beat --scheduler workers.beat:Scheduler``."""

    _last_heartbeat = 0.0

    def tick(self, *args: Any, **kwargs: Any) -> float:
        now = time.monotonic()
        interval = worker_settings.heartbeat_interval_s()
        if now - self._last_heartbeat >= interval:
            self._last_heartbeat = now
            beat_once(process_name(default_name("beat")), WorkerKind.beat, [])
        # Come back within a heartbeat even when nothing is due before then.
        return float(min(super().tick(*args, **kwargs), interval))
