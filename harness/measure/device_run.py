"""Running a benchmark runner on a device: the one way measurement and calibration do it.

A :class:`RunnerCall` says what to run: a :class:`Program` (the native runner on a compiled
artifact, or a Python runner module on a model file), the inputs, the entry function, the
timing protocol, and whether the outputs come back. :func:`run_on_device` deploys the
program, pushes the inputs into a run directory, lets the device cool, runs the runner under
a timeout, parses its report and pulls its outputs. It returns :class:`RunOk` or
:class:`RunFailed` (which says whose fault it was, and what the device was like around the
run); it raises only HarnessBug.

Several calls on one device can share a :class:`Workspace`: one run directory, each program
deployed once (calibration times tens of functions of one artifact). Without one, a call gets
a workspace of its own. A workspace's directory is removed when it closes, unless the caller
owns the device (a farm worker under its lease): then the next owner's ``Device.reset()``,
which removes every run directory, does it, and the run saves a round trip.

This module reads no settings (``harness.config`` imports :mod:`harness.measure.protocol`):
the caller passes :class:`RunLimits`.
"""

from __future__ import annotations

import logging
import posixpath
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from harness.compile.cache import Artifact
from harness.devices.base import Device, wait_cool
from harness.devices.deploy import (
    RUNNER_NAME,
    Bundle,
    deploy_markers,
    ensure_deployed,
    new_run_dir,
    runtime_bundle,
)
from harness.devices.records import Cooldown, StateSnapshot
from harness.errors import (
    CommandTimeout,
    EdgefarmError,
    HarnessBug,
    InfrastructureError,
    JobError,
)
from harness.measure.protocol import Protocol as TimingProtocol
from harness.modelio.formats import ModelFile
from harness.runner.result import RunnerError, RunnerOk, parse_runner_output

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]  # (event, message)


def _quiet(event: str, message: str) -> None:
    log.debug("%s: %s", event, message)


@dataclass(frozen=True)
class RunLimits:
    """What a run on a device is held to (the settings' ``run_timeout_s``,
    ``cooldown_max_temp_c`` and ``cooldown_max_wait_s``)."""

    # Beyond the protocol's max_seconds (where the runner stops timing by itself): loading,
    # warm-up, and a runner that hangs.
    run_timeout_s: float
    cooldown_max_temp_c: float
    cooldown_max_wait_s: float


@dataclass(frozen=True)
class Launch:
    """How a deployed program starts, and what it can do."""

    argv: tuple[str, ...]  # the runner and the module it loads
    env: dict[str, str] = field(default_factory=dict)
    runtime_bundle: str | None = None  # the hash of the runtime bundle it came with
    # The native runner takes --entry and --profile and writes --pid-file (by which
    # ``Device.reset()`` ends runners of interrupted runs); a Python runner does none of it.
    native: bool = False


class Program(Protocol):
    """A runner and the module it loads, as a device gets them."""

    @property
    def key(self) -> str:
        """Equal for programs that deploy the same files (deployed once per workspace)."""
        ...

    def ready(self) -> Program:
        """The same program with what can be done before the device is used done (found,
        built, hashed), so that a caller holding the device does not wait for it."""
        ...

    def markers(self, device: Device) -> tuple[str, ...]:
        """Files on ``device`` whose presence says the program is deployed there already."""
        ...

    def deploy(
        self, device: Device, directory: str, staging: Path, present: frozenset[str] | None
    ) -> Launch:
        """Put what the program needs on ``device`` (``directory``: the workspace's run
        directory; ``staging``: a local scratch directory) and say how it starts.
        ``present``: which of its :meth:`markers` were found just before (None: not
        looked for)."""
        ...


@dataclass(frozen=True)
class NativeRunner:
    """``edgefarm-runner`` from the runtime bundle of the artifact's target, on the artifact.
    Both are kept on the device between runs (pushed only when missing). ``bundle``: the
    runtime bundle found already (:meth:`ready`, off the device), else found when
    deployed. ``threads``: TVM's thread pool size (``--threads``; 0: the runtime's default,
    which on x86-64 is half the cores and on arm the fastest cluster's)."""

    artifact: Artifact
    bundle: Bundle | None = None
    threads: int = 0

    @property
    def key(self) -> str:
        return f"native:{self.artifact.key}:{self.threads}"

    def ready(self) -> NativeRunner:
        """The same, its runtime bundle found (built and hashed) now."""
        return NativeRunner(
            self.artifact,
            self.bundle or runtime_bundle(str(self.artifact.manifest["target"])),
            self.threads,
        )

    def markers(self, device: Device) -> tuple[str, ...]:
        bundle = self.ready().bundle
        assert bundle is not None
        return deploy_markers(device, bundle, self.artifact)

    def deploy(
        self, device: Device, directory: str, staging: Path, present: frozenset[str] | None
    ) -> Launch:
        bundle = self.ready().bundle
        assert bundle is not None
        bundle_dir, artifact_dir = ensure_deployed(device, bundle, self.artifact, present=present)
        return Launch(
            argv=(
                posixpath.join(bundle_dir, RUNNER_NAME),
                "--module",
                posixpath.join(artifact_dir, self.artifact.library.name),
                *(("--threads", str(self.threads)) if self.threads else ()),
            ),
            env={"LD_LIBRARY_PATH": bundle_dir},
            runtime_bundle=bundle.hash,
            native=True,
        )


@dataclass(frozen=True)
class PythonRunner:
    """A runner module (``python -m <module>``) of this interpreter on a model file pushed
    into the run directory: only a device that is this machine can start it."""

    module: str
    model: ModelFile
    args: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"python:{self.module}:{self.model.sha256}"

    def ready(self) -> PythonRunner:
        return self

    def markers(self, device: Device) -> tuple[str, ...]:
        return ()  # pushed into each run's directory

    def deploy(
        self, device: Device, directory: str, staging: Path, present: frozenset[str] | None
    ) -> Launch:
        local = staging / f"model.{self.model.format}"
        local.write_bytes(self.model.data)
        remote = posixpath.join(directory, local.name)
        device.push(local, remote, atomic=False)  # the run directory is private
        return Launch(argv=(sys.executable, "-m", self.module, *self.args, "--module", remote))


@dataclass(frozen=True)
class RunnerCall:
    """One runner invocation: what runs, on which inputs, timed how."""

    program: Program
    inputs: tuple[npt.NDArray[Any], ...]  # in the entry function's parameter order
    protocol: TimingProtocol  # ``profile`` asks the native runner for a per-operator profile
    entry: str | None = None  # the module's function to time; None: the runner's (main)
    outputs: bool = False  # have the runner write its outputs, and pull them back
    label: str = "the runner"  # what runs, for progress messages ("tvm-cpu")


@dataclass(frozen=True)
class DeviceState:
    """The device around a run: waiting for it to cool (``wait_cool``'s report without its
    state) and its state before and after (None when the runner did not end by itself)."""

    cooldown: Cooldown
    before: StateSnapshot
    after: StateSnapshot | None = None


@dataclass(frozen=True)
class RunOk:
    """The runner's report and outputs."""

    report: RunnerOk
    outputs: tuple[npt.NDArray[Any], ...]
    runtime_bundle: str | None
    state: DeviceState | None


@dataclass(frozen=True)
class RunFailed:
    """A call that failed: ``error`` is the JobError or InfrastructureError to raise (or to
    rephrase). What had happened by then is kept: the runner's report (its error report, or
    a finished run's when pulling its outputs failed), the deployed bundle, the device's
    state."""

    error: EdgefarmError
    report: RunnerOk | RunnerError | None = None
    runtime_bundle: str | None = None
    state: DeviceState | None = None


class Workspace:
    """A run directory on a device, and the programs deployed for it; removed on close."""

    def __init__(self, device: Device, *, keep: bool = False) -> None:
        self.device = device
        self.keep = keep  # left to the next exclusive owner's reset
        self.directory = new_run_dir(device)
        self._staging = tempfile.TemporaryDirectory(prefix="edgefarm-run-")
        self._launches: dict[str, Launch] = {}
        self._calls = 0

    @property
    def staging(self) -> Path:
        return Path(self._staging.name)

    def deployed(self, program: Program) -> bool:
        return program.key in self._launches

    def launch(
        self, program: Program, progress: Progress, present: frozenset[str] | None = None
    ) -> Launch:
        """``program`` deployed, the first time it is asked for (``present``: see
        :meth:`Program.deploy`)."""
        launch = self._launches.get(program.key)
        if launch is None:
            progress("deploy", f"deploying to {self.device.id}")
            launch = program.deploy(self.device, self.directory, self.staging, present)
            self._launches[program.key] = launch
        return launch

    def next_call(self) -> int:
        self._calls += 1
        return self._calls - 1

    def close(self) -> None:
        if self.keep:
            self._staging.cleanup()
            return
        try:
            self.device.remove(self.directory)
        except EdgefarmError as exc:
            log.warning("%s: could not remove %s: %s", self.device.id, self.directory, exc)
        finally:
            self._staging.cleanup()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def run_on_device(
    device: Device,
    call: RunnerCall,
    *,
    limits: RunLimits,
    workspace: Workspace | None = None,
    cooldown: bool = True,
    exclusive: bool = False,
    reset: bool = False,
    progress: Progress = _quiet,
) -> RunOk | RunFailed:
    """Run ``call`` on ``device`` (see the module doc). With ``cooldown``, wait until the
    device is cool (at most ``limits.cooldown_max_wait_s``) right before the runner starts,
    and snapshot its state before and after. ``exclusive``: the caller owns the device, and
    the run directory of a workspace of the call's own is left to the next owner's reset.
    ``reset``: runners left over from interrupted runs are ended first (for an exclusive
    owner). Raises only HarnessBug.

    Round trips to the device are few: the reset, the check that the program is deployed
    and the first state snapshot are one (:meth:`Device.preflight`), the run and the
    snapshot after it another (:meth:`Device.shell_then_state`); then the outputs' pulls."""
    own = workspace is None
    space = workspace if workspace is not None else Workspace(device, keep=exclusive)
    bundle: str | None = None
    state: DeviceState | None = None
    report: RunnerOk | RunnerError | None = None
    try:
        present: frozenset[str] | None = None
        first: StateSnapshot | None = None
        if cooldown or reset:
            markers = () if space.deployed(call.program) else call.program.markers(device)
            checked = device.preflight(reset=reset, markers=markers)
            if checked.ended:
                log.warning("%s: ended leftover runner(s) %s", device.id, checked.ended)
            present = checked.present
            # Deploying pushes files: then the state is read again afterwards.
            first = checked.state if present.issuperset(markers) else None
        launch = space.launch(call.program, progress, present)
        bundle = launch.runtime_bundle
        argv = _command_with_inputs(space, call, launch)

        if cooldown:
            cooled = wait_cool(
                device,
                max_temp_c=limits.cooldown_max_temp_c,
                max_wait_s=limits.cooldown_max_wait_s,
                initial=first,
            )
            if cooled["waited_s"]:
                progress("cooldown", f"{device.id} waited {cooled['waited_s']:.0f} s to cool")
            state = DeviceState(before=cooled.pop("state"), cooldown=cooled)
        progress("run", f"running {call.label} on {device.id}")
        timeout_s = limits.run_timeout_s + call.protocol.max_seconds
        try:
            if state is not None:
                result, after = device.shell_then_state(
                    argv, timeout_s=timeout_s, env=launch.env, cwd=space.directory
                )
                state = DeviceState(state.cooldown, state.before, after)
            else:
                result = device.shell(
                    argv, timeout_s=timeout_s, env=launch.env, cwd=space.directory
                )
        except CommandTimeout as exc:
            error = blame_timeout(device, exc, call.protocol)
            return RunFailed(error, runtime_bundle=bundle, state=state)
        report = parse_runner_output(
            result.stdout, stderr=result.stderr, returncode=result.exit_code
        )
        if not isinstance(report, RunnerOk):
            error = JobError("run", f"the runner failed at {report.stage}: {report.message}")
            return RunFailed(error, report=report, runtime_bundle=bundle, state=state)
        outputs = _pull_outputs(space, report) if call.outputs else ()
        return RunOk(report, outputs, runtime_bundle=bundle, state=state)
    except EdgefarmError as exc:
        if isinstance(exc, HarnessBug):
            raise
        # The report, when there is one: a failed pull after a finished run keeps its timings.
        return RunFailed(exc, report=report, runtime_bundle=bundle, state=state)
    finally:
        if own:
            space.close()


def _command_with_inputs(space: Workspace, call: RunnerCall, launch: Launch) -> list[str]:
    """The runner's command line for ``call``, its inputs pushed into the workspace."""
    n = space.next_call()
    argv = list(launch.argv)
    if call.entry is not None:
        if not launch.native:
            raise HarnessBug(f"{call.program.key} has no entry functions to choose from")
        argv += ["--entry", call.entry]
    for i, array in enumerate(call.inputs):
        local = space.staging / f"c{n}_in{i}.npy"
        np.save(local, np.ascontiguousarray(array))
        remote = posixpath.join(space.directory, local.name)
        # A run directory is private and removed afterwards: no need for atomic pushes.
        space.device.push(local, remote, atomic=False)
        argv += ["--input", remote]
    if call.outputs:
        # Outputs land beside the inputs (out0.npy ...): the run directory exists by now.
        argv += ["--output-dir", space.directory]
    argv += call.protocol.runner_args()
    if launch.native:
        if call.protocol.profile:
            argv.append("--profile")
        argv += ["--pid-file", posixpath.join(space.directory, "runner.pid")]
    return argv


def _pull_outputs(space: Workspace, report: RunnerOk) -> tuple[npt.NDArray[Any], ...]:
    outputs = []
    for i, out in enumerate(report.outputs):
        if out.file is None:
            raise HarnessBug(f"the runner did not write output {i}")
        local = space.staging / f"out{i}.npy"
        space.device.pull(posixpath.join(space.directory, out.file), local)
        outputs.append(np.load(local, allow_pickle=False))
    return tuple(outputs)


def blame_timeout(
    device: Device, exc: CommandTimeout, protocol: TimingProtocol
) -> InfrastructureError | JobError:
    """Whose fault a runner killed at its timeout is. If the device answers its health check
    afterwards, the device did what it was asked for as long as it was allowed: the run's own
    settings (or a model that never finishes) are to blame — a JobError, not retried, and the
    device's health untouched. Otherwise the device failed: the InfrastructureError stands."""
    health = device.health()
    if not health.get("ok"):
        return InfrastructureError(
            f"{exc.message}; afterwards the device failed its health check: "
            f"{health.get('problem')}",
            stage="run",
        )
    return JobError(
        "run",
        f"{exc.message}. The device is healthy, so the run itself took too long: its settings "
        f"(warmup {protocol.warmup}, at least {protocol.min_iterations} iterations and "
        f"{protocol.min_seconds:g} s, at most {protocol.max_seconds:g} s) ask for more than "
        "the model can do in that time, or the model does not finish; not retried",
    )
