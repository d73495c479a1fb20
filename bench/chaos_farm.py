"""The farm a chaos soak runs (bench/chaos.py): a private Redis, a PostgreSQL database of its
own, and the farm started the way ``edgefarm up`` starts it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from sqlalchemy import Engine

from harness.client import FarmClient
from harness.config import get_settings
from harness.db import make_engine
from harness.devices.emulator import EmulatedPhone
from harness.embedded import EmbeddedFarm, ensure_token, profiles_for

from chaos_config import PG_ADMIN, SOAK_ENV, SoakConfig, free_port

# -- the farm ------------------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of our own on a free port, with nothing persisted: restarting it
    loses every message, as a broker restarted empty does. It dies with this process
    (harness.supervise asks the kernel for that)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        with open(self.directory / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.supervise", str(os.getpid()), "--", *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: nothing saved, nothing handed over
            self.proc.wait(timeout=10)

    def restart(self, down_s: float) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()


@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) variables for the farm, and put everything back after."""
    saved = dict(os.environ)
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database of our own (``edgefarm_chaos_<random>``), dropped afterwards."""
    name = f"edgefarm_chaos_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class SoakFarm:
    """A running farm as the soak sees it."""

    kind: str
    home: Path
    embedded: EmbeddedFarm
    client: FarmClient
    engine: Engine
    redis: PrivateRedis | None
    phones: dict[int, EmulatedPhone]  # by device id
    settings: dict[str, str]

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "worker.log"

    def tick(self) -> None:
        """Let the farm's supervisor restart what died (``edgefarm up`` does this in its loop)."""
        self.embedded.check_children()

    def phone_device(self, port: int) -> int | None:
        return next((d for d, p in self.phones.items() if p.port == port), None)


@contextmanager
def running_farm(kind: str, config: SoakConfig, workdir: Path) -> Iterator[SoakFarm]:
    """Start the ``kind`` farm under ``workdir``; stop it and remove what it made after."""
    home = workdir / kind
    home.mkdir(parents=True)
    env: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("EDGEFARM_")
    }  # nothing of the caller's farm leaks in
    env.update({"EDGEFARM_HOME": str(home), **SOAK_ENV, **config.env})
    if config.cache_dir is not None:
        env["EDGEFARM_CACHE_DIR"] = str(config.cache_dir)
    with contextlib.ExitStack() as stack:
        private_redis: PrivateRedis | None = None
        if kind == "server":
            env["EDGEFARM_DATABASE_URL"] = stack.enter_context(postgres_database())
            private_redis = PrivateRedis(home)
            stack.callback(private_redis.kill)
            private_redis.start()
            env["EDGEFARM_BROKER_URL"] = private_redis.url
        stack.enter_context(environment(env))
        farm = EmbeddedFarm(
            port=free_port(), profiles=profiles_for(config.phones), with_local_device=False
        )
        # The phones' sandboxes (runtime bundles) go once the farm is stopped; logs stay.
        stack.callback(shutil.rmtree, home / "phones", ignore_errors=True)
        stack.callback(farm.stop)
        farm.start()
        farm.wait_ready(timeout_s=300)
        client = FarmClient(farm.url, ensure_token(), timeout_s=30)
        stack.callback(client.close)
        engine = make_engine()
        stack.callback(engine.dispose)
        by_address = {d["address"]: d["id"] for d in client.devices()}
        phones = {by_address[f"tcp:127.0.0.1:{p.port}"]: p for p in farm.phones}
        shown = {k: v for k, v in env.items() if v is not None and k != "EDGEFARM_HOME"}
        yield SoakFarm(kind, home, farm, client, engine, private_redis, phones, shown)
