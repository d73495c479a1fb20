"""MetaSchedule tunes with the pinned apache-tvm-ffi (0.1.15.post2 segfaulted in ToJSONGraph):
a few trials on one small conv, records with measured times, and a build with those records
that computes what the untuned build computes."""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.compile.tuned import scheduled_functions
from harness.tuning.search import RECORDS_FILE, WORKLOADS_FILE, apply_records, search

from testmodels import make_model

ROOT = Path(__file__).resolve().parents[3]


def conv_relu(seed: int = 0) -> object:
    rng = np.random.default_rng(seed)
    conv = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    return make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], **conv),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w")],
        "conv_relu",
    )


def test_installed_tvm_ffi_is_the_pinned_one() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = [d for d in deps if d.startswith("apache-tvm-ffi==")]
    assert pinned, "pyproject.toml pins no apache-tvm-ffi version"
    assert version("apache-tvm-ffi") == pinned[0].split("==", 1)[1]


def test_a_few_trials_tune_a_conv_and_its_records_build(tmp_path: Path) -> None:
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    # Two search threads whatever the host has: MetaSchedule's parallel sampling and evolution.
    result = search(mod, target, tmp_path, trials=6, population=32, seed=1, threads=2)
    assert result.tasks == ["fused_conv2d_relu"]
    assert result.trials == 6 and result.records == 6

    workloads = (tmp_path / WORKLOADS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in (tmp_path / RECORDS_FILE).read_text().splitlines()]
    assert len(workloads) == 1 and len(records) == 6
    run_secs = [r[1][1] for r in records]  # [workload index, [trace, run_secs, ...]]
    assert all(secs and all(0 < s < 1 for s in secs) for secs in run_secs)

    x = np.random.default_rng(2).standard_normal((1, 8, 16, 16)).astype(np.float32)

    def run(module: object) -> np.ndarray:
        vm = relax.VirtualMachine(tvm.compile(module, target=target), tvm.cpu())
        return np.asarray(vm["main"](tvm.runtime.tensor(x)).numpy())

    # Every record re-lays out the conv's kernel (MetaSchedule's RewriteLayout, on the weight
    # tuning_prefix marked layout-free), each to its own tiling: its trace's TransformLayout.
    weight = numpy_helper.to_array(conv_relu().graph.initializer[0])
    layouts = [_kernel_layout(r) for r in records]
    # Which record is fastest depends on the machine's load, and a random tiling may happen to
    # keep the kernel's order: the test makes a record that changes the order the winner.
    shape = list(weight.shape)
    relaid = [i for i, im in enumerate(layouts) if list(im.map_shape(shape)) != shape]
    assert relaid, f"none of the 6 records re-lays out the kernel: {layouts}"
    best = min(min(secs) for secs in run_secs)
    records[relaid[0]][1][1] = [best / 2]
    (tmp_path / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))

    tuned = apply_records(mod, target, tmp_path)
    assert scheduled_functions(tuned) == {"fused_conv2d_relu"}
    # Its weight is prepacked: the build re-laid out the constant once (the split-off re-layout
    # function is gone) and the conv is called with the kernel in the winner's layout.
    names = {gv.name_hint for gv in tuned.functions}
    assert "fused_conv2d_relu_prepacked" in names, names
    assert not any(n.endswith("_weight_prepack") for n in names), names
    kernel: list[np.ndarray] = []

    def find(expr: object) -> None:
        if isinstance(expr, relax.Call) and "conv2d" in str(getattr(expr.args[0], "name_hint", "")):
            kernel.append(expr.args[1].fields[1].value.numpy())

    relax.analysis.post_order_visit(tuned["main"].body, find)
    expected = layouts[relaid[0]].map_tensor(tvm.runtime.tensor(weight)).numpy()
    assert len(kernel) == 1 and kernel[0].shape == expected.shape != weight.shape
    np.testing.assert_array_equal(kernel[0], expected)
    np.testing.assert_allclose(run(tuned), run(mod), rtol=1e-5, atol=1e-5)


def _kernel_layout(record: list) -> object:
    """The index map of the TransformLayout in a record's trace (``[workload, [trace, ...]]``,
    the trace ``[instructions, decisions]``, an instruction ``[kind, inputs, attrs, ...]``)."""
    import tvm

    maps = [inst[1][1] for inst in record[1][0][0] if inst[0] == "TransformLayout"]
    assert len(maps) == 1, f"{len(maps)} TransformLayouts in a trace of one conv"
    return tvm.ir.load_json(maps[0])


def test_no_trials_is_a_clear_error(tmp_path: Path) -> None:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from harness.errors import JobError

    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    with pytest.raises(JobError, match="at least one trial"):
        search(mod, tvm.target.Target({"kind": "llvm"}), tmp_path, trials=0)


def test_a_search_on_no_thread_is_a_clear_error(tmp_path: Path) -> None:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from harness.errors import JobError
    from harness.tuning.search import search_threads

    assert search_threads() >= 1
    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    with pytest.raises(JobError, match="at least one thread, not 0"):
        search(mod, tvm.target.Target({"kind": "llvm"}), tmp_path, trials=2, threads=0)
    assert not (tmp_path / RECORDS_FILE).exists()


def _scheduled_hashes(work_dir: Path) -> list[int]:
    """The structural hash of each record's scheduled function, rebuilt from its trace."""
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_hash

    database = ms.database.JSONDatabase(work_dir=str(work_dir))
    return [
        int(structural_hash(r.as_measure_candidate().sch.mod))
        for r in database.get_all_tuning_records()
    ]


@pytest.mark.parametrize("strategy", ["replay-trace", "evolutionary"])
def test_a_search_continued_from_its_records_measures_no_candidate_again(
    tmp_path: Path, strategy: str
) -> None:
    """Found in CI (a SIGKILLed tuning that resumed measured one of its first batch again):
    MetaSchedule forgets between searches what it measured. The same search twice, with the
    same seed, samples the same candidates (replay-trace does so exactly): the second must
    measure only new ones."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    first = search(mod, target, tmp_path, trials=4, population=16, seed=3, strategy=strategy)
    second = search(mod, target, tmp_path, trials=4, population=16, seed=3, strategy=strategy)
    assert (first.trials, second.trials, second.records) == (4, 4, 8)
    hashes = _scheduled_hashes(tmp_path)
    assert len(hashes) == 8 and len(set(hashes)) == 8, hashes
