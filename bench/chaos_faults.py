"""The faults of a chaos soak (bench/chaos.py): processes killed, phones dropped or restarted,
Redis restarted empty, each at a moment when it hurts.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from harness.db import Run, RunStatus
from harness.errors import EdgefarmError

from chaos_config import (
    DROP_MID_PUSH,
    DROP_MID_RUN,
    KILL_API,
    KILL_BEAT,
    KILL_COMPILE_WORKER,
    KILL_PHONE_WORKER,
    REDIS_RESTART,
    RESTART_MID_RUN,
    RUNNING_LINE,
    WORKER_DEATHS,
    SoakConfig,
    log,
    utcnow,
)
from chaos_farm import SoakFarm
from chaos_load import Monitor, Wait

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
