"""Worker tests: real worker processes, the real PostgreSQL (a database of their own, created
fresh per session and migrated with ``alembic upgrade head``), the real Redis (db 5, flushed
per module) and emulated phones on real TCP ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command

from harness.devices.emulator import EmulatedPhone

from workerfarm import (
    DATABASE,
    DATABASE_URL,
    PG_ADMIN,
    REDIS_URL,
    Farm,
    WorkerProcess,
    alembic_config,
    empty_farm,
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    command.upgrade(alembic_config(DATABASE_URL), "head")
    yield DATABASE_URL
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


@pytest.fixture(scope="module")
def farm(database_url: str) -> Iterator[Farm]:
    """A farm with empty tables and an empty broker (Redis db 5), for one test module."""
    with empty_farm(database_url, REDIS_URL) as farm:
        yield farm


@pytest.fixture(scope="module")
def phones() -> Iterator[list[EmulatedPhone]]:
    """Two emulated phones (a MediaTek and a Qualcomm profile)."""
    started = [
        EmulatedPhone("dimensity-9200", thermal_time_constant_s=3600.0).start(),
        EmulatedPhone("snapdragon-8-gen-2", thermal_time_constant_s=3600.0).start(),
    ]
    yield started
    for phone in started:
        phone.stop()


@pytest.fixture(scope="module")
def start_worker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(farm, *args, program=None, **env)``: a worker process (``python -m
    workers worker ARGS``, or ``PROGRAM worker ARGS``), stopped at the module's end.
    Its log is printed when a test fails (pytest shows captured output)."""
    workers: list[WorkerProcess] = []
    directory = tmp_path_factory.mktemp("workers")

    def start(
        farm: Farm, *args: str, program: list[str] | None = None, **env: str
    ) -> WorkerProcess:
        log = Path(directory) / f"worker-{len(workers)}.log"
        worker = WorkerProcess(env=farm.worker_env(**env), log_path=log, args=list(args))
        if program is not None:
            worker.program = program
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()
        print(f"--- {worker.log_path} ---\n{worker.log()[-20000:]}")
