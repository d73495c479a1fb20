"""A task that outlives its worker's stop by a little, on purpose.

``edgefarm up`` and ``edgefarm worker`` stop their Celery workers with SIGTERM to each one's
process group (harness.supervise), and SIGKILL what is left after a grace of 20 s. The main
process of a Celery worker then shuts down warm (it takes nothing new and waits for its
tasks), but a prefork pool process dies of the same SIGTERM at once: a task in it is cut off
mid-way and waits for the reaper (its heartbeat must go stale first).

Some tasks can do better in the grace they have. Inside :class:`StopRequest` the pool
process notes SIGTERM instead of dying of it; the task reads :attr:`StopRequest.event` and ends
itself cleanly: a tuning stops after the batch it is in and goes back to the queue at once, a
tuning slice (seconds of a phone's time) finishes and gives its phone back. What does not end
within the grace is SIGKILLed as before, and the reaper still catches it.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)


class StopRequest:
    """Within the block, SIGTERM sets :attr:`event` instead of ending the process.

    Only the main thread can take a signal handler; elsewhere (a task run eagerly in a thread)
    the block changes nothing and :attr:`event` is never set. The handler before the block is
    put back after it, so a SIGTERM between tasks ends the pool process as it always did."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.event = threading.Event()
        self._previous: Any = None
        self._installed = False

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        if not self.event.is_set():
            log.warning("%s: asked to stop (signal %d); ending it cleanly", self.what, signum)
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
