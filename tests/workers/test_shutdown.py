"""stop_request: SIGTERM noted, not fatal, inside the block; as before outside it."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import billiard

from workers.shutdown import stop_request


def test_sigterm_inside_the_block_is_noted_and_the_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_request("a task") as stopping:
        assert not stopping.is_set()
        os.kill(os.getpid(), signal.SIGTERM)  # this process: it must survive it
        assert stopping.wait(timeout=5.0)
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_the_block_changes_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def inside() -> None:
        with stop_request("an eager task") as stopping:
            seen.append(signal.getsignal(signal.SIGTERM))
            seen.append(stopping.is_set())

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join(timeout=10)
    assert seen == [before, False]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_handler_of_its_own_before_the_block_still_hears_the_signal() -> None:
    """A Celery main process (a solo pool runs the task there) must still shut down warm."""
    heard: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: heard.append(signum))
    try:
        with stop_request("a task in a solo pool") as stopping:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stopping.wait(timeout=5.0)
        assert heard == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def _pool_task(results: Any) -> None:
    # As in a Celery pool process: billiard's handler raises SystemExit wherever it lands.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(99))
    with stop_request("a task in a pool process") as stopping:
        os.kill(os.getpid(), signal.SIGTERM)
        noted = stopping.wait(timeout=5.0)
    results.put(noted)


def test_in_a_pool_process_the_handler_before_the_block_is_not_called() -> None:
    """Found by the farm's stop test: calling billiard's handler from ours raised SystemExit
    inside TVM's C++ (a search's callback), which crashed the tuning's process (SIGSEGV)."""
    results = billiard.Queue()
    child = billiard.Process(target=_pool_task, args=(results,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert results.get(timeout=5) is True
