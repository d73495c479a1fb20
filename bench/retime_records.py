"""Probe: do a store's best tuning records hold their times when timed again?

A tuning keeps, for each workload, the candidate whose measurement was fastest. If the
measurements are noisy, the fastest of thousands is the luckiest, not the best, and more
trials buy nothing (or worse). This re-times, for the heaviest workloads of a store (an
``EDGEFARM_HOME`` that bench/tuning.py or ``edgefarm tune`` filled), the best record among the
first ``--early`` of the workload and the best of all of them, with the runner's kernel mode
on each ``--device``, in interleaved rounds, and prints each record's recorded time beside its
re-timed ones (microseconds). A record is built as the search built it
(:func:`harness.tuning.confirm.build_contender`: the weight re-layout split off, its own
argument shapes), so both times are of the same code.

Usage: python bench/retime_records.py (--home DIR | --db URL) [--device local] [--device ADDR]
       [--workloads 4] [--early 32] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, help="the store's EDGEFARM_HOME")
    parser.add_argument("--db", help="or the store's database URL (edgefarm tune --db)")
    parser.add_argument("--device", action="append", default=[])
    parser.add_argument("--workloads", type=int, default=4, help="the heaviest N")
    parser.add_argument("--early", type=int, default=32, help="records counted as early")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if (args.home is None) == (args.db is None):
        parser.error("give the store as --home or --db")
    if args.home is not None:
        if not args.home.is_dir():
            parser.error(f"{args.home} is not a directory")
        os.environ["EDGEFARM_HOME"] = str(args.home)
    else:
        os.environ["EDGEFARM_DATABASE_URL"] = args.db
    devices = args.device or ["local"]

    import tvm
    from sqlalchemy import select

    from harness.compile.targets import get_target
    from harness.db import make_engine, make_session_factory
    from harness.db.models import TuningRecord, TuningWorkload
    from harness.devices import open_device
    from harness.tuning.confirm import build_contender
    from harness.tuning.device import DeviceKernelTimer
    from harness.tuning.search import cpu_tensor_intrinsics
    from harness.tuning.store import Contender

    cpu_tensor_intrinsics()
    sessions = make_session_factory(make_engine())
    # workload id -> (run seconds, record, workload) of its measured records, oldest first
    by_workload: dict[int, list[tuple[float, TuningRecord, TuningWorkload]]] = defaultdict(list)
    with sessions() as session:
        rows = session.execute(
            select(TuningRecord, TuningWorkload)
            .join(TuningWorkload, TuningRecord.workload_id == TuningWorkload.id)
            .order_by(TuningRecord.id)
        ).all()
        for record, workload in rows:
            if record.run_s is not None and record.run_s < 1:
                by_workload[workload.id].append((record.run_s, record, workload))
    if not by_workload:
        raise SystemExit(f"{args.home or args.db}: no measured record")
    heaviest = sorted(by_workload, key=lambda w: -min(t for t, _, _ in by_workload[w]))
    chosen = heaviest[: args.workloads]
    targets = {r.target for w in chosen for _, r, _ in by_workload[w]}
    if len(targets) != 1:
        raise SystemExit(f"records of several targets: {sorted(targets)}")
    spec = get_target(next(iter(targets)).split("/", 1)[0])
    target = tvm.target.Target({**dict(spec.tvm), "num-cores": args.threads})

    work = Path(tempfile.mkdtemp(prefix="edgefarm-retime-"))
    probes: list[dict[str, Any]] = []
    for wid in chosen:
        records = by_workload[wid]
        early = min(records[: args.early], key=lambda trw: trw[0])
        best = min(records, key=lambda trw: trw[0])
        for label, (run_s, record, workload) in (
            (f"best of first {args.early}", early),
            ("best", best),
        ):
            built = build_contender(
                Contender(
                    record.id,
                    workload.id,
                    workload.shash,
                    workload.workload,
                    record.record,
                    run_s,
                    record.confirmed_s,
                ),
                work / f"r{record.id}-{label.replace(' ', '-')}",
                target,
                {},
            )
            if isinstance(built, str):
                raise SystemExit(f"record {record.id} does not build: {built}")
            library, argv = built
            probes.append(
                {
                    "workload": wid,
                    "label": label,
                    "records": len(records),
                    "recorded_us": run_s * 1e6,
                    "library": library,
                    "args": argv,
                    "times": defaultdict(list),
                }
            )
    for _ in range(args.rounds):
        for address in devices:
            device = open_device(address)
            try:
                timer = DeviceKernelTimer(device, spec.name, threads=args.threads)
                timings = timer.time([(p["library"], p["args"]) for p in probes])
            finally:
                device.close()
            for probe, timing in zip(probes, timings, strict=True):
                if timing.costs_s:
                    probe["times"][address].append(statistics.mean(timing.costs_s) * 1e6)
    print(f"{'workload':>8} {'record':<18} {'of':>5} {'recorded':>9}  " + "  ".join(devices))
    for probe in probes:
        again = "  ".join(
            ",".join(f"{t:.1f}" for t in probe["times"][d]) or "failed" for d in devices
        )
        print(
            f"{probe['workload']:>8} {probe['label']:<18} {probe['records']:>5} "
            f"{probe['recorded_us']:>9.2f}  {again}"
        )


if __name__ == "__main__":
    main()
