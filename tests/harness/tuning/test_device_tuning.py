"""Tuning measured on an emulated phone: the native runner's kernel mode times candidate
libraries pushed to the phone (a bad one fails alone), and ``edgefarm tune`` killed with
SIGKILL after its first saved batch resumes from the database without redoing those trials."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_search import conv_relu

from harness.devices import open_device
from harness.devices.emulator import EmulatedPhone
from harness.tuning.device import DeviceKernelTimer, parse_kernel_lines

import testmodels

ROOT = Path(__file__).resolve().parents[3]


def test_the_phone_times_a_batch_and_a_bad_library_fails_alone(tmp_path: Path) -> None:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from harness.tuning.device import arg_text
    from harness.tuning.search import tasks_of

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    [task] = tasks_of(from_onnx(conv_relu(), keep_params_in_input=False), target)
    kernel = task.dispatched[0]
    good = tmp_path / "good.so"
    tvm.compile(kernel, target=target).export_library(str(good))
    not_a_library = tmp_path / "bad.so"
    not_a_library.write_text("not a shared library\n")
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    args = [arg_text(a) for a in ArgInfo.from_prim_func(kernel["main"])]
    assert args[0] == "float32:1x8x16x16"

    with EmulatedPhone("pixel-3a") as phone:
        device = open_device(f"tcp:{phone.serial}")
        try:
            # Two threads: not TVM's default on a 2-core x86-64 machine (half the cores).
            timer = DeviceKernelTimer(
                device, "host", number=2, min_repeat_ms=5, repeat=2, threads=2
            )
            # A wrong shape for the good kernel is refused by the kernel's own checks.
            wrong = ["float32:1x8x16x16", "float32:1x1x1x1", "float32:1x8x16x16"]
            timings = timer.time([(good, args), (not_a_library, args), (good, wrong)])
            # Every run directory is removed after its batch.
            leftover = device.shell(["ls", f"{device.work_root}/runs"], timeout_s=30).stdout
        finally:
            device.close()
    ok, bad, mismatched = timings
    assert ok.error is None and len(ok.costs_s) == 2 and all(0 < c < 0.5 for c in ok.costs_s)
    assert bad.error is not None and bad.error.startswith("load:")
    assert mismatched.error is not None and mismatched.error.startswith("run:")
    assert leftover.strip() == ""
    assert timer.batches == 1 and timer.kernels == 3
    # The runner's summary: TVM's pool had what was asked (at most the phone's cores).
    assert timer.pool_threads == min(2, os.cpu_count() or 1)


def test_kernel_lines_without_a_summary_say_the_runner_died() -> None:
    out = '{"module":"k0.so","status":"ok","costs_s":[1e-05]}\nSegmentation fault\n'
    found, finished, threads = parse_kernel_lines(out)
    assert not finished and found["k0.so"].costs_s == (1e-05,) and threads is None


def _records(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        try:
            return list(conn.execute("SELECT id, record FROM tuning_records ORDER BY id"))
        except sqlite3.OperationalError:  # not migrated yet
            return []


def _tune(model: Path, phone: str, db: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "tune",
        str(model),
        "--device",
        phone,
        "--trials",
        "8",
        "--batch",
        "4",
        "--population",
        "32",
        "--seed",
        "5",
        "--db",
        f"sqlite:///{db}",
    ]


@pytest.mark.timeout(600)
def test_a_tuning_killed_after_a_batch_resumes_without_redoing_it(tmp_path: Path) -> None:
    model = testmodels.save(conv_relu(), tmp_path, "conv")
    db = tmp_path / "farm.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with EmulatedPhone("pixel-3a") as phone:
        address = f"tcp:{phone.serial}"
        proc = subprocess.Popen(
            _tune(model, address, db),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while len(_records(db)) < 4:
                assert proc.poll() is None, f"the tuning ended early: {proc.communicate()[0]}"
                assert time.monotonic() < deadline, "no batch saved in 300 s"
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        first = _records(db)
        assert len(first) == 4, "killed after the first batch, before the second"

        again = subprocess.run(
            _tune(model, address, db), env=env, capture_output=True, text=True, timeout=400
        )
    assert again.returncode == 0, again.stdout + again.stderr
    row = next(line for line in again.stdout.splitlines() if "fused_conv2d_relu" in line)
    assert [c.strip() for c in row.strip("│ ").split("│")][1:] == ["4", "4"]  # before, now
    assert f"measured on {address}" in again.stdout
    # Then the workload's four fastest were timed again on the phone, side by side.
    assert "confirmed: 4 record(s) of 1 workload(s) timed again, 3 rounds" in again.stdout
    final = _records(db)
    assert final[:4] == first and len(final) == 8
    # No candidate measured twice: the traces of the eight records differ.
    traces = {json.dumps(json.loads(record)[0]) for _, record in final}
    assert len(traces) == 8

    # bench/retime_records.py's short version: the store's best records timed again here.
    script = str(ROOT / "bench" / "retime_records.py")
    options = ["--device", "local", "--rounds", "1", "--workloads", "1", "--early", "4"]
    probe = subprocess.run(
        [sys.executable, script, "--db", f"sqlite:///{db}", *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    rows = [line.split() for line in probe.stdout.splitlines() if line.split()[:1] == ["1"]]
    assert len(rows) == 2, probe.stdout  # the best of the first 4, and the best of all 8
    assert all(float(row[-2]) > 0 and float(row[-1]) > 0 for row in rows), probe.stdout


def _edgefarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


def test_tune_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    model = testmodels.save(conv_relu(), tmp_path, "conv")
    proc = _edgefarm(
        "tune", str(model), "-d", "local", "-b", "tvm-nnapi", "-o", "tvm-nnapi.partition=cost"
    )
    assert proc.returncode == 2 and "tune with partition: all" in proc.stderr
    proc = _edgefarm("tune", str(model), "-d", "local", "--backend", "ort")
    assert proc.returncode == 2 and "tvm-cpu, tvm-nnapi, tvm-neuron can be tuned" in proc.stderr
    proc = _edgefarm("tune", str(model), "-d", "local", "--trials", "4", "--minutes", "1")
    assert proc.returncode == 2 and "--trials or --minutes, not both" in proc.stderr
    proc = _edgefarm("tune", str(tmp_path / "missing.onnx"), "-d", "local")
    assert proc.returncode == 2 and "no such model file" in proc.stderr
    # Bad numbers are usage errors, found before the device is opened or TVM imported.
    for option, value, message in (
        ("--trials", "0", "--trials (per task) must be at least 1, not 0"),
        ("--minutes", "-1", "--minutes must be a positive number, not -1.0"),
        ("--batch", "0", "--batch (candidates per round trip) is at least 1, not 0"),
        ("--population", "0", "--population must be at least 1, not 0"),
        ("--confirm", "-1", "--confirm (records per workload) is 0 or more, not -1"),
        ("--confirm-rounds", "0", "--confirm-rounds is at least 1, not 0"),
    ):
        proc = _edgefarm("tune", str(model), "-d", "tcp:127.0.0.1:1", option, value)
        assert proc.returncode == 2 and message in proc.stderr, (option, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = _edgefarm("tune", "--help")
    assert "default: 64" in proc.stdout.replace("[", "").replace("]", "")


def test_a_time_budget_stops_after_the_batch_that_spends_it(tmp_path: Path) -> None:
    from harness.db import make_engine, make_session_factory
    from harness.db.migrate import upgrade
    from harness.tuning.session import tune_model

    model = testmodels.save(conv_relu(), tmp_path, "conv")
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    upgrade(url)
    device = open_device("local")
    try:
        report = tune_model(
            model,
            device,
            make_session_factory(make_engine(url)),
            minutes=0.001,  # spent by the first batch
            batch=4,
            population=32,
            seed=1,
        )
    finally:
        device.close()
    assert report.stopped_by_deadline and report.batches == 1
    assert [(t.before, t.measured) for t in report.tasks] == [(0, 4)]
    assert report.saved == 4 and len(_records(tmp_path / "farm.db")) == 4
    assert report.measured_on.startswith("local ")


def test_a_task_with_a_fixed_space_is_measured_once_ever(tmp_path: Path) -> None:
    """A reshape has one schedule and no decision: MetaSchedule would measure it again on
    every tuning that asks for more trials. Asked for 4, it is measured once; a second tuning
    measures nothing, and no record is added."""
    from onnx import TensorProto, helper

    from harness.db import make_engine, make_session_factory
    from harness.db.migrate import upgrade
    from harness.tuning.session import tune_model

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 512])
    model = testmodels.save(
        testmodels.make_model(
            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])],
            [shape],
            "reshape",
        ),
        tmp_path,
        "reshape",
    )
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    device = open_device("local")
    try:
        first = tune_model(model, device, sessions, trials=4, batch=4, population=16, seed=1)
        again = tune_model(model, device, sessions, trials=4, batch=4, population=16, seed=2)
    finally:
        device.close()
    assert [(t.before, t.measured) for t in first.tasks] == [(0, 1)]
    assert [(t.before, t.measured) for t in again.tasks] == [(1, 0)]
    assert again.saved == 0 and again.batches == 0
    assert len(_records(tmp_path / "farm.db")) == 1
