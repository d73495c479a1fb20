"""The error tree of edgefarm, blamed by who has to act.

::

    EdgefarmError
     ├─ JobError             the user's input is wrong or unsupported; never retried.
     │                       Carries ``stage``: import | prepare | partition | compile |
     │                       link | run | compare.
     ├─ InfrastructureError  the farm failed: device offline, timeout, disk full; retried.
     │   └─ CommandTimeout   a command on a device was killed at its timeout (whose fault
     │                       depends on whether the device is healthy afterwards)
     └─ HarnessBug           our own defect.

Every message is one line that says what happened and, where it can, what to do about it.
Third-party exceptions (TVM, onnx, adb-shell) are converted at the boundary where they are
caught; nothing above that boundary sees them.
"""

from __future__ import annotations

from typing import Literal, get_args

Stage = Literal["import", "prepare", "partition", "compile", "link", "run", "compare"]
STAGES: tuple[str, ...] = get_args(Stage)


class EdgefarmError(Exception):
    """Base of every error edgefarm raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class JobError(EdgefarmError):
    """The user's input is wrong or unsupported. Retrying will not help."""

    def __init__(self, stage: Stage, message: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        super().__init__(message)
        self.stage: Stage = stage


class InfrastructureError(EdgefarmError):
    """The farm failed (device offline, timeout, disk full). Worth retrying.

    ``stage`` says where in a measurement it happened, when that is known.
    """

    def __init__(self, message: str, *, stage: Stage | None = None) -> None:
        super().__init__(message)
        self.stage: Stage | None = stage


class CommandTimeout(InfrastructureError):
    """A command on a device did not finish within its timeout and was killed. Whose fault
    that is depends on the device: the caller asks it (a healthy phone that ran a command
    for as long as its request asked is the request's fault, not the farm's)."""


class HarnessBug(EdgefarmError):
    """Our own defect: an invariant of edgefarm's code does not hold."""


def one_line(text: str, limit: int = 400) -> str:
    """Collapse a (possibly multi-line) third-party message to one readable line."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    # TVM's errors put the useful sentence last, after a C++ backtrace.
    useful = [ln for ln in lines if not ln.startswith(("File ", "at ", "0:", "1:", "2:", "3:"))]
    picked = (useful or lines or [""])[-1] if len(lines) > 3 else " ".join(lines)
    return picked if len(picked) <= limit else picked[: limit - 3] + "..."
