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
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from harness.db import Run, RunStatus

from chaos_config import (
    BACKENDS,
    DROP_MID_PUSH,
    DROP_MID_RUN,
    FARMS,
    FAULT_KINDS,
    KILL_API,
    KILL_BEAT,
    KILL_COMPILE_WORKER,
    KILL_PHONE_WORKER,
    REDIS_RESTART,
    RESTART_MID_RUN,
    SETTINGS,
    Phase,
    SoakConfig,
    log,
    utcnow,
)
from chaos_farm import SoakFarm, running_farm
from chaos_faults import FaultInjector
from chaos_load import Monitor, Submitter, upload_models
from chaos_report import analyse, print_report

# The entry points, and the fault kinds tests/test_chaos.py reads from here.
__all__ = [
    "DROP_MID_PUSH",
    "DROP_MID_RUN",
    "FAULT_KINDS",
    "KILL_API",
    "KILL_BEAT",
    "KILL_COMPILE_WORKER",
    "KILL_PHONE_WORKER",
    "REDIS_RESTART",
    "RESTART_MID_RUN",
    "SoakConfig",
    "main",
    "soak",
]


# -- the soak ------------------------------------------------------------------------------------


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
            settings=SETTINGS,
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
