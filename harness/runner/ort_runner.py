"""The ``ort`` baseline runner: onnxruntime measured with the native runner's protocol.

Same arguments and the same one-line JSON report as ``edgefarm-runner`` (see runner.cc), so the
harness treats both alike: warm up, time single calls until both a minimum count and a minimum
duration are reached, record load time, first-inference time and peak RSS, write outputs.
Peak RSS here includes the Python interpreter and numpy (tens of MB), which the native runner
does not carry; the README says so.

Run as ``python -m harness.runner.ort_runner --module model.onnx --input in0.npy ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

RUNNER_VERSION = "ort-1"


def _error(stage: str, message: str, code: int = 2) -> int:
    print(
        json.dumps(
            {
                "status": "error",
                "runner_version": RUNNER_VERSION,
                "stage": stage,
                "message": " ".join(message.split())[:500],
            }
        )
    )
    return code


def _peak_rss_kb() -> int:
    """VmHWM: this address space's peak. ru_maxrss would include the parent's peak, which
    Linux carries across exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgefarm-ort-runner", add_help=True)
    parser.add_argument("--module", required=True, help="the .onnx model")
    parser.add_argument("--input", action="append", default=[], help=".npy, in input order")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-iterations", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--max-iterations", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=0, help="0: onnxruntime's default")
    parser.add_argument(
        "--graph-optimization", default="all", choices=["disable", "basic", "extended", "all"]
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return _error("usage", "bad arguments (see --help)", 64)

    import numpy as np

    t0 = time.perf_counter()
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[args.graph_optimization]
        if args.threads > 0:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(args.module, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return _error("load", f"onnxruntime cannot load {Path(args.module).name}: {exc}")
    load_ms = (time.perf_counter() - t0) * 1000.0

    declared = session.get_inputs()
    if len(args.input) != len(declared):
        return _error("input", f"the model has {len(declared)} inputs, {len(args.input)} given")
    feeds: dict[str, np.ndarray] = {}
    described = []
    for meta, path in zip(declared, args.input, strict=True):
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            return _error("input", f"cannot read {Path(path).name}: {exc}")
        feeds[meta.name] = array
        described.append(
            {"file": Path(path).name, "dtype": str(array.dtype), "shape": list(array.shape)}
        )

    try:
        t = time.perf_counter()
        outputs = session.run(None, feeds)
        first_ms = (time.perf_counter() - t) * 1000.0
        for _ in range(max(args.warmup - 1, 0)):
            session.run(None, feeds)
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < args.max_iterations:
            elapsed = time.perf_counter() - start
            if len(samples) >= args.min_iterations and elapsed >= args.min_seconds:
                break
            if samples and elapsed >= args.max_seconds:
                break
            t = time.perf_counter()
            outputs = session.run(None, feeds)
            samples.append((time.perf_counter() - t) * 1000.0)
    except Exception as exc:
        return _error("run", f"onnxruntime failed: {exc}")

    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for i, value in enumerate(outputs):
            array = np.asarray(value)
            np.save(out_dir / f"out{i}.npy", array)
            written.append(
                {"file": f"out{i}.npy", "dtype": str(array.dtype), "shape": list(array.shape)}
            )
    except OSError as exc:
        return _error("output", f"cannot write outputs to {out_dir}: {exc.strerror}")

    print(
        json.dumps(
            {
                "status": "ok",
                "runner_version": RUNNER_VERSION,
                "module": Path(args.module).name,
                "entry": "main",
                "load_ms": load_ms,
                "first_ms": first_ms,
                "warmup": args.warmup,
                "samples_ms": samples,
                "peak_rss_kb": _peak_rss_kb(),
                "outputs": written,
                "inputs": described,
                "threads": args.threads or _default_threads(),
            }
        )
    )
    return 0


def _default_threads() -> int | None:
    """onnxruntime's intra-op threads when none are asked for: one per physical core."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count()
    except ImportError:
        return os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
