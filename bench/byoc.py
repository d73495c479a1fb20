"""Benchmark: BYOC offload (tvm-nnapi, tvm-neuron) beside tvm-cpu and onnxruntime.

For a few models (the tests' mobilenet_like, the MLPerf Tiny DS-CNN and ResNet-8) it measures
the four backends on the local device in interleaved rounds and prints each median latency
with the offload share from the partition report (operators, and multiply-accumulates).

On this machine the "accelerator" is edgefarm's host reference driver: plain, single-threaded
C loops that check the generated NNAPI/Neuron code end to end. Its latencies say what the
partition costs around an accelerator, not how fast an NPU is.

Usage: python bench/byoc.py [--rounds N] [--min-seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from harness.bench import BenchPlan, Protocol, run_bench
from harness.examples import write_example

# The tests' generated models (appended, so that the harness package is not shadowed).
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
import testmodels

BACKENDS = ("tvm-cpu", "tvm-nnapi", "tvm-neuron", "ort")
BYOC = ("tvm-nnapi", "tvm-neuron")


def _models(directory: Path) -> dict[str, Path]:
    makers: dict[str, Callable[[], onnx.ModelProto]] = {"mobilenet_like": testmodels.mobilenet_like}
    paths = {name: testmodels.save(make(), directory, name) for name, make in makers.items()}
    for name in ("ds-cnn", "resnet8"):
        paths[name] = write_example(name, directory)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    args = parser.parse_args()
    protocol = Protocol(warmup=2, min_iterations=10, min_seconds=args.min_seconds, max_seconds=30)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _models(Path(tmp)).items():
            medians: dict[str, list[float]] = {b: [] for b in BACKENDS}
            partitions: dict[str, dict[str, Any]] = {}
            failures: dict[str, str] = {}
            for _ in range(args.rounds):
                for backend in BACKENDS:  # interleaved: each round measures every backend
                    if backend in failures:
                        continue
                    (doc,) = run_bench(BenchPlan(path, backends=[backend], protocol=protocol))
                    if doc["status"] != "ok":
                        failures[backend] = f"{doc['error']['stage']}: {doc['error']['message']}"
                        continue
                    medians[backend].append(doc["latency_ms"]["median"])
                    if "partition" in doc:
                        partitions[backend] = doc["partition"]
            rows.append((name, medians, partitions, failures))

    header = f"{'model':<16}" + "".join(f"{b + ' ms':>14}" for b in BACKENDS)
    header += "".join(f"{b + ' offload':>30}" for b in BYOC)
    print(header)
    for name, medians, partitions, failures in rows:
        line = f"{name:<16}"
        for backend in BACKENDS:
            values = medians[backend]
            line += f"{statistics.median(values):>14.4f}" if values else f"{'failed':>14}"
        for backend in BYOC:
            p = partitions.get(backend)
            if p is None:
                line += f"{'-':>30}"
                continue
            share = (
                f"{p['ops_offloaded']}/{p['ops_total']} ops, "
                f"{100 * p['macs_offloaded_share']:.0f}% MACs, {p['subgraphs']} sg"
            )
            line += f"{share:>30}"
        print(line)
        for backend, message in failures.items():
            print(f"  {name}/{backend} failed: {message}")
    print(
        "note: tvm-nnapi and tvm-neuron ran on edgefarm's host reference driver (plain C "
        "kernels, one thread), not on an accelerator; their latencies are not NPU latencies."
    )


if __name__ == "__main__":
    main()
