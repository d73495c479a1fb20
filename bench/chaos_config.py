"""What a chaos soak is (bench/chaos.py): the fault kinds, the protocol and backends of its runs,
its models, its configuration and phases, and what the worker log says.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from harness.examples.load import two_conv_net
from harness.measure.protocol import MeasurementRequest

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
# What each submission asks for (the client takes settings, not a dict).
SETTINGS = MeasurementRequest(**PROTOCOL)
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
    """The farm's load model (:func:`harness.examples.load.two_conv_net`): a fraction of a
    millisecond to a few per inference, so that a run lasts its ``min_seconds``."""
    return two_conv_net(seed, size, f"chaos_conv_{seed}")


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
