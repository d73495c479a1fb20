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
    # One search thread: with more, which thread samples which candidate depends on the load
    # (the CI of 2026-12-04 drew two new candidates in the second search's tries, not four).
    common = {"population": 16, "seed": 3, "strategy": strategy, "threads": 1}
    first = search(mod, target, tmp_path, trials=4, **common)  # type: ignore[arg-type]
    second = search(mod, target, tmp_path, trials=4, **common)  # type: ignore[arg-type]
    assert (first.trials, second.trials, second.records) == (4, 4, 8)
    hashes = _scheduled_hashes(tmp_path)
    assert len(hashes) == 8 and len(set(hashes)) == 8, hashes


def two_convs(seed: int = 0) -> object:
    """A 3x3 conv+relu, then a 1x1 conv: two tasks."""
    rng = np.random.default_rng(seed)
    return make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Conv", ["r", "w1"], ["y"], kernel_shape=[1, 1]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w1"),
        ],
        "two_convs",
    )


def test_searches_task_by_task_share_one_open_database(tmp_path: Path) -> None:
    """A tuning opens its work directory once (parsing thousands of records takes a minute)
    and searches task by task with it: what each search commits is in the open database and
    in its files alike, counted per task, and the tasks' workloads are named as the work
    directory (and so the store) names them."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from harness.tuning.search import open_database, task_workloads, tasks_of, trials_done

    mod = from_onnx(two_convs(), keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    tasks = tasks_of(mod, target)  # the two convs (channels-last: and the transposes)
    names = [t.task_name for t in tasks if "conv2d" in t.task_name]
    assert len(names) == 2, [t.task_name for t in tasks]
    database = open_database(tmp_path)
    for name, trials in zip(names, (3, 2), strict=True):
        common = {"seed": 3, "tasks": tasks, "only": [name], "database": database}
        result = search(mod, target, tmp_path, trials=trials, **common)  # type: ignore[arg-type]
        assert (result.tasks, result.trials) == ([name], trials)
    assert len(database) == 5 == len(open_database(tmp_path))
    done = {t.task_name: 0 for t in tasks} | dict(zip(names, (3, 2), strict=True))
    assert trials_done(tasks, tmp_path, database) == trials_done(tasks, tmp_path) == done
    stored = [json.loads(line)[0] for line in (tmp_path / WORKLOADS_FILE).read_text().splitlines()]
    convs = [t for t in tasks if t.task_name in names]
    assert sorted(stored) == task_workloads(convs)


def test_a_search_on_an_open_database_skips_what_it_got_in_this_process(tmp_path: Path) -> None:
    """The records an open database got in this process have not made the trip through its
    files that the candidates' hashes make (an annotation's ``True`` reads back as ``1``): the
    same replay twice on one open database measures nothing twice (without comparing both
    sides after that trip, the second measured the first's three again)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from harness.tuning.search import open_database

    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    database = open_database(tmp_path)
    common = {"strategy": "replay-trace", "seed": 5, "database": database, "threads": 1}
    first = search(mod, target, tmp_path, trials=3, **common)  # type: ignore[arg-type]
    second = search(mod, target, tmp_path, trials=3, **common)  # type: ignore[arg-type]
    hashes = _scheduled_hashes(tmp_path)
    assert first.trials == 3 and len(hashes) == 3 + second.trials
    assert len(set(hashes)) == len(hashes), hashes
