"""The supervisor with real processes: restarts one child alone, gives up after its limit,
takes a dead child's orphans with it, stops a child stuck in shutdown, and its children die
with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.supervise import Child, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _until(what: str, check: Callable[[], object], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        supervisor.stop(signal.SIGKILL)


def _supervisor(made: list[Supervisor], children: list[Child], **kwargs: object) -> Supervisor:
    options: dict[str, object] = {
        "restart_limit": 5,
        "restart_window_s": 60.0,
        "backoff_max_s": 1.0,
        "grace_s": 2.0,
    }
    options.update(kwargs)
    supervisor = Supervisor(children, **options)  # type: ignore[arg-type]
    made.append(supervisor)
    supervisor.start()
    return supervisor


def _pid(supervisor: Supervisor, name: str) -> int:
    pid = supervisor.child(name).pid
    assert pid is not None
    return pid


def _poll_until(supervisor: Supervisor, what: str, check: Callable[[], object]) -> None:
    def polled() -> object:
        supervisor.poll()
        return check()

    _until(what, polled)


def test_a_killed_child_is_restarted_alone(supervisors: list[Supervisor]) -> None:
    supervisor = _supervisor(supervisors, [Child("a", SLEEPER), Child("b", SLEEPER)])
    a, b = _pid(supervisor, "a"), _pid(supervisor, "b")
    os.kill(a, signal.SIGKILL)
    started = time.monotonic()
    _poll_until(supervisor, "a to be restarted", lambda: supervisor.child("a").pid != a)
    assert time.monotonic() - started >= 0.9  # after its backoff, not in a tight loop
    assert supervisor.child("a").running and _alive(_pid(supervisor, "a"))
    assert _pid(supervisor, "b") == b and _alive(b)  # the other child was not touched
    assert supervisor.child("a").last_status == -signal.SIGKILL


def test_a_child_that_keeps_dying_is_given_up_and_reported(
    supervisors: list[Supervisor],
) -> None:
    reported: list[tuple[str, str]] = []
    supervisor = _supervisor(
        supervisors,
        [Child("flaky", SLEEPER), Child("steady", SLEEPER)],
        restart_limit=2,
        on_give_up=lambda child, reason: reported.append((child.name, reason)),
    )
    steady = _pid(supervisor, "steady")
    for _ in range(2):
        pid = _pid(supervisor, "flaky")
        os.kill(pid, signal.SIGKILL)
        _poll_until(supervisor, "a restart", lambda pid=pid: supervisor.child("flaky").pid != pid)
    os.kill(_pid(supervisor, "flaky"), signal.SIGKILL)
    _poll_until(supervisor, "the give-up", lambda: reported)
    ((name, reason),) = reported
    assert name == "flaky" and "SIGKILL" in reason and "restarted 2 times" in reason
    assert supervisor.child("flaky").given_up == reason
    time.sleep(1.5)
    supervisor.poll()
    assert not supervisor.child("flaky").running  # given up: stays down
    assert _alive(steady) and not supervisor.all_given_up


def test_a_dead_childs_orphans_die_with_it(supervisors: list[Supervisor], tmp_path: Path) -> None:
    """A Celery worker's pool process outlives a SIGKILLed main process unless its group is
    killed: the supervisor kills the group."""
    pid_file = tmp_path / "grandchild.pid"
    parent = textwrap.dedent(
        f"""
        import subprocess, time
        p = subprocess.Popen(["sleep", "600"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        time.sleep(600)
        """
    )
    supervisor = _supervisor(supervisors, [Child("parent", [sys.executable, "-c", parent])])
    _until("the grandchild", lambda: pid_file.exists() and pid_file.read_text())
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    os.kill(_pid(supervisor, "parent"), signal.SIGKILL)
    _poll_until(supervisor, "the orphan to die", lambda: not _alive(grandchild))


def test_stop_kills_a_child_stuck_in_its_shutdown(supervisors: list[Supervisor]) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ]
    supervisor = _supervisor(supervisors, [Child("stubborn", stubborn)], grace_s=1.0)
    pid = _pid(supervisor, "stubborn")
    time.sleep(0.5)  # let it install its handler
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5.0
    assert not _alive(pid)


def test_children_die_with_their_supervisor(tmp_path: Path) -> None:
    """SIGKILL of the supervisor itself (nothing can forward a signal): the kernel ends its
    children (PR_SET_PDEATHSIG), so no worker goes on consuming unsupervised."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import time
        from harness.supervise import Child, Supervisor
        s = Supervisor(
            [Child("c", {SLEEPER!r})], restart_limit=1, restart_window_s=60, backoff_max_s=1
        )
        s.start()
        open({str(pid_file)!r}, "w").write(str(s.child("c").pid))
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        _until("the child", lambda: pid_file.exists() and pid_file.read_text())
        child = int(pid_file.read_text())
        _until("the child to exec its command", lambda: "harness.supervise" not in _cmdline(child))
        assert _alive(child)
        proc.kill()
        proc.wait()
        _until("the child to die with its supervisor", lambda: not _alive(child))
    finally:
        if proc.poll() is None:
            proc.kill()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
