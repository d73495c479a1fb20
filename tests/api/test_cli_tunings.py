"""``edgefarm submit --tune`` as a user runs it, against a real API server (uvicorn, a
database of its own, the real broker): a BYOC backend's CPU part can be tuned, a backend that
cannot is named, and Ctrl-C while it waits cancels the tunings it submitted (no worker runs
here, so they wait queued until then)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from harness.db import Device, Tuning, TuningStatus

import testmodels
from apidata import edgefarm, one_error_line


def _model(tmp_path: Path) -> str:
    return str(testmodels.save(testmodels.mobilenet_like(seed=5), tmp_path, "mnet"))


def test_a_backend_that_cannot_be_tuned_is_named_before_the_farm_is_asked(tmp_path: Path) -> None:
    """Checked before anything is uploaded: the farm here is a closed port, and the error is
    the backend's, not that the farm cannot be reached."""
    farm = {"url": "http://127.0.0.1:1", "token": "unused", "home": tmp_path / "home"}
    model = _model(tmp_path)
    ort = edgefarm(farm, "submit", model, "--tune", "-b", "ort")
    assert ort.returncode != 0
    assert "backend 'ort' cannot be tuned; tunable: tvm-cpu, tvm-nnapi" in one_error_line(ort)
    two = edgefarm(farm, "submit", model, "--tune", "-b", "tvm-cpu", "-b", "tvm-nnapi")
    assert two.returncode != 0 and "one backend at a time" in one_error_line(two)


def test_ctrl_c_while_waiting_cancels_the_submitted_tuning(
    farm_api: dict[str, Any], tmp_path: Path
) -> None:
    with farm_api["factory"]() as session:
        device = session.scalars(select(Device).where(Device.pool == farm_api["pool"])).first()
        assert device is not None
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "submit", _model(tmp_path), "--tune",
         "-b", "tvm-nnapi", "--trials", "4", "-s", f"ids={device.id}", "--wait",
         "--url", farm_api["url"], "--token", farm_api["token"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGEFARM_HOME": str(farm_api["home"]), "COLUMNS": "200",
             "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    killer = threading.Timer(120, process.kill)  # never hang the suite on a stuck CLI
    killer.start()
    try:
        assert process.stdout is not None
        queued = process.stdout.readline()  # the first line: the tuning is queued
        assert " (tvm-nnapi) queued at " in queued, queued + (process.stderr.read() or "")
        with farm_api["factory"]() as session:
            (tuning,) = session.scalars(select(Tuning)).all()
            assert tuning.status == TuningStatus.queued and tuning.backend == "tvm-nnapi"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        killer.cancel()
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert f"tuning {tuning.id}: cancelled; its records are kept" in stdout, (
        process.returncode,
        stdout,
        stderr,
    )
    with farm_api["factory"]() as session:
        row = session.get(Tuning, tuning.id)
        assert row is not None
        assert row.status == TuningStatus.cancelled and row.finished_at is not None
