"""Farm tunings on real workers: the search on the ``tuning`` queue, its candidates measured on
two emulated phones of one class through their own queues and leases; the records in the
farm's database; a benchmark after it runs tuned; a tuning whose worker is SIGKILLed
resumes from its saved records on the next worker; one whose worker is stopped (SIGTERM) ends
its batch, goes back to the queue at once and is continued by the next."""

from __future__ import annotations

import os
import random
import re
import signal
from collections.abc import Callable, Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import select

from harness.db import RunStatus, Tuning, TuningSlice, TuningStatus
from harness.db.models import TuningRecord
from harness.devices.emulator import EmulatedPhone
from harness.farm.liveness import liveness
from harness.farm.selection import DeviceSelector
from harness.farm.tunings import TuningRequest, cancel_tuning, create_tunings

import testmodels
from workerfarm import Farm, WorkerProcess, register, wait_for


@pytest.fixture(scope="module")
def twins() -> Iterator[list[EmulatedPhone]]:
    """Two emulated phones of one profile: one device class, two phones to spread over."""
    started = [
        EmulatedPhone("dimensity-9200", thermal_time_constant_s=3600.0).start() for _ in range(2)
    ]
    yield started
    for phone in started:
        phone.stop()


@pytest.fixture(scope="module")
def twin_ids(farm: Farm, twins: list[EmulatedPhone]) -> list[int]:
    return [register(farm, f"tcp:{phone.serial}") for phone in twins]


def conv_relu_wide(seed: int) -> onnx.ModelProto:
    """conv_relu's twin with other shapes (16 channels on 12x12): a task of its own."""
    rng = np.random.default_rng(seed)
    conv = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    return testmodels.make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], **conv),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])],
        [numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w")],
        "conv_relu_wide",
    )


def conv3d_then_dense(seed: int) -> onnx.ModelProto:
    """conv3d+relu -> flatten -> dense: NNAPI takes the dense; the conv3d (no NNAPI operation)
    and the rank-5 relu and reshape stay on the CPU, the tasks of a tvm-nnapi tuning."""
    rng = np.random.default_rng(seed)
    return testmodels.make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 6, kernel_shape=[3, 3, 3]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Reshape", ["r", "shape"], ["f"]),
            helper.make_node("MatMul", ["f", "w2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array([1, 1024], dtype=np.int64), "shape"),
            numpy_helper.from_array(rng.standard_normal((1024, 8)).astype(np.float32), "w2"),
        ],
        "conv3d_then_dense",
    )


def _worker_args(twins: list[EmulatedPhone]) -> list[str]:
    return [*(a for p in twins for a in ("--device", f"tcp:{p.serial}")), "--beat"]


def _start(
    farm: Farm,
    twins: list[EmulatedPhone],
    twin_ids: list[int],
    start_worker: Callable[..., WorkerProcess],
) -> WorkerProcess:
    """A worker host with both phones, once the workers of its phones' queues and of the
    tuning queue are alive (a tuning selects only devices with a live worker). The previous
    worker host was stopped, so its rows say so and are not taken for alive."""
    worker = start_worker(farm, *_worker_args(twins))
    queues = [f"device.{i}" for i in twin_ids] + ["tuning"]

    def alive() -> bool:
        with farm.sessions() as session:
            report = liveness(session)
        return all((w := report.worker_for(q)) is not None and w.alive for q in queues)

    wait_for("the worker host's queues to be consumed", alive, timeout_s=90)
    return worker


@pytest.fixture(scope="module")
def hosts() -> list[WorkerProcess]:
    """The module's worker hosts, newest last: a test goes on with the last one if it is
    alive (starting one costs seconds), and start_worker stops them all at the end."""
    return []


def _host(
    farm: Farm,
    twins: list[EmulatedPhone],
    twin_ids: list[int],
    start_worker: Callable[..., WorkerProcess],
    hosts: list[WorkerProcess],
) -> WorkerProcess:
    last = hosts[-1] if hosts else None
    if last is None or last.proc is None or last.proc.poll() is not None:
        hosts.append(_start(farm, twins, twin_ids, start_worker))
    return hosts[-1]


def _submit(
    farm: Farm, model_id: int, ids: list[int], inputs: str, backend: str = "tvm-cpu", **budget: int
) -> int:
    with farm.sessions() as session:
        from harness.db import Model

        model = session.get(Model, model_id)
        assert model is not None
        request = TuningRequest(
            devices=DeviceSelector(ids=tuple(ids)), inputs=(inputs,), backend=backend, **budget
        )
        (tuning,) = create_tunings(request, model=model, session=session, submitted_by="tests")
        session.commit()
        tuning_id = tuning.id
    farm.client.send_task("edgefarm.tune", args=[tuning_id], queue="tuning")
    return tuning_id


def _tuning(farm: Farm, tuning_id: int) -> Tuning:
    with farm.sessions() as session:
        tuning = session.get(Tuning, tuning_id)
        assert tuning is not None
        return tuning


def _ended(farm: Farm, tuning_id: int, *, timeout_s: float) -> Tuning:
    return wait_for(
        f"tuning {tuning_id} to end",
        lambda: t if (t := _tuning(farm, tuning_id)).status.ended else None,
        timeout_s=timeout_s,
        poll_s=1.0,
    )


def _records(farm: Farm, device_class: str) -> list[TuningRecord]:
    with farm.sessions() as session:
        return list(
            session.scalars(select(TuningRecord).where(TuningRecord.device_class == device_class))
        )


@pytest.mark.timeout(720)
def test_a_farm_tuning_spreads_over_the_idle_phones_resumes_after_a_sigkill_or_a_stop(
    farm: Farm,
    twins: list[EmulatedPhone],
    twin_ids: list[int],
    start_worker: Callable[..., WorkerProcess],
    hosts: list[WorkerProcess],
) -> None:
    """One tuning does it all (each farm tuning costs a minute here): its batches of 4 go half
    to each phone; the worker host is SIGKILLed after the first saved batch and the next
    attempt continues from the records; that one's host is stopped as `edgefarm worker` is
    (SIGTERM) after its first batch: the tuning ends the batch, is queued again at once, and
    the third attempt finishes it; a benchmark of the class then runs tuned."""
    worker = _start(farm, twins, twin_ids, start_worker)
    seed = random.Random().randrange(1_000, 1_000_000)
    model_id = farm.add_model(conv_relu_wide(seed), f"conv-wide-{seed}")
    # Two threads: not TVM's default on this 2-core machine (half the cores); the phones'
    # runners time the candidates with the threads the tuning asks for.
    # A population of 16, not the default 64: each batch's search is shorter (and the worker
    # is seen to pass the tuning's own on).
    tuning_id = _submit(
        farm, model_id, twin_ids, "x:1x16x12x12", trials=20, batch=4, threads=2, population=16
    )

    def first_batch_saved(attempt: int) -> Callable[[], bool]:
        def check() -> bool:
            report = _tuning(farm, tuning_id).report  # until the attempt's own, the last one's
            return report.get("attempt") == attempt and report.get("batches", 0) >= 1

        return check

    wait_for("the first batch to be saved", first_batch_saved(1), timeout_s=300, poll_s=0.5)
    worker.kill()  # the whole worker host, its tuning process among them, without a word
    killed = _tuning(farm, tuning_id)
    assert killed.status == TuningStatus.running and killed.attempts == 1
    saved_before = killed.report["saved"]
    assert killed.report["phones"] == sorted(twin_ids)  # the first batch: both measured

    worker = _start(farm, twins, twin_ids, start_worker)  # the reaper sends it again
    wait_for("the second attempt's batch", first_batch_saved(2), timeout_s=300, poll_s=0.5)
    assert worker.proc is not None
    os.killpg(worker.proc.pid, signal.SIGTERM)  # as `edgefarm worker` is stopped
    assert worker.proc.wait(timeout=60) == 0
    assert "did not stop within" not in worker.log()  # nothing was SIGKILLed at the grace
    stopped = _tuning(farm, tuning_id)
    assert stopped.status == TuningStatus.queued and stopped.attempts == 2, stopped.error_message
    assert stopped.report["cancelled"] is False
    (task,) = stopped.report["tasks"]
    assert task["before"] >= saved_before and 0 < task["measured"] < 20 - task["before"], (
        stopped.report
    )
    saved_twice = task["before"] + task["measured"]
    with farm.client.connection_for_read() as connection:
        waiting = connection.default_channel.queue_declare("tuning", passive=True).message_count
    assert waiting >= 1  # sent again at once, not left for the reaper to find
    with farm.sessions() as session:  # no slice left for a phone to start
        left = session.scalars(select(TuningSlice.status).where(TuningSlice.tuning_id == tuning_id))
        assert not [s for s in left if not s.ended]
    for device_id in twin_ids:  # the slice a phone was measuring ended and freed it
        assert farm.device(device_id).tuning_slice_id is None

    worker = _start(farm, twins, twin_ids, start_worker)  # its message was waiting
    tuning = _ended(farm, tuning_id, timeout_s=420)
    assert tuning.status == TuningStatus.done, (tuning.error_message, worker.log()[-3000:])
    assert tuning.attempts == 3
    # It continued: the earlier attempts' batches counted, no candidate measured twice.
    (task,) = tuning.report["tasks"]
    assert task["before"] == saved_twice and task["before"] + task["measured"] == 20
    # The worker's log says how far the attempt was at each batch, of what it had left to do.
    batch_line = rf"tuning {tuning_id}: batch: \d+ candidates measured on farm:.*; \d+ saved \("
    assert re.search(
        batch_line + rf"\d+ of at most {20 - saved_twice} candidates, \d+\.\d a second",
        worker.log(),
    ), worker.log()[-3000:]
    assert tuning.report["phones"] == sorted(twin_ids)
    assert tuning.threads == 2 and tuning.report["threads"] == 2
    assert tuning.population == 16 and tuning.report["population"] == 16
    assert tuning.report["pool_threads"] == [min(2, os.cpu_count() or 1)]
    assert "2 threads" in tuning.report["measured_on"]
    records = _records(farm, tuning.device_class)
    assert len(records) == 20 and len({r.sha256 for r in records}) == 20
    assert {r.device for r in records} == {f"farm:{tuning.device_class}"}
    assert all(r.run_s is not None and r.run_s > 0 for r in records)
    # It ended with its confirmation, through the phones: the workload's four best records
    # timed again, and only they have a confirmed time.
    confirmation = tuning.report["confirmation"]
    assert (confirmation["workloads"], confirmation["records"]) == (1, 4), confirmation
    assert not confirmation["stopped"] and confirmation["failed"] == 0
    best = sorted(records, key=lambda r: (r.run_s, r.id))[:4]
    assert {r.id for r in records if r.confirmed_s is not None} == {r.id for r in best}
    # The phones were given back: both idle, no slice holds them.
    for device_id in twin_ids:
        device = farm.device(device_id)
        assert device.state == "idle" and device.tuning_slice_id is None

    # A benchmark on the class now runs tuned, with the farm's records.
    job_id = farm.submit(model_id, twin_ids[:1], ["tvm-cpu"], ["x:1x16x12x12"])
    (run,) = farm.wait_done(job_id, timeout_s=240)
    assert run.status == RunStatus.done, run.error_message
    (result,) = farm.results(job_id)
    provenance = result.document["provenance"]
    assert provenance["tuning"]["device_class"] == tuning.device_class
    assert provenance["tuning"]["trials"] == 20
    hosts.append(worker)  # alive: the next test goes on with it


@pytest.mark.timeout(600)
def test_a_farm_tuning_of_a_byoc_backend_tunes_its_cpu_part_and_a_cancel_ends_it_after_the_batch(
    farm: Farm,
    twins: list[EmulatedPhone],
    twin_ids: list[int],
    start_worker: Callable[..., WorkerProcess],
    hosts: list[WorkerProcess],
) -> None:
    """tvm-nnapi on the twins' class: the search tunes what the partition leaves on the CPU
    (the conv3d), not the offloaded dense; cancelled (as POST .../cancel does) after its first
    saved batch, it ends within a batch, keeps its records and gives both phones back."""
    worker = _host(farm, twins, twin_ids, start_worker, hosts)
    seed = random.Random().randrange(1_000, 1_000_000)
    model_id = farm.add_model(conv3d_then_dense(seed), f"conv3d-{seed}")
    tuning_id = _submit(farm, model_id, twin_ids, "x:1x4x4x8x8", "tvm-nnapi", trials=64, batch=4)
    device_class = _tuning(farm, tuning_id).device_class
    records_before = len(_records(farm, device_class))  # the first test's, run alone none

    def saved_batches() -> int:
        return int(_tuning(farm, tuning_id).report.get("batches", 0))

    # The reshape's one schedule is the first batch, the conv3d's first 4 the second.
    wait_for("a conv3d batch to be saved", lambda: saved_batches() >= 2, timeout_s=300)
    with farm.sessions() as session:
        assert cancel_tuning(session, tuning_id)
        session.commit()
    at_cancel = saved_batches()
    assert _tuning(farm, tuning_id).status == TuningStatus.cancelled  # at once, for the API
    # The search sees it after the batch it is on and writes the report of what it did.
    tuning = wait_for(
        "the cancelled search to stop",
        lambda: t if (t := _tuning(farm, tuning_id)).report.get("cancelled") else None,
        timeout_s=120,
        poll_s=0.5,
    )
    assert tuning.status == TuningStatus.cancelled, (tuning.error_message, worker.log()[-3000:])
    report = tuning.report
    assert report["batches"] <= at_cancel + 1, report  # at most the batch it was on
    # The CPU part's tasks: the conv3d's, not the dense NNAPI runs.
    names = [t["name"] for t in report["tasks"]]
    assert any("conv3d" in n for n in names) and not any("matmul" in n for n in names), names
    measured = sum(t["measured"] for t in report["tasks"])
    assert 5 <= measured < 64  # measured, and stopped well short of its budget
    records = len(_records(farm, device_class)) - records_before
    assert records == report["saved"] == measured  # nothing recorded for the unrun candidates
    assert report["failed"] == 0
    assert report["confirmation"] is None  # a cancelled tuning confirms nothing
    with farm.sessions() as session:
        assert not cancel_tuning(session, tuning_id)  # an ended tuning stays as it ended
        left = session.scalars(select(TuningSlice).where(TuningSlice.tuning_id == tuning_id))
        assert list(left) == []
    for device_id in twin_ids:
        device = farm.device(device_id)
        assert device.state == "idle" and device.tuning_slice_id is None
