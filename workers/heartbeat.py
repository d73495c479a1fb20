"""A background thread that tells the database a task is still alive.

While a run measures (or a job compiles) the task's own thread is busy for minutes; this
thread bumps ``heartbeat_at`` (and renews the device lease) every few seconds, so that the
reaper can tell a long run from a dead worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session

from workers.db import db_session

log = logging.getLogger(__name__)


class Heartbeat:
    """Call ``beat(session)`` and commit every ``interval_s`` until the block ends."""

    def __init__(self, name: str, beat: Callable[[Session], None], interval_s: float) -> None:
        self._name = name
        self._beat = beat
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{name}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                with db_session() as session:
                    self._beat(session)
                    session.commit()
            except Exception:  # a missed beat is survivable; the next one may get through
                log.warning("%s: heartbeat failed", self._name, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30.0)
