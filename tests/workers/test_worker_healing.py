"""A farm that heals: a phone's Celery worker SIGKILLed mid-run is restarted alone while the
other phone goes on measuring; a worker that keeps dying is reported down and its queued
runs end failed instead of waiting forever; a run that takes longer than its own settings
allow, or asks for inputs larger than the farm accepts, fails as the job's fault — the worker,
the phone and its health untouched."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from harness.db import DeviceHealth, RunStatus, Worker, WorkerStatus
from harness.devices.emulator import EmulatedPhone
from harness.farm.liveness import liveness, process_name

import testmodels
from workerfarm import Farm, WorkerProcess, register, slow_convnet, wait_for

IMAGE = ["image:1x3x128x128"]
SLOW = {"min_seconds": 6.0, "max_seconds": 12.0}


@pytest.fixture(scope="module")
def slow_model_id(farm: Farm) -> int:
    return farm.add_model(slow_convnet(), "slow")


def _args(*phones: EmulatedPhone) -> list[str]:
    return [arg for phone in phones for arg in ("--device", f"tcp:{phone.serial}")]


def _worker_row(farm: Farm, device_id: int) -> Worker | None:
    with farm.sessions() as session:
        return session.scalar(
            select(Worker).where(Worker.name == process_name(f"device.{device_id}"))
        )


def _live_pid(farm: Farm, device_id: int, *, not_pid: int | None = None) -> int:
    """The pid of the device's live Celery worker (its main process), once it is alive (and,
    with ``not_pid``, once it is another process than that one)."""

    def alive() -> int | None:
        with farm.sessions() as session:
            report = liveness(session)
        worker = report.worker_for(f"device.{device_id}")
        if worker is None or not worker.alive or worker.pid == not_pid:
            return None
        return worker.pid

    return wait_for(f"a live worker for device {device_id}", alive, timeout_s=60)


def test_sigkill_of_one_phones_worker_leaves_the_other_measuring(
    farm: Farm,
    slow_model_id: int,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    a, b = (register(farm, f"tcp:{p.serial}") for p in phones)
    worker = start_worker(farm, *_args(*phones), "--beat")
    pid_a, pid_b = _live_pid(farm, a), _live_pid(farm, b)
    job_id = farm.submit(slow_model_id, [a, b], ["tvm-cpu"], IMAGE, **SLOW)
    run_a, run_b = farm.runs(job_id)
    wait_for(
        "both phones to be measuring",
        lambda: all(f"run: running tvm-cpu on tcp:{p.serial}" in worker.log() for p in phones),
        timeout_s=120,
        poll_s=0.05,
    )

    os.kill(pid_a, signal.SIGKILL)  # phone A's Celery worker, mid-measurement
    killed_at = time.monotonic()

    # Phone B is not disturbed: its run ends done at its first attempt, its worker the same.
    wait_for("phone B's run", lambda: farm.run(run_b.id).status.ended, timeout_s=60)
    run_b = farm.run(run_b.id)
    assert run_b.status == RunStatus.done and run_b.attempts == 1
    assert _live_pid(farm, b) == pid_b

    # Phone A's worker is restarted, and the killed run is noticed, queued again and done.
    _live_pid(farm, a, not_pid=pid_a)
    (run_a, run_b) = farm.wait_done(job_id, timeout_s=120)
    waited = time.monotonic() - killed_at
    assert run_a.status == RunStatus.done and run_a.attempts == 2, run_a.error_message
    assert waited < 120, f"the killed run took {waited:.0f} s to end"
    results = {r.run_id: r for r in farm.results(job_id)}
    assert results[run_a.id].status == "ok" and results[run_b.id].status == "ok"
    for device_id in (a, b):
        device = farm.device(device_id)
        assert device.health == DeviceHealth.good and device.current_run_id is None
    log = worker.log()
    assert "killed by SIGKILL; restarting it in" in log
    assert f"run {run_a.id}: its worker on" in log and "died during attempt 1" in log
    worker.stop()
    row = _worker_row(farm, a)
    assert row is not None and row.status == WorkerStatus.stopped


def test_a_worker_given_up_on_is_reported_down_and_its_runs_end_failed(
    farm: Farm,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    phone = phones[0]
    device_id = register(farm, f"tcp:{phone.serial}")
    model_id = farm.add_model(testmodels.mobilenet_like(), "mnet")
    worker = start_worker(
        farm,
        *_args(phone),
        "--beat",
        EDGEFARM_WORKER_RESTART_LIMIT="0",  # the first death is the last
        EDGEFARM_NO_WORKER_TIMEOUT_S="6",
    )
    os.kill(_live_pid(farm, device_id), signal.SIGKILL)
    wait_for(
        "the worker to be reported down",
        lambda: (
            (row := _worker_row(farm, device_id)) is not None and row.status == WorkerStatus.down
        ),
        timeout_s=30,
    )
    row = _worker_row(farm, device_id)
    assert row is not None and "given up" in (row.reason or "") and "SIGKILL" in (row.reason or "")

    # A run sent to the phone now waits for nobody: it ends failed, saying why.
    job_id = farm.submit(model_id, [device_id], ["tvm-cpu"], ["input:1x3x32x32"])
    (run,) = farm.wait_done(job_id, timeout_s=90)
    assert run.status == RunStatus.failed and run.error_stage == "run"
    assert "no live worker" in (run.error_message or "")
    assert "given up" in (run.error_message or "")
    (result,) = farm.results(job_id)
    assert result.status == "failed" and "no live worker" in (result.error_message or "")
    with farm.sessions() as session:
        report = liveness(session)
    assert f"device.{device_id}" not in report.live_queues
    assert "compile" in report.live_queues  # the rest of the host goes on
    worker.stop()


def test_a_run_longer_than_its_settings_allow_is_the_jobs_fault(
    farm: Farm,
    slow_model_id: int,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A warm-up far beyond the run's time: the runner is killed at the timeout, the phone
    answers its health check, so the run fails once at stage run — no retry, phone good."""
    phone = phones[1]
    device_id = register(farm, f"tcp:{phone.serial}")
    worker = start_worker(farm, *_args(phone), EDGEFARM_RUN_TIMEOUT_S="3")
    job_id = farm.submit(
        slow_model_id, [device_id], ["tvm-cpu"], IMAGE, warmup=10_000, max_seconds=1.0
    )
    (run,) = farm.wait_done(job_id, timeout_s=120)
    assert run.status == RunStatus.failed and run.error_stage == "run"
    assert run.attempts == 1
    assert "did not finish within" in (run.error_message or "")
    assert "not retried" in (run.error_message or "")
    device = farm.device(device_id)
    assert device.health == DeviceHealth.good and device.current_run_id is None
    assert "retrying in" not in worker.log()
    worker.stop()


def test_oversized_inputs_fail_the_run_not_the_worker(
    farm: Farm,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A job written past the API's checks (an older row, another client) asking for 77 GB of
    inputs: the run fails at prepare naming the input; the worker and the phone stay up."""
    phone = phones[0]
    device_id = register(farm, f"tcp:{phone.serial}")
    model_id = farm.add_model(testmodels.dynamic_batch(), "dyn")
    worker = start_worker(farm, *_args(phone))
    pid = _live_pid(farm, device_id)
    job_id = farm.submit(model_id, [device_id], ["tvm-cpu"], ["images:100000000x3x8x8"])
    (run,) = farm.wait_done(job_id, timeout_s=90)
    assert run.status == RunStatus.failed and run.error_stage == "prepare"
    assert "images" in (run.error_message or "")
    assert farm.device(device_id).health == DeviceHealth.good
    assert _live_pid(farm, device_id) == pid  # the same worker process
    assert "restarting it" not in worker.log()
    # And it measures the next job as if nothing happened.
    ok = farm.submit(model_id, [device_id], ["tvm-cpu"], ["images:2x3x8x8"])
    (run,) = farm.wait_done(ok, timeout_s=120)
    assert run.status == RunStatus.done, run.error_message
    worker.stop()
