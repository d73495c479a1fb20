"""The command lines edgefarm sends to a phone's shell: every argument quoted with
:func:`shlex.quote`, every path confined to the work root, every command bounded by toybox
``timeout`` on the phone.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
import time
from pathlib import Path

from harness.errors import CommandTimeout, JobError

WORK_ROOT = "/data/local/tmp/edgefarm"


def confined(device_id: str, remote: str) -> str:
    """``remote`` normalised, refusing anything outside the work root."""
    path = posixpath.normpath(remote)
    if path != WORK_ROOT and not path.startswith(WORK_ROOT + "/"):
        raise JobError("run", f"{device_id}: refusing path {remote!r} outside {WORK_ROOT}")
    return path


def command_line(
    device_id: str,
    argv: list[str],
    *,
    timeout_s: float,
    env: dict[str, str] | None,
    cwd: str | None,
) -> str:
    """``argv`` as one shell command line, run in ``cwd`` with ``env``, killed at the timeout."""
    for key in env or {}:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise JobError("run", f"bad environment variable name {key!r}")
    parts = []
    if cwd is not None:
        parts.append(f"cd {shlex.quote(confined(device_id, cwd))} &&")
    # Rounded up: a kill before ``timeout_s`` would not be recognised as a timeout below.
    parts.append("timeout -s KILL " + str(max(1, math.ceil(timeout_s))))
    if env:
        parts.append("env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    parts.append(" ".join(shlex.quote(a) for a in argv))
    return " ".join(parts)


def check_timeout(
    device_id: str, argv: list[str], code: int, started: float, timeout_s: float
) -> None:
    """Raise :class:`CommandTimeout` when a :func:`command_line` was killed at its timeout."""
    if code == 137 and time.monotonic() - started >= timeout_s - 0.5:
        raise CommandTimeout(
            f"{device_id}: {Path(argv[0]).name} did not finish within {timeout_s:.0f} s and "
            "was killed",
            stage="run",
        )
