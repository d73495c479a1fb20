"""Keep a set of child processes running: the farm's supervisor.

``edgefarm worker`` runs one Celery worker per phone, one for compiles and beat; ``edgefarm up``
runs the API and that worker host. Each child is supervised on its own:

* A child that exits without being asked to is restarted after a backoff (1 s, 2 s, 4 s ...
  up to ``worker_restart_backoff_max_s``). Only that child is affected: the others go on.
* A child restarted ``worker_restart_limit`` times within ``worker_restart_window_s`` is given
  up on: it stays down, and ``on_give_up`` reports it (the worker host marks the phone's worker
  ``down`` in the database, where health shows it).
* Each child runs in a process group of its own, which is killed whole when the child exits,
  so that no orphan of it (a Celery pool process) goes on holding a phone. A child dies with
  its supervisor: it runs through this module's ``__main__``, which asks the kernel for
  SIGKILL on its parent's death (``PR_SET_PDEATHSIG``) before it execs the real command.
* ``stop()`` sends SIGTERM to every group, waits ``grace_s``, then SIGKILLs what is left: a
  worker stuck in its warm shutdown never keeps the farm from stopping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


@dataclass
class Child:
    """A supervised command and what is known of its life."""

    name: str
    argv: list[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    log_path: Path | None = None  # None: inherit the supervisor's stdout/stderr
    proc: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)  # monotonic times of restarts
    restart_at: float | None = None  # when a scheduled restart is due
    given_up: str | None = None  # why, once given up on
    last_status: int | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def describe_status(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Start, restart and stop children (see the module doc)."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        restart_limit: int,
        restart_window_s: float,
        backoff_max_s: float,
        grace_s: float = 20.0,
        on_give_up: Callable[[Child, str], None] | None = None,
        on_restart: Callable[[Child], None] | None = None,
    ) -> None:
        self.children = list(children)
        self.restart_limit = restart_limit
        self.restart_window_s = restart_window_s
        self.backoff_max_s = backoff_max_s
        self.grace_s = grace_s
        self.on_give_up = on_give_up
        self.on_restart = on_restart
        self.stopping = False

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        out: IO[bytes] | None = None
        if child.log_path is not None:
            child.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(child.log_path, "ab")  # noqa: SIM115 - the child writes to it
        try:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.supervise", str(os.getpid()), "--", *child.argv],
                env=dict(child.env) if child.env is not None else None,
                cwd=child.cwd,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,  # its own process group, killed as one
            )
        finally:
            if out is not None:
                out.close()
        child.restart_at = None
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def poll(self) -> None:
        """Notice children that exited; restart those whose backoff has passed. Call often."""
        now = time.monotonic()
        for child in self.children:
            if child.given_up is not None or self.stopping:
                continue
            if child.proc is not None and child.restart_at is None:
                code = child.proc.poll()
                if code is None:
                    continue
                child.last_status = code
                _kill_group(child.proc.pid)  # its orphans (a Celery pool) go with it
                self._schedule(child, now)
            if child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
                if self.on_restart is not None:
                    self.on_restart(child)

    def _schedule(self, child: Child, now: float) -> None:
        while child.restarts and now - child.restarts[0] > self.restart_window_s:
            child.restarts.popleft()
        what = describe_status(child.last_status)
        if len(child.restarts) >= self.restart_limit:
            child.given_up = (
                f"{what}; restarted {len(child.restarts)} times within "
                f"{self.restart_window_s:g} s, given up"
            )
            log.error("%s %s", child.name, child.given_up)
            if self.on_give_up is not None:
                self.on_give_up(child, child.given_up)
            return
        delay = min(self.backoff_max_s, 2.0 ** len(child.restarts))
        child.restarts.append(now)
        child.restart_at = now + delay
        log.warning("%s %s; restarting it in %.0f s", child.name, what, delay)

    @property
    def all_given_up(self) -> bool:
        return all(c.given_up is not None for c in self.children)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Signal every child's group, wait up to ``grace_s`` for them, then SIGKILL."""
        self.stopping = True
        live = [c for c in self.children if c.running]
        for child in live:
            assert child.proc is not None
            _signal_group(child.proc.pid, signum)
        deadline = time.monotonic() + self.grace_s
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s; killing it", child.name, self.grace_s)
            _kill_group(child.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=10)

    def run(self, poll_s: float = 0.2) -> int:
        """Supervise until SIGTERM/SIGINT (then stop all and return 0) or until every child was
        given up on (return 1)."""
        requested: list[int] = []

        def _request(signum: int, _frame: object) -> None:
            requested.append(signum)

        signal.signal(signal.SIGTERM, _request)
        signal.signal(signal.SIGINT, _request)
        self.start()
        while not requested:
            self.poll()
            if self.all_given_up:
                log.error("every supervised process was given up on")
                self.stop()
                return 1
            time.sleep(poll_s)
        self.stop(signal.SIGTERM)
        return 0


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _kill_group(pgid: int) -> None:
    _signal_group(pgid, signal.SIGKILL)


def _exec_child(argv: list[str]) -> None:
    """``python -m harness.supervise PARENT_PID -- CMD...``: die with the parent, then exec."""
    parent, sep, *command = argv
    if sep != "--" or not command:
        sys.exit("usage: python -m harness.supervise PARENT_PID -- COMMAND ...")
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(parent):
        sys.exit(0)  # the supervisor died before the request took effect
    os.execvp(command[0], command)


if __name__ == "__main__":
    _exec_child(sys.argv[1:])
