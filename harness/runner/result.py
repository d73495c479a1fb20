"""The runner's JSON report, and how to find it in what the runner printed.

The runner prints exactly one JSON object as its last line, either the ``ok`` form (timings,
memory, input and output descriptions, optionally a per-operator profile) or the ``error``
form (``stage`` and a one-line ``message``). The TVM runtime may log lines before it.
"""

from __future__ import annotations

import json
import signal
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from harness.errors import HarnessBug, InfrastructureError, one_line
from harness.jsontypes import JsonObject

RunnerStage = Literal["load", "input", "run", "output", "usage"]


class _Report(BaseModel):
    # Unknown fields are ignored so that a newer runner on a device still parses.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TensorFile(_Report):
    """One input or output: its .npy file name (None when outputs were not written)."""

    file: str | None
    dtype: str
    shape: list[int]


class OpProfile(_Report):
    """Time spent in one packed function (kernel, VM builtin or offloaded subgraph)."""

    name: str
    calls: int = Field(ge=0)
    total_ms: float = Field(ge=0)
    mean_ms: float = Field(ge=0)


class RunnerOk(_Report):
    """A finished measurement."""

    status: Literal["ok"]
    runner_version: str
    module: str | None = None
    entry: str = "main"
    load_ms: float = Field(ge=0)
    first_ms: float = Field(ge=0)
    warmup: int = Field(ge=0)
    samples_ms: list[float] = Field(min_length=1)
    peak_rss_kb: int = Field(ge=0)
    outputs: list[TensorFile]
    inputs: list[TensorFile]
    profile_iterations: int | None = None
    profile: list[OpProfile] | None = None
    # The threads the run used: TVM's pool (the native runner; 0 when the runtime could not
    # say), onnxruntime's intra-op threads (the Python runner). Absent from older runners.
    threads: int | None = Field(default=None, ge=0)


class RunnerError(_Report):
    """A measurement that failed; ``stage`` says where."""

    status: Literal["error"]
    runner_version: str | None = None
    stage: RunnerStage
    message: str


RunnerReport: TypeAlias = Annotated[RunnerOk | RunnerError, Field(discriminator="status")]
"""What the runner reports: narrow with ``report.status == "ok"`` or ``isinstance``."""

RUNNER_REPORT: TypeAdapter[RunnerOk | RunnerError] = TypeAdapter(RunnerReport)

_MARKER = '{"status"'


def _candidates(stdout: str) -> list[JsonObject]:
    """JSON objects that start with a ``status`` key, last printed first (not yet validated:
    each is tried as a :data:`RunnerReport`)."""
    decoder = json.JSONDecoder()
    found: list[JsonObject] = []
    pos = stdout.rfind(_MARKER)
    while pos != -1:
        try:
            value, _ = decoder.raw_decode(stdout, pos)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            found.append(value)
        pos = stdout.rfind(_MARKER, 0, pos)
    return found


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return ""
    if returncode < 0:
        try:
            return f" (killed by {signal.Signals(-returncode).name})"
        except ValueError:
            return f" (killed by signal {-returncode})"
    # A shell reports a signal death as 128 + signal number.
    if returncode > 128:
        try:
            return f" (exit status {returncode}: {signal.Signals(returncode - 128).name})"
        except ValueError:
            pass
    return f" (exit status {returncode})"


def parse_runner_output(
    stdout: str, *, stderr: str | None = None, returncode: int | None = None
) -> RunnerOk | RunnerError:
    """The runner's report from its standard output.

    Raises InfrastructureError (stage ``run``) when there is no report: the runner crashed or
    was killed. ``stderr`` and ``returncode``, when given, make that message more useful.
    Raises HarnessBug when a report is there but does not match the schema.
    """
    candidates = _candidates(stdout)
    if not candidates:
        tail = [ln for ln in (stderr or stdout).splitlines() if ln.strip()][-3:]
        hint = f"; it last printed: {one_line(' | '.join(tail), 300)}" if tail else ""
        raise InfrastructureError(
            f"the runner printed no report{_describe_exit(returncode)}: it crashed or was "
            f"killed{hint}",
            stage="run",
        )
    try:
        return RUNNER_REPORT.validate_python(candidates[0])
    except ValidationError as exc:
        raise HarnessBug(
            f"the runner's report does not match RunnerReport: {one_line(str(exc), 300)}"
        ) from exc
