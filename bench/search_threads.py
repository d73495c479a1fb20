"""Benchmark: a tuning's host time with the search on one thread against one per physical core.

MetaSchedule's evolutionary search samples, mutates and scores its population on
``TuneContext.num_threads`` threads, and edgefarm's builder builds a batch's candidates on as
many; the farm's tunings did both on one, most of a tuning's host time (py-spy on a tuning of
ppocr-cls for the emulated phone: 50% generating candidates, 27% building them). Here the
same search (same model, trials, population and seed; candidates built in this process and
timed on this machine, fresh records each time) runs with
``--search-threads 1`` and with ``N`` in interleaved rounds, so the machine's load hits both
alike; it prints each run's seconds and trials per second, and the ratio of the medians.

Usage: python bench/search_threads.py [--model ds-cnn] [--trials 16] [--rounds 2]
       [--search-threads N] [--population 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ds-cnn", help="an MLPerf Tiny example")
    parser.add_argument("--trials", type=int, default=16, help="per task")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--search-threads", type=int, default=0, help="0: physical cores")
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    if args.trials < 1 or args.rounds < 1:
        parser.error("--trials and --rounds: at least 1")

    from harness.compile.targets import get_target
    from harness.devices import open_device
    from harness.examples import write_example
    from harness.modelio import load, to_relax
    from harness.tuning.search import host_runner, search, search_threads, tasks_of
    from harness.tuning.session import device_cores, tuning_target

    many = args.search_threads or search_threads()
    if many < 2:
        raise SystemExit(f"this host has {many} physical core: nothing to compare")
    tmp = Path(tempfile.mkdtemp(prefix="edgefarm-search-threads-"))
    device = open_device("local")
    try:
        spec = get_target(device.facts().target)
        target = tuning_target(spec, device_cores(device))
    finally:
        device.close()
    mod = to_relax(load(write_example(args.model, tmp), []))
    tasks = tasks_of(mod, target)
    print(
        f"{args.model}: {len(tasks)} tasks, {args.trials} trials per task, population "
        f"{args.population}, batches of {args.batch}; search threads 1 and {many}",
        flush=True,
    )
    seconds: dict[int, list[float]] = {1: [], many: []}
    for round_ in range(args.rounds):
        for threads in (1, many) if round_ % 2 == 0 else (many, 1):
            work = tmp / f"records-{round_}-{threads}"
            trials = 0
            spent = 0.0
            for task in tasks:  # one search per task, as edgefarm tune --trials does
                result = search(
                    mod,
                    target,
                    work,
                    trials=args.trials,
                    runner=host_runner(),
                    trials_per_iteration=args.batch,
                    population=args.population,
                    seed=round_,
                    only=[task.task_name],
                    tasks=tasks,
                    threads=threads,
                )
                trials += result.trials
                spent += result.seconds
            seconds[threads].append(spent)
            print(
                f"  round {round_ + 1}, search threads {threads}: {trials} trials in "
                f"{spent:.1f} s ({trials / spent:.2f} trials/s)",
                flush=True,
            )
            shutil.rmtree(work, ignore_errors=True)
    one, more = statistics.median(seconds[1]), statistics.median(seconds[many])
    print(f"median {one:.1f} s on 1 thread, {more:.1f} s on {many}: {one / more:.2f}x faster")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
