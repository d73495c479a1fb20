"""Benchmark: TVM (tvm-cpu) against onnxruntime on the same models, same protocol, one run.

Prints each model's median latency for both backends and the ratio tvm/ort, measured side by
side (interleaved rounds) on the local device, both on the same threads (``--threads``, default
this machine's physical cores: the backends' own defaults differ, see README "Threads").
Usage: python bench/tvm_vs_ort.py [--rounds N] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import psutil

from harness.bench import BenchPlan, Protocol, run_bench
from harness.examples import EXAMPLES, write_example


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = args.threads or psutil.cpu_count(logical=False) or 1
    print(f"threads {threads} (tvm-cpu and ort)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in EXAMPLES:
            path = write_example(name, tmp)
            medians: dict[str, list[float]] = {"tvm-cpu": [], "ort": []}
            for _ in range(args.rounds):
                for backend in ("tvm-cpu", "ort"):
                    (measured,) = run_bench(
                        BenchPlan(
                            Path(path),
                            backends=[backend],
                            protocol=Protocol(min_seconds=args.min_seconds),
                            options={backend: {"threads": threads}},
                        )
                    )
                    doc = measured.dump()
                    if doc["status"] != "ok":
                        raise SystemExit(f"{name}/{backend} failed: {doc['error']}")
                    if doc["provenance"].get("threads") != threads:
                        raise SystemExit(
                            f"{name}/{backend} ran with {doc['provenance'].get('threads')} "
                            f"threads, not {threads}"
                        )
                    medians[backend].append(doc["latency_ms"]["median"])
            tvm_ms = statistics.median(medians["tvm-cpu"])
            ort_ms = statistics.median(medians["ort"])
            rows.append((name, tvm_ms, ort_ms, tvm_ms / ort_ms))
    print(f"{'model':<20}{'tvm-cpu ms':>12}{'ort ms':>12}{'tvm/ort':>10}")
    for name, tvm_ms, ort_ms, ratio in rows:
        print(f"{name:<20}{tvm_ms:>12.4f}{ort_ms:>12.4f}{ratio:>10.2f}")


if __name__ == "__main__":
    main()
