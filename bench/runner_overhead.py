"""How much the native runner adds to a model's latency, against TVM's own in-process timer.

For the same artifact and inputs, compare the median of the runner's per-call samples with the
median of ``vm.time_evaluator("main", tvm.cpu(), number=N, repeat=R)``, measured side by side in
one process tree, interleaving the two over a few rounds so drift (frequency, temperature,
other load) hits both alike. Models: a MobileNet-like CNN (depthwise separable convolutions,
1x3x32x32) and an MLP. Not a test: it prints a table.

    .venv/bin/python bench/runner_overhead.py [--rounds 5] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from harness.runner import RunnerOk, build_host_runner, parse_runner_output

OPSET = [helper.make_opsetid("", 17)]


def _weight(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    data = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return numpy_helper.from_array(data, name)


def mobilenet_like() -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """A stem conv, four depthwise-separable blocks, global pooling and a classifier."""
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(x: str, out: str, cin: int, cout: int, k: int, stride: int, group: int) -> str:
        w = f"{out}_w"
        inits.append(_weight(rng, w, (cout, cin // group, k, k)))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{out}_b"))
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, w, f"{out}_b"],
                [f"{out}_c"],
                pads=[pad] * 4,
                strides=[stride, stride],
                group=group,
            )
        )
        nodes.append(helper.make_node("Clip", [f"{out}_c", "zero", "six"], [out]))  # ReLU6
        return out

    inits += [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
    ]
    x = conv("x", "stem", 3, 16, 3, 2, 1)
    channels = 16
    for i, (cout, stride) in enumerate([(32, 1), (64, 2), (64, 1), (128, 2)]):
        x = conv(x, f"dw{i}", channels, channels, 3, stride, channels)
        x = conv(x, f"pw{i}", channels, cout, 1, 1, 1)
        channels = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    inits.append(_weight(rng, "fc_w", (10, channels)))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1))
    graph = helper.make_graph(
        nodes,
        "mobilenet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=OPSET)
    return model, {"x": [1, 3, 32, 32]}


def mlp() -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    rng = np.random.default_rng(1)
    sizes = [256, 512, 512, 10]
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        inits.append(_weight(rng, f"w{i}", (a, b)))
        inits.append(numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]))
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=OPSET)
    return model, {"x": [1, 256]}


def runner_median_ms(runner: Path, module: Path, inp: Path, seconds: float) -> tuple[float, int]:
    proc = subprocess.run(
        [
            str(runner),
            "--module",
            str(module),
            "--input",
            str(inp),
            "--warmup",
            "20",
            "--min-iterations",
            "50",
            "--min-seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = parse_runner_output(proc.stdout, stderr=proc.stderr, returncode=proc.returncode)
    if not isinstance(report, RunnerOk):
        raise SystemExit(f"runner failed at {report.stage}: {report.message}")
    return statistics.median(report.samples_ms), len(report.samples_ms)


def evaluator_median_ms(
    vm: relax.VirtualMachine, x: tvm.runtime.Tensor, seconds: float, call_ms: float
) -> tuple[float, int]:
    # Single calls (number=1) are what the runner samples; repeat to fill about `seconds`.
    repeat = max(50, int(seconds * 1000 / max(call_ms, 1e-3)))
    repeat = min(repeat, 200_000)
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat, min_repeat_ms=0)
    result = timer(x)
    return float(np.median(np.asarray(result.results)) * 1000.0), repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = parser.parse_args()

    runner = build_host_runner()
    target = tvm.target.Target({"kind": "llvm"})
    rows: list[tuple[str, list[float], list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="edgefarm-overhead-") as tmp:
        for name, make in [
            ("mobilenet-like 1x3x32x32", mobilenet_like),
            ("mlp 256-512-512-10", mlp),
        ]:
            model, shapes = make()
            mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
            module = Path(tmp) / f"{make.__name__}.so"
            tvm.compile(mod, target=target).export_library(str(module))
            (shape,) = shapes.values()
            x_np = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
            inp = Path(tmp) / f"{make.__name__}.npy"
            np.save(inp, x_np)

            # The same file both ways: the runner loads it, and so does this process.
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(module)), tvm.cpu())
            x = tvm.runtime.tensor(x_np)
            for _ in range(20):
                vm["main"](x)
            runner_ms: list[float] = []
            eval_ms: list[float] = []
            for r in range(args.rounds):
                # Alternate which goes first, so neither always inherits the other's state.
                order = ("runner", "evaluator") if r % 2 == 0 else ("evaluator", "runner")
                for who in order:
                    if who == "runner":
                        ms, n = runner_median_ms(runner, module, inp, args.seconds)
                        runner_ms.append(ms)
                    else:
                        guess = runner_ms[-1] if runner_ms else 0.1
                        ms, n = evaluator_median_ms(vm, x, args.seconds, guess)
                        eval_ms.append(ms)
                    print(f"  {name}  round {r + 1}  {who:9s} median {ms:9.4f} ms  ({n} calls)")
            rows.append((name, runner_ms, eval_ms))

    print()
    header = f"{'model':28s} {'runner ms':>10s} {'time_eval ms':>13s} {'ratio':>6s}"
    print(f"{header}   {'best runner':>11s} {'best eval':>10s} {'ratio':>6s}")
    for name, runner_round_ms, eval_round_ms in rows:
        med_r, med_e = statistics.median(runner_round_ms), statistics.median(eval_round_ms)
        best_r, best_e = min(runner_round_ms), min(eval_round_ms)
        print(
            f"{name:28s} {med_r:10.4f} {med_e:13.4f} {med_r / med_e:6.3f}   "
            f"{best_r:11.4f} {best_e:10.4f} {best_r / best_e:6.3f}"
        )
    print(
        "(per-call medians: median over rounds, and best round; ratio = runner / time_evaluator."
        "\n The best round is the least disturbed by other load on the machine.)"
    )


if __name__ == "__main__":
    main()
