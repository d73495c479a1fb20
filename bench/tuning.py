"""Benchmark: tvm-cpu untuned and tuned (MetaSchedule, candidates measured on the device by the
native runner's kernel mode) against onnxruntime with the same thread count.

For each model: the untuned tvm-cpu median, ``edgefarm tune`` with N trials per task (its
time, its tasks, how many it found tuned already by an earlier model), the tuned median, and
ort's median; ratios to ort. The records go to a store of the benchmark's own (a fresh
EDGEFARM_HOME unless --home), so the first model starts untuned. One JSON line per model is
appended to --out as it finishes (a long run keeps what it measured).

Usage: python bench/tuning.py [--models resnet8,ds-cnn,resnet8@1,...] [--trials 32] [--device local]
       [--threads N] [--home DIR] [--out FILE] [--extra-model NAME=PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.tuning import DEFAULT_POPULATION


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet8,ds-cnn,autoencoder,mobilenet-v1-0.25")
    parser.add_argument("--extra-model", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--trials", type=int, default=32, help="per task")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--population", type=int, default=DEFAULT_POPULATION)
    parser.add_argument("--device", default="local")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("tuning-bench.jsonl"))
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="edgefarm-tuning-bench-"))
    os.environ["EDGEFARM_HOME"] = str(home)
    # The same threads for both: TVM's runtime pool and onnxruntime's intra-op pool.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    from harness.bench import BenchPlan, Protocol, run_bench
    from harness.db.costs import local_store
    from harness.devices import open_device
    from harness.examples import write_example
    from harness.tuning.session import tune_model

    protocol = Protocol(min_seconds=args.min_seconds)

    def median(path: Path, backend: str, options: dict[str, Any]) -> tuple[float, Any]:
        plan = BenchPlan(
            path,
            backends=[backend],
            devices=[args.device],
            protocol=protocol,
            options={backend: options},
        )
        (doc,) = run_bench(plan)
        data = doc.dump()
        if data["status"] != "ok":
            raise SystemExit(f"{path.name}/{backend} failed: {data['error']}")
        return float(data["latency_ms"]["median"]), data["provenance"]

    models: list[tuple[str, Path]] = []
    tmp = Path(tempfile.mkdtemp(prefix="edgefarm-tuning-models-"))
    for spec in [m for m in args.models.split(",") if m]:
        # NAME@SEED: the example with other weights (the same layer shapes: its tasks reused).
        name, _, seed = spec.partition("@")
        directory = tmp / (seed or "0")
        directory.mkdir(exist_ok=True)
        models.append((spec, write_example(name, directory, seed=int(seed or 0))))
    for text in args.extra_model:
        name, _, path = text.partition("=")
        models.append((name, Path(path)))

    print(f"home {home}; threads {args.threads}; {args.trials} trials per task", flush=True)
    for name, path in models:
        untuned_ms, _ = median(path, "tvm-cpu", {"tuning": "off"})
        ort_ms, _ = median(path, "ort", {"threads": args.threads})
        device = open_device(args.device)
        started = time.perf_counter()
        try:
            report = tune_model(
                path,
                device,
                local_store(),
                trials=args.trials,
                batch=args.batch,
                population=args.population,
                progress=lambda event, message: print(f"  {event}: {message}", flush=True),
            )
        finally:
            device.close()
        tune_s = time.perf_counter() - started
        tuned_ms, provenance = median(path, "tvm-cpu", {"tuning": "on"})
        row = {
            "model": name,
            "device": args.device,
            "device_class": report.device_class,
            "threads": args.threads,
            "trials_per_task": args.trials,
            "tasks": len(report.tasks),
            "tasks_reused": len(report.reused),
            "trials_measured": sum(t.measured for t in report.tasks),
            "tune_s": round(tune_s, 1),
            "measured_on": report.measured_on,
            "untuned_ms": untuned_ms,
            "tuned_ms": tuned_ms,
            "ort_ms": ort_ms,
            "untuned_vs_ort": round(untuned_ms / ort_ms, 2),
            "tuned_vs_ort": round(tuned_ms / ort_ms, 2),
            "tuning": provenance.get("tuning"),
        }
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
