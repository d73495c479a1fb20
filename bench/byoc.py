"""Benchmark: BYOC offload (tvm-nnapi, tvm-neuron) beside tvm-cpu and onnxruntime.

For a few models (the tests' mobilenet_like and wide_conv, MLPerf Tiny's DS-CNN and ResNet-8)
it measures tvm-cpu, ort, and the two offloading backends with ``partition`` all and cost, on
the local device in interleaved rounds, and prints each median latency; then, per offloading
run, the offload share from the partition report (operators, multiply-accumulates, subgraphs)
and the cost model's predicted latency against the measured one (for mode all: the prediction
the cost run made of offloading everything). The first cost run of a model calibrates (times
every candidate on the device); its count and wall time are printed.

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

# (label, backend, partition mode); measured in interleaved rounds.
COLUMNS = (
    ("tvm-cpu", "tvm-cpu", None),
    ("nnapi all", "tvm-nnapi", "all"),
    ("nnapi cost", "tvm-nnapi", "cost"),
    ("neuron all", "tvm-neuron", "all"),
    ("neuron cost", "tvm-neuron", "cost"),
    ("ort", "ort", None),
)
BYOC = ("tvm-nnapi", "tvm-neuron")


def _models(directory: Path) -> dict[str, Path]:
    makers: dict[str, Callable[[], onnx.ModelProto]] = {
        "mobilenet_like": testmodels.mobilenet_like,
        "wide_conv": testmodels.wide_conv,
    }
    paths = {name: testmodels.save(make(), directory, name) for name, make in makers.items()}
    for name in ("ds-cnn", "resnet8"):
        paths[name] = write_example(name, directory)
    return paths


def _share(p: dict[str, Any]) -> str:
    return (
        f"{p['ops_offloaded']}/{p['ops_total']} ops, "
        f"{100 * p['macs_offloaded_share']:.0f}% MACs, {p['subgraphs']} sg"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    args = parser.parse_args()
    protocol = Protocol(warmup=2, min_iterations=10, min_seconds=args.min_seconds, max_seconds=30)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _models(Path(tmp)).items():
            medians: dict[str, list[float]] = {label: [] for label, _, _ in COLUMNS}
            docs: dict[str, dict[str, Any]] = {}
            failures: dict[str, str] = {}
            for _ in range(args.rounds):
                for label, backend, mode in COLUMNS:  # interleaved: each round measures all
                    if label in failures:
                        continue
                    options = {backend: {"partition": mode}} if mode else {}
                    plan = BenchPlan(path, backends=[backend], protocol=protocol, options=options)
                    (doc,) = [d.dump() for d in run_bench(plan)]
                    if doc["status"] != "ok":
                        failures[label] = f"{doc['error']['stage']}: {doc['error']['message']}"
                        continue
                    medians[label].append(doc["latency_ms"]["median"])
                    docs.setdefault(label, doc)  # the first: the cost run that calibrated
            rows.append((name, medians, docs, failures))

    print(f"{'model':<16}" + "".join(f"{label + ' ms':>16}" for label, _, _ in COLUMNS))
    for name, medians, _, failures in rows:
        line = f"{name:<16}"
        for label, _, _ in COLUMNS:
            values = medians[label]
            line += f"{statistics.median(values):>16.4f}" if values else f"{'failed':>16}"
        print(line)
        for label, message in failures.items():
            print(f"  {name}/{label} failed: {message}")

    print()
    print(
        f"{'model':<16}{'backend':<12}{'mode':<6}{'offload':>30}{'predicted ms':>14}"
        f"{'measured ms':>13}{'error':>8}{'calibration':>22}"
    )
    for name, medians, docs, _ in rows:
        for backend in BYOC:
            short = backend.removeprefix("tvm-")
            cost_doc = docs.get(f"{short} cost")
            cost = cost_doc["partition"]["cost"] if cost_doc else None
            for mode in ("all", "cost"):
                label = f"{short} {mode}"
                doc = docs.get(label)
                if doc is None or not medians[label]:
                    continue
                measured = statistics.median(medians[label])
                predicted = None
                if cost is not None:
                    predicted = (
                        cost["predicted_all_ms"]
                        if mode == "all"
                        else doc["partition"]["predicted_ms"]
                    )
                line = f"{name:<16}{backend:<12}{mode:<6}{_share(doc['partition']):>30}"
                if predicted is None:
                    line += f"{'-':>14}{measured:>13.4f}{'-':>8}"
                else:
                    error = (predicted - measured) / measured
                    line += f"{predicted:>14.4f}{measured:>13.4f}{100 * error:>7.0f}%"
                if mode == "cost":
                    cal = cost["calibration"]
                    line += f"{cal['measured_now']:>5} timed, {cal['wall_ms'] / 1000:6.1f} s"
                print(line)
    print(
        "note: tvm-nnapi and tvm-neuron ran on edgefarm's host reference driver (plain C "
        "kernels, one thread), not on an accelerator; their latencies are not NPU latencies. "
        "'cost' keeps on the CPU what this device's measured costs say the driver loses."
    )


if __name__ == "__main__":
    main()
