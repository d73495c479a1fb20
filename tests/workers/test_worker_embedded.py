"""The embedded farm: SQLite for the database, kombu's SQLAlchemy transport (SQLite) for the
broker; no service at all. The worker migrates the database itself."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import inspect

from harness.db import DeviceState, RunStatus
from harness.devices.emulator import EmulatedPhone

import testmodels
from workerfarm import Farm, WorkerProcess


def test_one_job_end_to_end_over_sqlite(
    tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'farm.db'}"
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with EmulatedPhone("dimensity-9200", thermal_time_constant_s=3600.0) as phone:
        address = f"tcp:{phone.serial}"
        farm = Farm(database_url, broker_url)
        try:
            # Through the ``edgefarm worker`` command, which execs ``python -m workers``.
            worker = start_worker(
                farm, "--device", address, "--beat", program=[sys.executable, "-m", "harness.cli"]
            )
            assert "runs" in inspect(farm.engine).get_table_names()  # migrated by the worker
            device_id = farm.device_id(address)
            model_id = farm.add_model(testmodels.mobilenet_like(), "mnet")
            job_id = farm.submit(model_id, [device_id], ["tvm-cpu"], ["input:1x3x32x32"])
            (run,) = farm.wait_done(job_id, timeout_s=120)
            assert run.status == RunStatus.done and run.attempts == 1
            (result,) = farm.results(job_id)
            assert result.status == "ok" and result.accuracy_passed is True
            assert result.document["device"]["id"] == address
            device = farm.device(device_id)
            assert device.state == DeviceState.idle and device.current_run_id is None
            worker.stop()
        finally:
            farm.close()
