"""The farm failing under a run: a phone gone, a worker killed mid-measurement."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.db import DeviceHealth, DeviceState, RunStatus
from harness.devices.emulator import EmulatedPhone

import testmodels
from workerfarm import Farm, WorkerProcess, register, slow_convnet, wait_for

INPUTS = ["input:1x3x32x32"]
# Long enough to kill the worker while the phone is measuring.
SLOW = {"min_seconds": 4.0, "max_seconds": 10.0}


@pytest.fixture(scope="module")
def model_id(farm: Farm) -> int:
    return farm.add_model(testmodels.mobilenet_like(), "mnet")


@pytest.fixture(scope="module")
def slow_model_id(farm: Farm) -> int:
    return farm.add_model(slow_convnet(), "slow")


def _device_args(*phones: EmulatedPhone) -> list[str]:
    return [arg for phone in phones for arg in ("--device", f"tcp:{phone.serial}")]


def test_a_phone_gone_offline_is_retried_then_fails_naming_it(
    farm: Farm, model_id: int, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    with EmulatedPhone("pixel-3a", root=root) as phone:
        address = f"tcp:{phone.serial}"
        port = phone.port
        device_id = register(farm, address)
        worker = start_worker(farm, *_device_args(phone), EDGEFARM_HEALTH_RECHECK_S="2")
        assert farm.device(device_id).health == DeviceHealth.good
    # The phone is gone before its run starts.
    job_id = farm.submit(model_id, [device_id], ["tvm-cpu"], INPUTS)
    (run,) = farm.wait_done(job_id, timeout_s=90)

    assert run.status == RunStatus.failed and run.error_stage == "run"
    assert run.attempts == 3  # EDGEFARM_MAX_RUN_ATTEMPTS
    assert address in (run.error_message or "")
    (result,) = farm.results(job_id)
    assert result.status == "failed" and result.error_stage == "run"
    assert address in (result.error_message or "")
    device = farm.device(device_id)
    assert device.health == DeviceHealth.bad and address in (device.health_reason or "")
    assert device.state == DeviceState.idle and device.current_run_id is None
    log = worker.log()
    assert len(re.findall(rf"run {run.id}: attempt \d on device", log)) == 3
    assert log.count("retrying in") == 2

    # The phone comes back (same sandbox, same port): its worker's re-check finds it healthy
    # and it is good again, without anyone's help.
    with EmulatedPhone("pixel-3a", root=root, port=port):
        wait_for(
            "the phone to be good again",
            lambda: farm.device(device_id).health == DeviceHealth.good,
            timeout_s=30,
        )
        assert farm.device(device_id).health_reason is None
    worker.stop()


def _wait_measuring(farm: Farm, worker: WorkerProcess, run_id: int, phone: EmulatedPhone) -> None:
    """Until the phone is executing the runner for the run (running, holding the device)."""
    wait_for(
        f"run {run_id} to be measuring",
        lambda: f"run: running tvm-cpu on tcp:{phone.serial}" in worker.log(),
        timeout_s=90,
        poll_s=0.05,
    )
    run = farm.run(run_id)
    assert run.status == RunStatus.running
    assert farm.device(run.device_id).state == DeviceState.running
    time.sleep(0.5)  # well inside the runner's 4 s


def test_sigkill_of_the_worker_mid_run_ends_the_run_once(
    farm: Farm,
    slow_model_id: int,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    phone = phones[0]
    device_id = register(farm, f"tcp:{phone.serial}")
    first = start_worker(farm, *_device_args(phone), "--beat")
    job_id = farm.submit(slow_model_id, [device_id], ["tvm-cpu"], ["image:1x3x128x128"], **SLOW)
    (run,) = farm.runs(job_id)
    _wait_measuring(farm, first, run.id, phone)

    first.kill()  # SIGKILL to the whole process group: no goodbye, no ack, no cleanup
    assert farm.run(run.id).status == RunStatus.running

    # A new worker: its reaper finds the run silent beyond the lease timeout, releases the
    # phone and queues the run again; the new worker runs it to the end.
    second = start_worker(farm, *_device_args(phone), "--beat")
    (run,) = farm.wait_done(job_id, timeout_s=90)
    assert run.status == RunStatus.done and run.attempts == 2
    (result,) = farm.results(job_id)
    assert result.status == "ok" and result.accuracy_passed is True
    assert result.median_ms is not None
    assert "died during attempt 1; queued again" in second.log()
    device = farm.device(device_id)
    assert device.state == DeviceState.idle and device.current_run_id is None
    second.stop()


def test_sigkill_of_a_pool_process_mid_run_redelivers_its_message(
    farm: Farm,
    slow_model_id: int,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """acks_late + task_reject_on_worker_lost: the worker gives the message of its dead pool
    process back to the broker; the redelivered message waits until the dead attempt is
    silent beyond the lease timeout, then runs the run (no beat here: no reaper)."""
    phone = phones[1]
    device_id = register(farm, f"tcp:{phone.serial}")
    worker = start_worker(farm, *_device_args(phone))
    job_id = farm.submit(slow_model_id, [device_id], ["tvm-cpu"], ["image:1x3x128x128"], **SLOW)
    (run,) = farm.runs(job_id)
    _wait_measuring(farm, worker, run.id, phone)
    found = re.search(rf"run {run.id}: attempt 1 on device {device_id} \(pid (\d+)\)", worker.log())
    assert found, worker.log()
    os.kill(int(found[1]), signal.SIGKILL)

    (run,) = farm.wait_done(job_id, timeout_s=90)
    assert run.status == RunStatus.done and run.attempts == 2
    (result,) = farm.results(job_id)
    assert result.status == "ok"
    log = worker.log()
    assert "WorkerLostError" in log or "exited with 'signal 9" in log
    assert f"run {run.id} waits: it is in progress elsewhere" in log
    worker.stop()
