"""The pieces of a farm the worker tests put together: a real worker process (``python -m
workers worker``), a Celery client that enqueues exactly as the API does, and the rows a job
is made of, written with SQLAlchemy."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import onnx
import redis
from alembic.config import Config
from celery import Celery
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from harness.config import get_settings
from harness.db import (
    Artifact,
    Device,
    Job,
    JobStatus,
    Model,
    Result,
    Run,
    make_engine,
    make_session_factory,
)
from harness.examples.load import two_conv_net
from harness.farm.registry import register_device

ROOT = Path(__file__).resolve().parents[2]

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# A database of this test session's own: two sessions on one machine never drop each other's.
DATABASE = f"edgefarm_workers_test_{os.getpid()}"
DATABASE_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/5"

TABLES = (
    "results",
    "runs",
    "artifacts",
    "jobs",
    "devices",
    "models",
    "api_tokens",
    "workers",
    "tuning_records",
    "tuning_workloads",
    "tuning_slices",
    "tunings",
)

T = TypeVar("T")

# A protocol short enough for tests, long enough to be a real measurement.
FAST = {
    "warmup": 2,
    "min_iterations": 10,
    "min_seconds": 0.05,
    "max_seconds": 5.0,
    "seed": 0,
    "profile": False,
}

# Short timeouts for the worker processes, through their settings (EDGEFARM_*).
WORKER_ENV = {
    "EDGEFARM_LEASE_TIMEOUT_S": "8",
    "EDGEFARM_REAP_INTERVAL_S": "2",
    "EDGEFARM_QUEUED_TIMEOUT_S": "30",
    "EDGEFARM_BUSY_RETRY_S": "1",
    "EDGEFARM_ADB_TIMEOUT_S": "5",
    "EDGEFARM_MAX_RUN_ATTEMPTS": "3",
    "EDGEFARM_RETRY_BACKOFF_MAX_S": "4",
}


def slow_convnet(seed: int = 0) -> onnx.ModelProto:
    """The farm's load model on a 128x128 image: milliseconds per inference, so that a
    measurement lasts its ``min_seconds``. Input ``image:1x3x128x128``."""
    return two_conv_net(seed, 128, "slow_convnet")


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, poll_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


@dataclass
class WorkerProcess:
    """``python -m workers worker`` in its own process group, logging to a file."""

    env: dict[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    # ``edgefarm worker`` execs this very command; tests may start either.
    program: list[str] = field(default_factory=lambda: [sys.executable, "-m", "workers"])
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout_s: float = 60.0) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(
            [*self.program, "worker", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )
        log.close()
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        wait_for(
            f"the worker to be ready (log: {self.log_path})",
            lambda: self._ready(start),
            ready_timeout_s,
        )
        return self

    def _ready(self, offset: int) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the worker exited ({self.proc.returncode}):\n{self.log()}")
        return " ready." in self.log_path.read_text(errors="replace")[offset:]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker and its pool die without a word."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


class Farm:
    """The database and broker of a farm under test, seen from the API's side."""

    def __init__(self, database_url: str, broker_url: str) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.engine: Engine = make_engine(database_url)
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self.client = Celery("edgefarm-test-client", broker=broker_url)
        self.client.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()

    def worker_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(WORKER_ENV)
        env["EDGEFARM_DATABASE_URL"] = self.database_url
        env["EDGEFARM_BROKER_URL"] = self.broker_url
        env.update(extra)
        return env

    # -- rows ----------------------------------------------------------------------------------

    def add_model(self, model: onnx.ModelProto, name: str) -> int:
        """Store the model as the API does (content-addressed file, Model row)."""
        data = model.SerializeToString()
        sha = hashlib.sha256(data).hexdigest()
        path = get_settings().models_path / f"{sha}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        inputs = [
            {
                "name": i.name,
                "shape": [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim],
                "dtype": "float32",
            }
            for i in model.graph.input
        ]
        with self.sessions() as session:
            row = session.scalar(select(Model).where(Model.sha256 == sha))
            if row is None:
                row = Model(
                    sha256=sha, name=name, format="onnx", size_bytes=len(data), input_spec=inputs
                )
                session.add(row)
                session.commit()
            return row.id

    def device_id(self, address: str) -> int:
        with self.sessions() as session:
            device_id = session.scalar(select(Device.id).where(Device.address == address))
            assert device_id is not None, f"{address} is not registered"
            return device_id

    def create_job(
        self,
        model_id: int,
        device_ids: Sequence[int],
        backends: Sequence[str],
        inputs: Sequence[str],
        **settings: Any,
    ) -> int:
        """A queued Job and its Runs, committed (as the API would), not yet enqueued."""
        job_settings: dict[str, Any] = {**FAST, **settings, "inputs": list(inputs)}
        job_settings.setdefault("options", {})
        with self.sessions() as session:
            job = Job(submitted_by="tests", model_id=model_id, settings=job_settings)
            session.add(job)
            for device_id in device_ids:
                for backend in backends:
                    job.runs.append(Run(device_id=device_id, backend=backend))
            session.commit()
            return job.id

    def enqueue(self, job_id: int) -> None:
        """Exactly what the API sends after its commit."""
        self.client.send_task("edgefarm.start_job", args=[job_id], queue="compile")

    def submit(self, *args: Any, **kwargs: Any) -> int:
        job_id = self.create_job(*args, **kwargs)
        self.enqueue(job_id)
        return job_id

    # -- reading -------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def runs(self, job_id: int) -> list[Run]:
        with self.sessions() as session:
            return list(session.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id)))

    def run(self, run_id: int) -> Run:
        with self.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
            return run

    def results(self, job_id: int) -> list[Result]:
        with self.sessions() as session:
            return list(
                session.scalars(select(Result).where(Result.job_id == job_id).order_by(Result.id))
            )

    def device(self, device_id: int) -> Device:
        with self.sessions() as session:
            device = session.get(Device, device_id)
            assert device is not None
            return device

    def artifacts(self, model_id: int) -> list[Artifact]:
        with self.sessions() as session:
            return list(session.scalars(select(Artifact).where(Artifact.model_id == model_id)))

    def wait_done(self, job_id: int, timeout_s: float = 120.0) -> list[Run]:
        wait_for(
            f"job {job_id} to be done",
            lambda: self.job(job_id).status == JobStatus.done,
            timeout_s,
        )
        return self.runs(job_id)


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


@contextmanager
def empty_farm(database_url: str, broker_url: str) -> Iterator[Farm]:
    """A farm on the test database, its tables emptied, and the (Redis) broker flushed."""
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()
    farm = Farm(database_url, broker_url)
    with farm.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    try:
        yield farm
    finally:
        farm.close()
        with contextlib.suppress(redis.ConnectionError):
            broker.flushdb()
        broker.close()


def register(farm: Farm, address: str) -> int:
    """Register a device as a worker host does (the worker registers it again at start)."""
    factory = make_session_factory(farm.engine)
    with factory() as session:
        device = register_device(address, session=session, worker="tests")
        session.commit()
        return device.id
