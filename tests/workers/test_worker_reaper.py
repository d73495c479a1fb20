"""The reaper is never held up by the compile queue. Found by the chaos soak (bench/chaos.py):
on a busy embedded farm 148 of 165 reaps expired unrun in the compile queue behind job
starts, and a killed phone worker's run waited 134 s to be noticed with an 8 s lease timeout.
Here the compile worker is kept busy by a job start that hangs (its model is fetched from an
API that never answers, as a compile of many minutes would keep it) while a phone's worker is
killed mid-run: the run is reaped and measured again all the same."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from harness.config import get_settings
from harness.db import RunStatus
from harness.devices.emulator import EmulatedPhone
from harness.farm.liveness import liveness

import testmodels
from workerfarm import Farm, WorkerProcess, register, slow_convnet, wait_for

SLOW = {"min_seconds": 6.0, "max_seconds": 12.0}


@pytest.fixture
def silent_api() -> Iterator[socket.socket]:
    """A socket that takes connections and never answers: a model fetched from it hangs
    until the worker's transfer timeout (or until the socket is closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def _live_pid(farm: Farm, queue: str) -> int:
    def alive() -> int | None:
        with farm.sessions() as session:
            worker = liveness(session).worker_for(queue)
        return worker.pid if worker is not None and worker.alive else None

    return wait_for(f"a live worker for {queue}", alive, timeout_s=60)


def test_a_dead_workers_run_is_reaped_while_the_compile_worker_is_busy(
    farm: Farm,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
    silent_api: socket.socket,
) -> None:
    phone = phones[0]
    device_id = register(farm, f"tcp:{phone.serial}")
    slow = farm.add_model(slow_convnet(), "slow")
    worker = start_worker(
        farm,
        "--device",
        f"tcp:{phone.serial}",
        "--beat",
        EDGEFARM_API_URL=f"http://127.0.0.1:{silent_api.getsockname()[1]}",
        EDGEFARM_ADB_TRANSFER_TIMEOUT_S="120",  # how long the model fetch hangs
    )
    pid = _live_pid(farm, f"device.{device_id}")
    measured = farm.submit(slow, [device_id], ["tvm-cpu"], ["image:1x3x128x128"], **SLOW)
    (run,) = farm.runs(measured)
    wait_for(
        "the phone to be measuring",
        lambda: f"run: running tvm-cpu on tcp:{phone.serial}" in worker.log(),
        timeout_s=120,
        poll_s=0.05,
    )

    # A job whose model is not on this host: its start hangs on the silent API.
    elsewhere = testmodels.mlp(seed=7)
    hanging = farm.add_model(elsewhere, "elsewhere")
    sha256 = hashlib.sha256(elsewhere.SerializeToString()).hexdigest()
    (get_settings().models_path / f"{sha256}.onnx").unlink()
    stuck = farm.submit(hanging, [device_id], ["tvm-cpu"], ["x:1x64"])
    wait_for("the compile worker to hang", lambda: "fetching elsewhere" in worker.log(), 60)

    os.kill(pid, signal.SIGKILL)  # the phone's worker, mid-measurement
    killed_at = time.monotonic()
    wait_for(
        "the reaper to notice the dead worker's run",
        lambda: (
            f"run {run.id}: its worker on tcp:{phone.serial} died during attempt 1" in worker.log()
        ),
        timeout_s=40,  # lease 8 s, reaps every 2 s, the phone's worker restarted
    )
    noticed_s = time.monotonic() - killed_at
    (again,) = farm.wait_done(measured, timeout_s=90)
    assert again.status == RunStatus.done and again.attempts == 2, again.error_message
    # All the while the compile worker was still hanging on the other job's model.
    (waiting,) = farm.runs(stuck)
    assert waiting.status == RunStatus.compiling, waiting.status
    assert noticed_s < 40
    silent_api.close()  # the hanging fetch fails now, and the worker stops without waiting
    worker.stop()
