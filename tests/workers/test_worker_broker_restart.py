"""The broker restarts empty while jobs are queued: the reaper sends what was lost again.

A private ``redis-server`` (the machine's own on 6379 is shared with others, never restarted
here) is killed with SIGKILL while it holds a job's start message and another job's run
message, and started again empty on the same port.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from harness.db import RunStatus
from harness.devices.emulator import EmulatedPhone

import testmodels
from workerfarm import Farm, WorkerProcess, empty_farm, register, slow_convnet, wait_for

INPUTS = ["input:1x3x32x32"]
IMAGE = ["image:1x3x128x128"]
BUSY = {"min_seconds": 3.0, "max_seconds": 8.0}  # a few seconds of the phone's time per run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        wait_for("the private redis to answer", lambda: self._ping(client), 10)
        client.close()

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: nothing saved, nothing handed over
        self.proc.wait(timeout=10)

    def queue_lengths(self) -> dict[str, int]:
        client = redis.Redis.from_url(self.url)
        try:
            return {
                key.decode(): int(client.llen(key))
                for key in client.keys("*")
                if client.type(key) == b"list"
            }
        finally:
            client.close()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(_free_port())
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


@pytest.fixture(scope="module")
def farm(database_url: str, private_redis: PrivateRedis) -> Iterator[Farm]:
    with empty_farm(database_url, private_redis.url) as farm:
        yield farm


def test_runs_lost_with_the_broker_are_sent_again_and_all_end(
    farm: Farm,
    private_redis: PrivateRedis,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    phone = phones[0]
    device_id = register(farm, f"tcp:{phone.serial}")
    model_id = farm.add_model(testmodels.mobilenet_like(), "mnet")

    # Job B gets started by a worker that consumes only ``compile``: its run's message waits
    # in the phone's queue, nobody consuming it.
    compiler = start_worker(farm)
    job_b = farm.submit(model_id, [device_id], ["tvm-cpu"], INPUTS)
    # The run's message itself, not only enqueued_at: the row is committed before the send.
    wait_for(
        "job B's run to be sent to its phone",
        lambda: (
            farm.runs(job_b)[0].enqueued_at is not None
            and private_redis.queue_lengths().get(f"device.{device_id}") == 1
        ),
        60,
    )
    compiler.stop()
    # Job A is submitted while no worker runs: its start message waits in ``compile``.
    job_a = farm.submit(model_id, [device_id], ["tvm-cpu"], INPUTS)
    assert private_redis.queue_lengths() == {"compile": 1, f"device.{device_id}": 1}

    private_redis.kill()
    private_redis.start()
    assert private_redis.queue_lengths() == {}

    worker = start_worker(
        farm, "--device", f"tcp:{phone.serial}", "--beat", EDGEFARM_QUEUED_TIMEOUT_S="3"
    )
    for job_id in (job_a, job_b):
        (run,) = farm.wait_done(job_id, timeout_s=90)
        assert run.status == RunStatus.done and run.attempts == 1
        (result,) = farm.results(job_id)
        assert result.status == "ok" and result.accuracy_passed is True
    log = worker.log()
    assert f"jobs [{job_a}] were never started (start_job lost)" in log
    assert f"runs [{farm.runs(job_b)[0].id}] lost their messages" in log
    worker.stop()


def test_a_run_lost_with_the_broker_is_sent_again_while_its_phone_stays_busy(
    farm: Farm,
    private_redis: PrivateRedis,
    phones: list[EmulatedPhone],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Found by the chaos soak (bench/chaos.py): a run whose message Redis lost waited until
    its phone had sat idle for the queued timeout — 4.5 minutes there, and for ever on a farm
    that keeps the phone busy. A run sent after it and already taken shows it is gone."""
    phone = phones[1]
    device_id = register(farm, f"tcp:{phone.serial}")
    model_id = farm.add_model(slow_convnet(), "slow")
    worker = start_worker(
        farm, "--device", f"tcp:{phone.serial}", "--beat", EDGEFARM_QUEUED_TIMEOUT_S="10"
    )

    def submit() -> int:
        return farm.submit(model_id, [device_id], ["tvm-cpu"], IMAGE, **BUSY)

    first = submit()
    wait_for("the phone to measure", lambda: farm.runs(first)[0].status == RunStatus.running, 90)
    lost = submit()  # waits behind the first in the phone's queue ...
    wait_for(
        "its message to be in the phone's queue",
        lambda: private_redis.queue_lengths().get(f"device.{device_id}") == 1,
        30,
    )
    private_redis.kill()  # ... and is lost with the broker
    private_redis.start()
    (lost_run,) = farm.runs(lost)

    # Later jobs keep the phone busy: one waiting whenever the one before it starts.
    later: list[int] = []
    deadline = time.monotonic() + 90
    while farm.run(lost_run.id).status != RunStatus.done:
        assert time.monotonic() < deadline, "the lost run was not sent again"
        if not later or farm.runs(later[-1])[0].status != RunStatus.queued:
            later.append(submit())
        time.sleep(0.5)
    assert f"runs [{lost_run.id}] lost their messages" in worker.log()
    assert farm.run(lost_run.id).attempts == 1
    for job_id in [first, lost, *later]:
        (run,) = farm.wait_done(job_id, timeout_s=90)
        assert run.status == RunStatus.done, run.error_message
    worker.stop()
