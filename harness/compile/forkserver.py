"""A compile server: TVM imported once, a forked child per build.

Every build runs in a child process of its own (:mod:`harness.compile.build` says why). Started
fresh, each child spends about three seconds of CPU importing TVM, Relax and the model readers
before it compiles anything: on a farm that builds all night, and in the test suite, most of a
small model's build. The server imports all that once; each build is a ``fork`` of it that
inherits the imports and otherwise is the child it was: a session of its own (a timeout kills
its whole group), the caller's environment and working directory, its output in files the
caller reads, and its end (an exit status, or the signal that killed it) reported as a
``subprocess`` child's.

The server is private to the process that started it (a ``ForkServer`` started in a process
that then forks, as a Celery worker does, is started again in each process that uses it) and
exits when that process closes its end of the pipe, or dies. It reads one request per line on
stdin and answers on a private copy of its stdout (anything TVM prints goes to stderr):
``{"id", "pid"}`` once a build's child is forked, ``{"id", "status"}`` (a wait status) when it
ended. A server that is gone (killed, out of memory) fails the builds it had running with
:class:`ServerGone`; the caller runs them again as plain children.

``EDGEFARM_COMPILE_FORKSERVER=0`` (``Settings.compile_forkserver``) turns it off: every build
starts a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

READY = "edgefarm-compile-server-ready"
_SERVE = "import sys; from harness.compile.forkserver import serve; sys.exit(serve())"
# A build's child ends itself this long after its caller's timeout, should the caller be gone
# and unable to kill it.
_BACKSTOP_S = 60


class ServerGone(Exception):
    """The server died; the builds it had running did not report how they ended."""


@dataclass
class Finished:
    """How a build's child ended: ``returncode`` as :class:`subprocess.Popen` gives it."""

    returncode: int
    stdout: str
    stderr: str


@dataclass
class _Pending:
    pid: int | None = None
    status: int | None = None
    started: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)


class ForkServer:
    """The parent's side: starts the server and runs builds through it, from any thread."""

    def __init__(self, start_timeout_s: float = 300.0) -> None:
        self.owner = os.getpid()
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next = 0
        self._gone = False
        self._proc = subprocess.Popen(
            # Not ``-m harness.compile.forkserver``: the package imports this module first, and
            # runpy warns that it is found in sys.modules before it runs as __main__.
            [sys.executable, "-c", _SERVE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._stdin: IO[str] = self._proc.stdin
        ready, _, _ = select.select([self._proc.stdout], [], [], start_timeout_s)
        line = self._proc.stdout.readline() if ready else ""
        if line.strip() != READY:
            self.close()
            raise ServerGone(f"the compile server did not start: {line.strip() or 'no answer'}")
        self._reader = threading.Thread(
            target=self._read, args=(self._proc.stdout,), name="compile-server", daemon=True
        )
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self._gone and self._proc.poll() is None

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            message = json.loads(line)
            with self._lock:
                pending = self._pending.get(message["id"])
            if pending is None:
                continue
            if "pid" in message:
                pending.pid = message["pid"]
                pending.started.set()
            else:
                pending.status = message["status"]
                pending.ended.set()
        with self._lock:
            self._gone = True
            for pending in self._pending.values():
                pending.started.set()
                pending.ended.set()

    def run(self, request: dict[str, Any], timeout_s: float) -> Finished:
        """Run ``request`` (a compile request) in a forked child; raises
        :class:`subprocess.TimeoutExpired` after ``timeout_s`` (the child's group killed) and
        :class:`ServerGone` if the server died first."""
        with tempfile.TemporaryDirectory(prefix="edgefarm-build-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            with self._lock:
                if self._gone:
                    raise ServerGone("the compile server is gone")
                self._next += 1
                ident = self._next
                pending = self._pending[ident] = _Pending()
                message = {
                    "id": ident,
                    "request": request,
                    "env": dict(os.environ),
                    "cwd": os.getcwd(),
                    "nice": os.getpriority(os.PRIO_PROCESS, 0),
                    "stdout": str(out),
                    "stderr": str(err),
                    "timeout_s": timeout_s,
                }
                try:
                    self._stdin.write(json.dumps(message) + "\n")
                    self._stdin.flush()
                except OSError as exc:
                    self._gone = True
                    raise ServerGone(f"the compile server is gone: {exc}") from None
            try:
                pending.started.wait(60)
                if pending.pid is None:
                    raise ServerGone("the compile server died before it forked the build")
                if not pending.ended.wait(timeout_s):
                    _kill_group(pending.pid)
                    pending.ended.wait(30)
                    raise subprocess.TimeoutExpired("compile", timeout_s)
                if pending.status is None:
                    _kill_group(pending.pid)
                    raise ServerGone("the compile server died while a build ran")
            finally:
                with self._lock:
                    self._pending.pop(ident, None)
            return Finished(
                os.waitstatus_to_exitcode(pending.status),
                out.read_text(errors="replace") if out.exists() else "",
                err.read_text(errors="replace") if err.exists() else "",
            )

    def close(self) -> None:
        """Ends the server (its running builds finish on their own)."""
        self._gone = True
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def fresh_child(module: str, stdin: str, timeout_s: float) -> Finished:
    """Run ``python -m module`` in a session of its own with ``stdin``; after ``timeout_s``
    its whole group is killed and :class:`subprocess.TimeoutExpired` raised."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise
    return Finished(proc.returncode, stdout, stderr)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


_server: ForkServer | None = None
_server_lock = threading.Lock()


def enabled() -> bool:
    from harness.config import get_settings

    return get_settings().compile_forkserver


def server() -> ForkServer:
    """This process's compile server, started on first use (and again after it died)."""
    global _server
    with _server_lock:
        if _server is None or _server.owner != os.getpid() or not _server.alive:
            if _server is not None and _server.owner == os.getpid():
                _server.close()
            _server = ForkServer()
        return _server


# The server's side.


def _preload() -> None:
    """What a build imports: TVM (without torch), Relax's model readers, the compile child."""
    from harness.compile.tvmimport import import_tvm

    import_tvm()
    import onnx  # noqa: F401
    from tvm import relax  # noqa: F401
    from tvm.relax.frontend import onnx as relax_onnx  # noqa: F401

    import harness.compile.child  # noqa: F401


def _build(message: dict[str, Any]) -> None:
    """In the forked child: become the build's process, then compile. Never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, message["stdout"]), (2, message["stderr"])):
            opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        os.closerange(3, 1024)  # the server's pipes: its caller must see only the server's
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        signal.alarm(int(message["timeout_s"]) + _BACKSTOP_S)
        os.environ.clear()
        os.environ.update(message["env"])
        os.chdir(message["cwd"])
        # A higher priority than the server's needs privileges: then the build keeps its.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, int(message["nice"]))
        from harness.compile.child import answer
        from harness.config import get_settings

        get_settings.cache_clear()
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
        answer(message["request"])
        code = 0
    except BaseException:  # the traceback is the caller's message
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> int:
    # The answers go on a private copy of stdout; fd 1 becomes stderr, for anything printed.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    _preload()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    ids: dict[int, int] = {}
    answers.write(READY + "\n")
    pending = b""
    while True:
        try:
            readable, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            _drain(wake_r)
        while ids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            answers.write(json.dumps({"id": ids.pop(pid), "status": status}) + "\n")
        if 0 in readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return 0  # the caller is gone: running builds finish (or time out) alone
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                message = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _build(message)
                ids[pid] = message["id"]
                answers.write(json.dumps({"id": message["id"], "pid": pid}) + "\n")


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return
