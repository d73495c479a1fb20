"""The load of a chaos soak (bench/chaos.py): a stream of submissions, and a monitor that reads
every run twice a second.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import onnx
from sqlalchemy import Engine, select

from harness.client import FarmError
from harness.db import Result, Run, RunStatus
from harness.errors import EdgefarmError

from chaos_config import SETTINGS, SoakConfig, aware, base_models, conv_model
from chaos_farm import SoakFarm

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
                model_id=model_id, devices=devices, backends=backends, settings=SETTINGS
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
