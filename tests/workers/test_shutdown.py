"""StopRequest: SIGTERM noted, not fatal, inside the block; as before outside it."""

from __future__ import annotations

import os
import signal
import threading

from workers.shutdown import StopRequest


def _wait(event: threading.Event) -> bool:
    return event.wait(timeout=5.0)


def test_sigterm_inside_the_block_is_noted_and_the_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest("a task") as request:
        assert not request.requested
        os.kill(os.getpid(), signal.SIGTERM)  # this process: it must survive it
        assert _wait(request.event)
        assert request.requested
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_the_block_changes_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def inside() -> None:
        with StopRequest("an eager task") as request:
            seen.append(signal.getsignal(signal.SIGTERM))
            seen.append(request.requested)

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join(timeout=10)
    assert seen == [before, False]
    assert signal.getsignal(signal.SIGTERM) is before
