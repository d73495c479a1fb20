"""run_on_device on this machine: a real artifact, the real native runner, the local device.
What it returns for a run, a runner that reports an error and a runner killed at its timeout;
calls sharing a workspace deploy once; run directories do not outlive their workspace."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from harness.backends import get_backend
from harness.compile import Artifact, compile_artifact
from harness.devices import Device, open_device
from harness.errors import JobError
from harness.measure.device_run import (
    NativeRunner,
    RunFailed,
    RunLimits,
    RunnerCall,
    RunOk,
    Workspace,
    run_on_device,
)
from harness.measure.protocol import Protocol
from harness.modelio import PreparedModel, load
from harness.runner.result import RunnerError

import testmodels

FAST = Protocol(warmup=1, min_iterations=3, min_seconds=0.0, max_seconds=5.0)
LIMITS = RunLimits(run_timeout_s=60.0, cooldown_max_temp_c=90.0, cooldown_max_wait_s=0.0)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> PreparedModel:
    return load(testmodels.save(testmodels.mlp(), tmp_path_factory.mktemp("m"), "mlp"))


@pytest.fixture(scope="module")
def artifact(mlp: PreparedModel) -> Artifact:
    return compile_artifact(mlp, get_backend("tvm-cpu"), target="host")


@pytest.fixture
def device() -> Iterator[Device]:
    device = open_device("local")
    yield device
    device.close()


def _inputs(model: PreparedModel) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(s.static_shape()).astype(s.dtype) for s in model.inputs)


def _runs(device: Device) -> set[str]:
    return {name for name, _, _ in device.usage(f"{device.work_root}/runs")}


def test_a_run_returns_the_report_outputs_and_the_devices_state(
    device: Device, mlp: PreparedModel, artifact: Artifact
) -> None:
    before = _runs(device)
    events: list[str] = []
    call = RunnerCall(NativeRunner(artifact), _inputs(mlp), FAST, outputs=True, label="mlp")
    outcome = run_on_device(
        device, call, limits=LIMITS, progress=lambda event, _: events.append(event)
    )
    assert isinstance(outcome, RunOk), outcome
    assert len(outcome.report.samples_ms) >= FAST.min_iterations
    assert [o.shape for o in outcome.outputs] == [tuple(s.shape) for s in mlp.outputs]
    assert outcome.runtime_bundle is not None
    assert outcome.state is not None and outcome.state.after is not None
    assert "waited_s" in outcome.state.cooldown and "state" not in outcome.state.cooldown
    assert events == ["deploy", "run"]
    assert _runs(device) == before  # its own workspace, removed


def test_calls_in_one_workspace_deploy_once_and_leave_nothing_behind(
    device: Device, mlp: PreparedModel, artifact: Artifact
) -> None:
    events: list[str] = []
    with Workspace(device) as workspace:
        for _ in range(3):
            call = RunnerCall(NativeRunner(artifact), _inputs(mlp), FAST, entry="main")
            outcome = run_on_device(
                device,
                call,
                limits=LIMITS,
                workspace=workspace,
                cooldown=False,
                progress=lambda event, _: events.append(event),
            )
            assert isinstance(outcome, RunOk), outcome
            assert outcome.outputs == () and outcome.state is None
        assert device.exists(workspace.directory)
    assert events == ["deploy", "run", "run", "run"]
    assert not device.exists(workspace.directory)


def test_a_runner_error_is_the_jobs_fault_with_the_runners_report(
    device: Device, mlp: PreparedModel, artifact: Artifact
) -> None:
    call = RunnerCall(NativeRunner(artifact), _inputs(mlp), FAST, entry="no_such_function")
    outcome = run_on_device(device, call, limits=LIMITS)
    assert isinstance(outcome, RunFailed)
    assert isinstance(outcome.report, RunnerError) and outcome.report.stage == "load"
    assert isinstance(outcome.error, JobError) and outcome.error.stage == "run"
    assert outcome.error.message.startswith("the runner failed at load: ")
    assert outcome.state is not None and outcome.state.after is not None


def test_a_runner_killed_at_its_timeout_on_a_healthy_device_is_the_jobs_fault(
    device: Device, mlp: PreparedModel, artifact: Artifact
) -> None:
    # No time at all beyond a millisecond of timing: the runner cannot even load.
    protocol = Protocol(warmup=10_000, min_iterations=1, min_seconds=0.0, max_seconds=0.001)
    limits = RunLimits(run_timeout_s=0.0, cooldown_max_temp_c=90.0, cooldown_max_wait_s=0.0)
    outcome = run_on_device(
        device, RunnerCall(NativeRunner(artifact), _inputs(mlp), protocol), limits=limits
    )
    assert isinstance(outcome, RunFailed) and outcome.report is None
    assert isinstance(outcome.error, JobError), outcome.error
    assert "The device is healthy" in outcome.error.message
    # Killed: no state after the run, the state before it is kept.
    assert outcome.state is not None and outcome.state.after is None
