"""Chaos soak of the farm: a stream of benchmarks on four emulated phones while the farm's
processes, phones and broker are killed at random; then what became of every run.

For each farm (``embedded``: SQLite + kombu's SQLAlchemy transport in a temporary
EDGEFARM_HOME; ``server``: a fresh PostgreSQL database of its own on 127.0.0.1:5432 and a
private ``redis-server`` on a free port) the farm is started the way ``edgefarm up`` starts it
(:class:`harness.embedded.EmbeddedFarm`: the API under uvicorn and ``python -m workers worker
... --beat`` as supervised children, the phones in this process), pointed at that database
and broker. Then:

1. warm-up: every base model on every phone with every backend (compiles, runtime bundles);
2. a fault-free phase of ``--minutes``: submissions keep ``BACKLOG`` runs waiting per phone;
   the farm drains;
3. the chaos phase of the same length: the same stream, and every ``--fault-every`` seconds
   (x0.5 to x1.5) one fault, dealt from a shuffled deck of every kind so that each comes up
   as often: SIGKILL of a phone's Celery worker, of the compile worker, of beat or of the
   API (pids from ``/healthz``); a phone's connection dropped mid-push
   (``kill_after_bytes``); a phone dropped, or stopped and started again, while its runner
   runs (seen in the worker log); Redis killed and started again empty (server farm). Then
   submissions stop and the farm drains (bounded).

What is reported, per farm and phase, and how it is known:

* submitted: the runs in the database (so a job the API committed before it was killed counts
  even though its answer never arrived);
* ended exactly once: the run ended, has exactly one result, whose status agrees with the
  run's, its end was logged exactly once, and its ended state never changed afterwards;
* lost: not ended after the drain;
* doubled: two results for a run, two end lines for one run in the worker log (``run N (...)
  done|failed`` from ``workers.lifecycle.end_run``, or the reaper's own), or an ended run seen
  to change (status, finish time, attempts or result) by the monitor, which reads every run
  twice a second;
* the longest wait after a worker died: from the SIGKILL to the next attempt of each run it
  held (``attempts`` incremented) or that run's end, from the same monitor;
* throughput: runs ended ``done`` per minute within each phase's window.

Usage: python bench/chaos.py [--farm embedded|server|both] [--minutes M] [--phones 4]
[--fault-every S] [--seed N] [--json PATH] [--set EDGEFARM_NAME=VALUE ...] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import psycopg
import redis
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import Engine, select

from harness.client import FarmClient, FarmError
from harness.config import get_settings
from harness.db import Result, Run, RunStatus, make_engine
from harness.devices.emulator import EmulatedPhone
from harness.embedded import EmbeddedFarm, ensure_token, profiles_for
from harness.errors import EdgefarmError

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

FARMS = ("embedded", "server")

KILL_PHONE_WORKER = "kill-phone-worker"
KILL_COMPILE_WORKER = "kill-compile-worker"
KILL_BEAT = "kill-beat"
KILL_API = "kill-api"
DROP_MID_PUSH = "phone-drop-mid-push"
DROP_MID_RUN = "phone-drop-mid-run"
RESTART_MID_RUN = "phone-restart-mid-run"
REDIS_RESTART = "redis-restart"
FAULT_KINDS = (
    KILL_PHONE_WORKER,
    KILL_COMPILE_WORKER,
    KILL_BEAT,
    KILL_API,
    DROP_MID_PUSH,
    DROP_MID_RUN,
    RESTART_MID_RUN,
    REDIS_RESTART,
)
# Faults after which a run waits for the farm to notice that its worker died.
WORKER_DEATHS = (KILL_PHONE_WORKER, KILL_COMPILE_WORKER)

# A run of a few seconds: long enough to be hit while its runner runs.
PROTOCOL: dict[str, Any] = {
    "warmup": 2,
    "min_iterations": 10,
    "min_seconds": 1.0,
    "max_seconds": 5.0,
    "seed": 0,
}
BACKENDS = ("tvm-cpu", "tvm-nnapi", "tvm-neuron")
BACKLOG = 2  # runs kept waiting per phone while submitting

# Every soak runs its farm with these (the caller's --set / env come on top).
SOAK_ENV = {
    # The soak kills each farm process far more often than the supervisor's give-up limit
    # allows (that limit is tested in tests/workers/test_worker_healing.py); the backoff stays.
    "EDGEFARM_WORKER_RESTART_LIMIT": "1000",
    # Back-to-back runs heat the emulated phones; the soak measures the farm, not cool-downs.
    "EDGEFARM_COOLDOWN_MAX_TEMP_C": "200",
}

# What the worker log says when a run ends (workers.lifecycle.end_run; the reaper's two ends
# in workers.tasks.maintenance), when an attempt starts, and when the supervisor restarts.
END_LINE = re.compile(r"\brun (\d+) \((\S+) on (\S+)\) (done|failed)\b")
REAPER_END_LINE = re.compile(
    r"\brun (\d+): \S+: (?:the worker running it died|no live worker for)\b"
)
ATTEMPT_LINE = re.compile(r"\brun (\d+): attempt (\d+) on device (\d+)\b")
SUPERSEDED_LINE = re.compile(r"\brun (\d+): attempt (\d+) was superseded\b")
RESTART_LINE = re.compile(r"\b(\S+@\S+|api|worker) (.+?); restarting it in\b")
RUNNING_LINE = re.compile(r"\brun: running (\S+) on tcp:127\.0\.0\.1:(\d+)\b")


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- models --------------------------------------------------------------------------------------


def conv_model(seed: int, size: int = 64) -> onnx.ModelProto:
    """Two 3x3 convolutions on a ``size``x``size`` image: a fraction of a millisecond to a few
    per inference, so that a run lasts its ``min_seconds``. Input ``image:1x3xSxS``."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    inits = [
        numpy_helper.from_array(weights(16, 3, 3, 3), "w1"),
        numpy_helper.from_array(weights(16, 16, 3, 3), "w2"),
        numpy_helper.from_array(weights(16, 10), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"chaos_conv_{seed}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def base_models() -> dict[str, onnx.ModelProto]:
    return {"conv128": conv_model(0, 128), "conv64": conv_model(1, 64)}


# -- configuration -------------------------------------------------------------------------------


@dataclass
class SoakConfig:
    """One soak of one farm."""

    minutes: float = 5.0  # the length of the chaos phase, and of the fault-free one
    fault_free: bool = True  # measure a fault-free phase first (for the throughput)
    phones: int = 4
    fault_every_s: float = 10.0
    seed: int = 0
    drain_s: float = 600.0
    warmup_s: float = 1200.0
    backends: tuple[str, ...] = BACKENDS
    models: tuple[str, ...] = ("conv128", "conv64")
    fresh_model_every_s: float | None = 60.0  # a new model (a compile) this often
    backlog: int = BACKLOG
    kinds: tuple[str, ...] | None = None  # default: every kind the farm supports
    env: dict[str, str] = field(default_factory=dict)  # EDGEFARM_* for the farm
    cache_dir: Path | None = None  # artifact and runner cache, shared between soaks

    def farm_kinds(self, farm: str) -> tuple[str, ...]:
        kinds = self.kinds or FAULT_KINDS
        return tuple(k for k in kinds if k != REDIS_RESTART or farm == "server")


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


# -- watching the database -----------------------------------------------------------------------


@dataclass
class Wait:
    """A run held by a worker that was killed, until its next attempt starts or it ends."""

    fault: str
    run_id: int
    attempts: int
    since: float  # monotonic time of the kill
    waited_s: float | None = None
    outcome: str | None = None


class Monitor(threading.Thread):
    """Reads every run twice a second: resolves waits, and remembers each run's ended state
    to notice one that changes afterwards (a run ended twice)."""

    def __init__(self, engine: Engine, interval_s: float = 0.5) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.engine = engine
        self.interval_s = interval_s
        self.waits: list[Wait] = []
        self.ended: dict[int, tuple[Any, ...]] = {}
        self.changed: dict[int, list[tuple[Any, ...]]] = {}
        self.errors = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def add(self, waits: list[Wait]) -> None:
        """Wait for these runs; one already waited for since an earlier kill is left out
        (its phone's worker killed again before the run was noticed)."""
        with self._lock:
            pending = {(w.run_id, w.attempts) for w in self.waits if w.waited_s is None}
            self.waits.extend(w for w in waits if (w.run_id, w.attempts) not in pending)

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            self.poll()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        self.poll()

    def poll(self) -> None:
        try:
            with self.engine.connect() as conn:
                runs = conn.execute(select(Run.id, Run.status, Run.attempts, Run.finished_at)).all()
                results = {
                    r.run_id: (r.id, r.status)
                    for r in conn.execute(select(Result.run_id, Result.id, Result.status))
                }
        except Exception:  # a busy SQLite file: the next poll reads again
            self.errors += 1
            return
        now = time.monotonic()
        by_id = {}
        for run_id, status, attempts, finished_at in runs:
            status = RunStatus(status)
            by_id[run_id] = (status, attempts)
            seen = self.ended.get(run_id)
            if status.ended:
                if run_id not in results:
                    continue  # its result is committed with it: read again next time
                state = (str(status), aware(finished_at), attempts, *results[run_id])
                if seen is None:
                    self.ended[run_id] = state
                elif state != seen:
                    self.changed.setdefault(run_id, []).append(state)
                    self.ended[run_id] = state
            elif seen is not None:
                self.changed.setdefault(run_id, []).append((str(status), None, attempts))
        with self._lock:
            for wait in self.waits:
                if wait.waited_s is not None or wait.run_id not in by_id:
                    continue
                status, attempts = by_id[wait.run_id]
                if status.ended:
                    wait.waited_s, wait.outcome = now - wait.since, f"ended {status}"
                elif attempts > wait.attempts:
                    wait.waited_s, wait.outcome = now - wait.since, f"attempt {attempts} started"


# -- submitting ----------------------------------------------------------------------------------


class Submitter(threading.Thread):
    """Keeps ``backlog`` runs waiting for each phone: one job at a time for one phone (one or
    two backends, a base model), and now and then a new model on every phone (a compile)."""

    def __init__(
        self, farm: SoakFarm, config: SoakConfig, models: dict[str, int], rng: random.Random
    ) -> None:
        super().__init__(name="chaos-submitter", daemon=True)
        self.farm = farm
        self.config = config
        self.models = models
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self._halt = threading.Event()
        self._fresh = 0
        self._skip_until: dict[int, float] = {}

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=120)

    def run(self) -> None:
        next_fresh = (
            time.monotonic() + self.config.fresh_model_every_s
            if self.config.fresh_model_every_s
            else None
        )
        while not self._halt.is_set():
            if next_fresh is not None and time.monotonic() >= next_fresh:
                next_fresh += self.config.fresh_model_every_s or 0.0
                self._submit_fresh()
            waiting = self._waiting()
            devices = list(self.farm.phones)
            self.rng.shuffle(devices)
            for device_id in devices:
                if self._halt.is_set():
                    break
                if waiting.get(device_id, 0) >= self.config.backlog:
                    continue
                if self._skip_until.get(device_id, 0.0) > time.monotonic():
                    continue
                model = self.rng.choice(sorted(self.models))
                k = self.rng.choice((1, 1, 2)) if len(self.config.backends) > 1 else 1
                backends = self.rng.sample(self.config.backends, k=k)
                if self._submit(self.models[model], {"ids": [device_id]}, backends):
                    waiting[device_id] = waiting.get(device_id, 0) + len(backends)
                else:
                    self._skip_until[device_id] = time.monotonic() + 2.0
            self._halt.wait(0.5)

    def _waiting(self) -> dict[int, int]:
        try:
            with self.farm.engine.connect() as conn:
                rows = conn.execute(
                    select(Run.device_id, Run.status).where(
                        Run.status.in_((RunStatus.queued, RunStatus.compiling))
                    )
                ).all()
        except Exception:
            return {d: self.config.backlog for d in self.farm.phones}  # read again later
        counts: Counter[int] = Counter(device_id for device_id, _ in rows)
        return dict(counts)

    def _submit(self, model_id: int, devices: dict[str, Any], backends: list[str]) -> bool:
        self.counts["requests"] += 1
        try:
            job = self.farm.client.submit(
                model_id=model_id, devices=devices, backends=backends, settings=PROTOCOL
            )
        except FarmError as exc:
            self.counts[f"refused {exc.status}"] += 1
            return False
        except EdgefarmError:
            self.counts["API unreachable"] += 1
            return False
        self.counts["jobs"] += 1
        self.counts["runs"] += len(job.get("runs") or [])
        return True

    def _submit_fresh(self) -> None:
        self._fresh += 1
        seed = 1000 * (self.config.seed + 1) + self._fresh
        path = self.farm.home / "models-src" / f"fresh-{seed}.onnx"
        path.parent.mkdir(exist_ok=True)
        onnx.save(conv_model(seed, 64), path)
        try:
            model = self.farm.client.upload_model(path)
        except EdgefarmError:
            self.counts["API unreachable"] += 1
            return
        self.counts["fresh models"] += 1
        self._submit(int(model["id"]), {"all": True}, ["tvm-cpu"])


def upload_models(farm: SoakFarm, names: tuple[str, ...]) -> dict[str, int]:
    models = base_models()
    ids = {}
    for name in names:
        path = farm.home / "models-src" / f"{name}.onnx"
        path.parent.mkdir(exist_ok=True)
        onnx.save(models[name], path)
        ids[name] = int(farm.client.upload_model(path)["id"])
    return ids


# -- injecting faults ----------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: float  # monotonic
    at_utc: datetime
    target: str
    held: list[int] = field(default_factory=list)  # runs the killed worker held


class LogTail:
    """New complete lines of a growing log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = b""

    def poll(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [line.decode(errors="replace") for line in lines]


def _proc_field(pid: int, name: str) -> str | None:
    """``PPid`` from /proc/PID/status, or an environment variable of the process."""
    try:
        if name == "PPid":
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("PPid:"):
                    return line.split()[1]
            return None
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            key, _, value = entry.partition(b"=")
            if key.decode(errors="replace") == name:
                return value.decode(errors="replace")
    except OSError:
        return None
    return None


class FaultInjector:
    """Every ``fault_every_s`` (x0.5 to x1.5) deals a fault kind from a shuffled deck of all
    kinds and injects it as soon as it can (within ``PATIENCE_S``): a kill once the process
    is found live (a phone worker preferably on a phone that is measuring, the compile worker
    preferably while it compiles), a mid-run fault once a runner starts. Driven by the soak's
    main thread (``tick``), which also restarts the farm's children."""

    PATIENCE_S = 30.0

    def __init__(
        self, farm: SoakFarm, config: SoakConfig, monitor: Monitor, rng: random.Random
    ) -> None:
        self.farm = farm
        self.config = config
        self.monitor = monitor
        self.rng = rng
        self.kinds = config.farm_kinds(farm.kind)
        self.faults: list[Fault] = []
        self.skipped: Counter[str] = Counter()  # dealt, but found no moment within patience
        self.tail = LogTail(farm.log_path)
        self.deck: list[str] = []
        self.pending: tuple[str, float] | None = None  # (kind, dealt at)
        self.fire: tuple[str, int, float] | None = None  # (mid-run kind, device id, at)
        self.armed_push: set[int] = set()  # phones whose kill_after_bytes is set
        self.next_at = time.monotonic() + self._interval()
        self._processes_at = 0.0
        self._processes_cache: list[dict[str, Any]] = []

    def _interval(self) -> float:
        return self.config.fault_every_s * self.rng.uniform(0.5, 1.5)

    def tick(self) -> None:
        now = time.monotonic()
        lines = self.tail.poll()
        for device_id in sorted(self.armed_push):
            if self.farm.phones[device_id].kill_after_bytes is None:  # it fired
                self.armed_push.discard(device_id)
                self._record(DROP_MID_PUSH, f"device {device_id}")
        if self.fire is not None:
            kind, device_id, at = self.fire
            if now >= at:
                self.fire = None
                self._phone_mid_run(kind, device_id)
            return
        if self.pending is None and now >= self.next_at:
            self.next_at = now + self._interval()
            if not self.deck:  # every kind once, in a random order, then again
                self.deck = self.rng.sample(self.kinds, k=len(self.kinds))
            self.pending = (self.deck.pop(), now)
        if self.pending is not None:
            kind, dealt = self.pending
            if self._try(kind, lines, now - dealt):
                self.pending = None
            elif now - dealt > self.PATIENCE_S:
                self.pending = None
                self.skipped[kind] += 1

    def finish(self) -> None:
        """Stop: disarm what has not fired."""
        for device_id in self.armed_push:
            self.farm.phones[device_id].kill_after_bytes = None
            self.skipped[DROP_MID_PUSH] += 1
        self.armed_push.clear()
        for left in (self.pending, self.fire):
            if left is not None:
                self.skipped[left[0]] += 1
        self.pending = None
        self.fire = None

    def _try(self, kind: str, lines: list[str], waited_s: float) -> bool:
        """Inject ``kind`` now if its moment has come; whether it was (or is armed)."""
        if kind == KILL_PHONE_WORKER:
            busy = self._running_devices()
            if not busy and waited_s < 10:
                return False
            candidates = sorted(busy or self.farm.phones)
            self.rng.shuffle(candidates)
            return any(
                self._kill_farm_process(kind, f"device.{d}", device_id=d) for d in candidates
            )
        if kind == KILL_COMPILE_WORKER:
            if not self._held(None) and waited_s < 15:
                return False
            return self._kill_farm_process(kind, "compile")
        if kind == KILL_BEAT:
            return self._kill_farm_process(kind, "beat")
        if kind == KILL_API:
            assert self.farm.embedded.supervisor is not None
            api = self.farm.embedded.supervisor.child("api")
            if not api.running or api.pid is None:
                return False
            os.kill(api.pid, signal.SIGKILL)
            self._record(kind, f"api pid {api.pid}")
            return True
        if kind == DROP_MID_PUSH:
            free = sorted(set(self.farm.phones) - self.armed_push)
            if not free:
                return False
            device_id = self.rng.choice(free)
            # One-shot: the connection carrying the next pushes is dropped after this many
            # bytes (an input is 48 or 192 KiB, an artifact or the runtime bundle more).
            self.farm.phones[device_id].kill_after_bytes = self.rng.randint(4096, 40960)
            self.armed_push.add(device_id)
            return True  # recorded when it fires
        if kind in (DROP_MID_RUN, RESTART_MID_RUN):
            for line in lines:
                match = RUNNING_LINE.search(line)
                device_id = self.farm.phone_device(int(match.group(2))) if match else None
                if device_id is not None:
                    # The runner is starting; it runs for at least min_seconds.
                    self.fire = (kind, device_id, time.monotonic() + self.rng.uniform(0.3, 0.8))
                    return True
            return False
        if kind == REDIS_RESTART:
            assert self.farm.redis is not None
            self.farm.redis.restart(down_s=self.rng.uniform(0.5, 2.0))
            self._record(kind, f"redis port {self.farm.redis.port}")
            return True
        raise ValueError(f"unknown fault kind {kind!r}")

    def _record(self, kind: str, target: str, held: list[tuple[int, int]] | None = None) -> None:
        fault = Fault(kind, time.monotonic(), utcnow(), target, [r for r, _ in held or []])
        self.faults.append(fault)
        if kind in WORKER_DEATHS and held:
            self.monitor.add([Wait(kind, r, a, fault.at) for r, a in held])
        log(f"fault: {kind} {target}" + (f" (held runs {fault.held})" if fault.held else ""))

    def _running_devices(self) -> set[int]:
        with self.farm.engine.connect() as conn:
            return set(
                conn.scalars(select(Run.device_id).where(Run.status == RunStatus.running)).all()
            )

    def _held(self, device_id: int | None) -> list[tuple[int, int]]:
        """Runs (id, attempts) that a killed process held: running on its phone, or, for the
        compile worker, being compiled for."""
        status = RunStatus.running if device_id is not None else RunStatus.compiling
        query = select(Run.id, Run.attempts).where(Run.status == status)
        if device_id is not None:
            query = query.where(Run.device_id == device_id)
        with self.farm.engine.connect() as conn:
            return [(r.id, r.attempts) for r in conn.execute(query)]

    def _processes(self) -> list[dict[str, Any]]:
        """The farm's processes as ``/healthz`` lists them (pid, alive), read at most once a
        second; from the same table through the database while the API is down."""
        if time.monotonic() - self._processes_at < 1.0:
            return self._processes_cache
        try:
            _, body = self.farm.client.health()
            found = list(body.get("workers") or [])
        except EdgefarmError:
            from harness.db import make_session_factory
            from harness.farm.liveness import liveness

            with make_session_factory(self.farm.engine)() as session:
                found = [p.to_dict() for p in liveness(session).processes]
        self._processes_at, self._processes_cache = time.monotonic(), found
        return found

    def _kill_farm_process(self, kind: str, label: str, *, device_id: int | None = None) -> bool:
        """SIGKILL the live process ``label@HOST`` — only if it is ours: a child of this farm's
        worker host that reports under that very name (the pid in a row of a process that died
        may have been reused by anything)."""
        assert self.farm.embedded.supervisor is not None
        host = self.farm.embedded.supervisor.child("worker").pid
        for process in self._processes():
            name, pid = str(process.get("name")), process.get("pid")
            if not name.startswith(f"{label}@") or not process.get("alive") or not pid:
                continue
            if _proc_field(pid, "PPid") != str(host):
                continue
            if _proc_field(pid, "EDGEFARM_PROCESS_NAME") != name:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self._processes_at = 0.0  # read again next time
            held = self._held(device_id) if kind in WORKER_DEATHS else None
            self._record(kind, f"{name} pid {pid}", held)
            return True
        return False

    def _phone_mid_run(self, kind: str, device_id: int) -> None:
        phone = self.farm.phones[device_id]
        held = self._held(device_id)
        if kind == DROP_MID_RUN:
            phone.drop()
        else:
            phone.stop()
            time.sleep(self.rng.uniform(0.5, 2.0))
            phone.start()
        self._record(kind, f"device {device_id}", held)


# -- the soak ------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start: datetime
    end: datetime  # submissions stopped
    drained: datetime | None = None
    drained_ok: bool = False
    submissions: dict[str, int] = field(default_factory=dict)

    @property
    def minutes(self) -> float:
        return (self.end - self.start).total_seconds() / 60.0


def unended(farm: SoakFarm) -> int:
    with farm.engine.connect() as conn:
        rows = conn.scalars(
            select(Run.id).where(Run.status.not_in((RunStatus.done, RunStatus.failed)))
        ).all()
    return len(rows)


def drain(farm: SoakFarm, timeout_s: float, injector: FaultInjector | None = None) -> bool:
    """Until every run ended, or ``timeout_s``; the farm's supervisor keeps restarting."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        farm.tick()
        if injector is not None:
            injector.tail.poll()
        try:
            left = unended(farm)
        except Exception:
            left = -1
        if left == 0:
            return True
        if left != last and left > 0:
            log(f"draining: {left} run(s) not ended")
            last = left
        time.sleep(1.0)
    return False


def run_phase(
    name: str,
    farm: SoakFarm,
    config: SoakConfig,
    models: dict[str, int],
    monitor: Monitor,
    rng: random.Random,
    *,
    faults: bool,
) -> tuple[Phase, FaultInjector | None]:
    log(f"{farm.kind}: {name} phase, {config.minutes:g} min")
    phase = Phase(name, utcnow(), utcnow())
    submitter = Submitter(farm, config, models, random.Random(rng.random()))
    injector = FaultInjector(farm, config, monitor, rng) if faults else None
    started = time.monotonic()
    submitter.start()
    try:
        while time.monotonic() - started < config.minutes * 60:
            farm.tick()
            if injector is not None:
                injector.tick()
            time.sleep(0.1)
    finally:
        if injector is not None:
            injector.finish()
        submitter.stop()
    phase.end = utcnow()
    phase.submissions = dict(submitter.counts)
    phase.drained_ok = drain(farm, config.drain_s, injector)
    phase.drained = utcnow()
    log(f"{farm.kind}: {name} phase over; drained: {phase.drained_ok}")
    return phase, injector


def warm_up(farm: SoakFarm, config: SoakConfig, models: dict[str, int]) -> Phase:
    """Every base model with every backend on every phone: the compiles and the runtime
    bundle pushes happen here, not in the measured phases."""
    log(f"{farm.kind}: warm-up (compiles, runtime bundles)")
    phase = Phase("warm-up", utcnow(), utcnow())
    for model_id in models.values():
        farm.client.submit(
            model_id=model_id,
            devices={"ids": sorted(farm.phones)},
            backends=list(config.backends),
            settings=PROTOCOL,
        )
    phase.end = utcnow()
    phase.drained_ok = drain(farm, config.warmup_s)
    phase.drained = utcnow()
    if not phase.drained_ok:
        raise RuntimeError(f"the warm-up did not finish within {config.warmup_s:g} s")
    return phase


def soak(kind: str, config: SoakConfig, workdir: Path) -> dict[str, Any]:
    """Soak the ``kind`` farm (see the module doc); its report."""
    rng = random.Random(f"{config.seed}-{kind}")
    with running_farm(kind, config, workdir) as farm:
        monitor = Monitor(farm.engine)
        monitor.start()
        injector: FaultInjector | None = None
        phases: list[Phase] = []
        try:
            models = upload_models(farm, config.models)
            phases.append(warm_up(farm, config, models))
            if config.fault_free:
                phases.append(
                    run_phase("fault-free", farm, config, models, monitor, rng, faults=False)[0]
                )
            chaos, injector = run_phase("chaos", farm, config, models, monitor, rng, faults=True)
            phases.append(chaos)
        finally:
            monitor.stop()
        return analyse(farm, config, phases, monitor, injector)


# -- what became of the runs ---------------------------------------------------------------------


def _reason(stage: str | None, message: str | None) -> str:
    """A failure's reason with its particulars (numbers, addresses) left out, for counting."""
    text = re.sub(r"tcp:127\.0\.0\.1:\d+", "tcp:PHONE", message or "")
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return f"{stage}: {text[:110]}"


def scan_log(path: Path) -> dict[str, Any]:
    ends: Counter[int] = Counter()
    attempts: Counter[int] = Counter()
    superseded = 0
    restarts: Counter[str] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if (m := END_LINE.search(line)) or (m := REAPER_END_LINE.search(line)):
            ends[int(m.group(1))] += 1
        elif m := ATTEMPT_LINE.search(line):
            attempts[int(m.group(1))] += 1
        elif SUPERSEDED_LINE.search(line):
            superseded += 1
        elif m := RESTART_LINE.search(line):
            restarts[m.group(1).split("@")[0]] += 1
    return {"ends": ends, "attempts": attempts, "superseded": superseded, "restarts": restarts}


def analyse(
    farm: SoakFarm,
    config: SoakConfig,
    phases: list[Phase],
    monitor: Monitor,
    injector: FaultInjector | None,
) -> dict[str, Any]:
    logs = scan_log(farm.log_path)
    with farm.engine.connect() as conn:
        runs = conn.execute(
            select(
                Run.id,
                Run.status,
                Run.attempts,
                Run.created_at,
                Run.finished_at,
                Run.error_stage,
                Run.error_message,
            )
        ).all()
        results: dict[int, list[Any]] = defaultdict(list)
        for r in conn.execute(select(Result.run_id, Result.status, Result.document)):
            results[r.run_id].append(r)

    def summary(rows: list[Any], phase: Phase | None) -> dict[str, Any]:
        out: dict[str, Any] = Counter()
        infra: Counter[str] = Counter()
        other: Counter[str] = Counter()
        doubled_runs: list[int] = []
        for run in rows:
            status = RunStatus(run.status)
            mine = results.get(run.id, [])
            ended_lines = logs["ends"].get(run.id, 0)
            out["submitted"] += 1
            if not status.ended:
                out["lost"] += 1
                continue
            out["ended"] += 1
            doubled = len(mine) > 1 or ended_lines > 1 or run.id in monitor.changed
            if doubled:
                doubled_runs.append(run.id)
            agrees = len(mine) == 1 and (mine[0].status == "ok") == (status == RunStatus.done)
            if agrees and ended_lines == 1 and not doubled:
                out["ended exactly once"] += 1
            if not mine:
                out["ended without a result"] += 1
            elif not agrees:
                out["result disagrees with run"] += 1
            if ended_lines == 0:
                out["end not logged"] += 1
            if status == RunStatus.done:
                out["done"] += 1
                continue
            document = (mine[0].document or {}) if mine else {}
            error = document.get("error") or {}
            reason = _reason(run.error_stage, run.error_message)
            if error.get("retryable"):
                out["failed (infrastructure)"] += 1
                infra[reason] += 1
            else:
                out["failed (other)"] += 1
                other[reason] += 1
        out["doubled"] = len(doubled_runs)
        report: dict[str, Any] = {
            k: out.get(k, 0)
            for k in (
                "submitted",
                "ended",
                "ended exactly once",
                "done",
                "failed (infrastructure)",
                "failed (other)",
                "lost",
                "doubled",
                "ended without a result",
                "result disagrees with run",
                "end not logged",
            )
        }
        report["doubled runs"] = doubled_runs
        report["infrastructure reasons"] = dict(infra.most_common())
        report["other reasons"] = dict(other.most_common())
        if phase is not None:
            done_in_window = [
                r
                for r in runs
                if RunStatus(r.status) == RunStatus.done
                and r.finished_at is not None
                and phase.start <= aware(r.finished_at) <= phase.end  # type: ignore[operator]
            ]
            report["minutes"] = round(phase.minutes, 2)
            report["done per minute"] = round(len(done_in_window) / max(phase.minutes, 1e-9), 1)
            report["drained"] = phase.drained_ok
            report["drain seconds"] = round(
                ((phase.drained or phase.end) - phase.end).total_seconds(), 1
            )
            report["submissions"] = phase.submissions
        return report

    by_phase: dict[str, dict[str, Any]] = {}
    for phase in phases:
        upto = phase.drained or phase.end
        mine = [r for r in runs if phase.start <= aware(r.created_at) <= upto]  # type: ignore[operator]
        by_phase[phase.name] = summary(mine, phase)
    report: dict[str, Any] = {
        "farm": farm.kind,
        "settings": farm.settings,
        "config": {
            "minutes": config.minutes,
            "phones": config.phones,
            "fault_every_s": config.fault_every_s,
            "seed": config.seed,
            "backends": list(config.backends),
            "backlog": config.backlog,
            "protocol": PROTOCOL,
        },
        "phases": by_phase,
        "all runs": summary(list(runs), None),
        "superseded attempts (logged)": logs["superseded"],
        "attempts logged": sum(logs["attempts"].values()),
        "restarts (logged)": dict(logs["restarts"]),
        "monitor read errors": monitor.errors,
        "changed after ending": {
            str(k): [list(map(str, s)) for s in v] for k, v in monitor.changed.items()
        },
    }
    if injector is not None:
        kinds = Counter(f.kind for f in injector.faults)
        report["faults"] = {k: kinds.get(k, 0) for k in injector.kinds}
        report["faults drawn but not injected"] = dict(injector.skipped)
        waits: dict[str, Any] = {}
        for kind in WORKER_DEATHS:
            mine = [w for w in monitor.waits if w.fault == kind]
            resolved = [w.waited_s for w in mine if w.waited_s is not None]
            waits[kind] = {
                "runs held": len(mine),
                "longest wait s": round(max(resolved), 1) if resolved else None,
                "median wait s": round(float(np.median(resolved)), 1) if resolved else None,
                "never resolved": len(mine) - len(resolved),
            }
        report["waits after a worker died"] = waits
        report["fault log"] = [
            {"kind": f.kind, "at": f.at_utc.isoformat(), "target": f.target, "held": f.held}
            for f in injector.faults
        ]
    return report


# -- printing ------------------------------------------------------------------------------------


def print_report(reports: list[dict[str, Any]]) -> None:
    columns: list[tuple[str, dict[str, Any]]] = []
    for report in reports:
        for name in ("fault-free", "chaos"):
            if name in report["phases"]:
                columns.append((f"{report['farm']} {name}", report["phases"][name]))
    rows = [
        "minutes",
        "submitted",
        "ended exactly once",
        "done",
        "failed (infrastructure)",
        "failed (other)",
        "lost",
        "doubled",
        "done per minute",
        "drain seconds",
    ]
    width = max([22, *(len(c[0]) + 2 for c in columns)])
    print()
    print("runs".ljust(26) + "".join(name.rjust(width) for name, _ in columns))
    for row in rows:
        print(row.ljust(26) + "".join(str(col.get(row, "")).rjust(width) for _, col in columns))
    for report in reports:
        every = report["all runs"]
        print(
            f"\n{report['farm']} farm, all runs (warm-up included): {every['submitted']} "
            f"submitted, {every['ended exactly once']} ended exactly once, "
            f"{every['lost']} lost, {every['doubled']} doubled"
        )
        if "faults" in report:
            faults = ", ".join(f"{k} {v}" for k, v in report["faults"].items())
            print(f"  faults injected ({sum(report['faults'].values())}): {faults}")
            for kind, wait in report["waits after a worker died"].items():
                print(
                    f"  after {kind}: {wait['runs held']} run(s) held, longest wait "
                    f"{wait['longest wait s']} s, median {wait['median wait s']} s "
                    "(kill -> next attempt started or run ended)"
                )
        chaos = report["phases"].get("chaos", {})
        for label in ("infrastructure reasons", "other reasons"):
            for reason, count in list(chaos.get(label, {}).items())[:6]:
                print(f"  chaos failed, {label.split()[0]}: {count} x {reason}")
        print(f"  supervisor restarts (from the worker log): {report['restarts (logged)']}")
        superseded = report["superseded attempts (logged)"]
        print(f"  attempts superseded (their outcome dropped): {superseded}")
        print(f"  chaos submissions: {chaos.get('submissions')}")
        print(f"  settings: {report['settings']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--farm", choices=(*FARMS, "both"), default="both")
    parser.add_argument("--minutes", type=float, default=5.0, help="each phase")
    parser.add_argument("--phones", type=int, default=4)
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds (x0.5-1.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drain", type=float, default=600.0, help="longest drain, seconds")
    parser.add_argument("--no-fault-free", action="store_true", help="skip the fault-free phase")
    parser.add_argument("--set", action="append", default=[], metavar="EDGEFARM_NAME=VALUE")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--faults", help=f"comma-separated kinds (default all: {FAULT_KINDS})")
    parser.add_argument("--cache-dir", type=Path, help="artifact cache (default: a fresh one)")
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.set)
    workdir = Path(tempfile.mkdtemp(prefix="edgefarm-chaos-"))
    config = SoakConfig(
        minutes=args.minutes,
        fault_free=not args.no_fault_free,
        phones=args.phones,
        fault_every_s=args.fault_every,
        seed=args.seed,
        drain_s=args.drain,
        backends=tuple(args.backends.split(",")),
        kinds=tuple(args.faults.split(",")) if args.faults else None,
        env=env,
        # One cache for both farms: the second one's warm-up compiles nothing.
        cache_dir=args.cache_dir or workdir / "cache",
    )
    reports = []
    try:
        for kind in FARMS if args.farm == "both" else (args.farm,):
            reports.append(soak(kind, config, workdir))
            if args.json:
                args.json.write_text(json.dumps(reports, indent=2, default=str) + "\n")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(reports)


if __name__ == "__main__":
    main()
