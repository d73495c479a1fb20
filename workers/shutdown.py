"""A task that outlives its worker's stop by a little, on purpose.

``edgefarm up`` and ``edgefarm worker`` stop their Celery workers with SIGTERM to each one's
process group (harness.supervise), and SIGKILL what is left after a grace of 20 s. The main
process of a Celery worker then shuts down warm (it takes nothing new and waits for its
tasks), but a prefork pool process dies of the same SIGTERM at once: a task in it is cut off
mid-way and waits for the reaper (its heartbeat must go stale first).

Some tasks can do better in the grace they have. Inside :func:`stop_request` the pool
process notes SIGTERM instead of dying of it; the task reads the event it gives and ends
itself cleanly: a tuning stops after the batch it is in and goes back to the queue at once, a
tuning slice (seconds of a phone's time) finishes and gives its phone back. What does not end
within the grace is SIGKILLed as before, and the reaper still catches it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from billiard.process import current_process

log = logging.getLogger(__name__)


@contextmanager
def stop_request(what: str) -> Iterator[threading.Event]:
    """Within the block, SIGTERM sets the event it gives instead of ending the process.

    Only the main thread can take a signal handler; elsewhere (a task run eagerly in a thread)
    the block changes nothing and the event is never set. The handler before the block is put
    back after it, so a SIGTERM between tasks ends the pool process as it always did.

    In a Celery worker's main process (a task runs there with ``--pool solo``) the handler
    before it is Celery's warm shutdown, which only sets a flag: it is still called, so the
    worker stops after the task. In a pool process it is billiard's, which raises SystemExit
    wherever the process is (inside TVM's C++ that is std::terminate, a crash): never called."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    chain = current_process().name == "MainProcess"

    def note(signum: int, frame: FrameType | None) -> None:
        if not event.is_set():
            log.warning("%s: asked to stop (signal %d); ending it cleanly", what, signum)
        event.set()
        if chain and callable(previous):
            previous(signum, frame)

    previous = signal.signal(signal.SIGTERM, note)
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)
