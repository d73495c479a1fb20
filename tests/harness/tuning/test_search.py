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
    result = search(mod, target, tmp_path, trials=6, population=32, seed=1)
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

    tuned = apply_records(mod, target, tmp_path)
    # The tuned function carries the schedule of a record (which one won depends on the
    # machine's load: not asserted), and computes the same.
    assert scheduled_functions(tuned) == {"fused_conv2d_relu"}
    # Its weight is prepacked: the schedule keeps the kernel in a layout of its own, and the
    # build re-laid out the constant once (the split-off re-layout function is gone).
    names = {gv.name_hint for gv in tuned.functions}
    assert "fused_conv2d_relu_prepacked" in names, names
    assert not any(n.endswith("_weight_prepack") for n in names), names
    # The kernel the conv is called with: the ONNX weight's values, in the schedule's order.
    kernel: list[np.ndarray] = []

    def find(expr: object) -> None:
        if isinstance(expr, relax.Call) and "conv2d" in str(getattr(expr.args[0], "name_hint", "")):
            kernel.append(expr.args[1].fields[1].value.numpy())

    relax.analysis.post_order_visit(tuned["main"].body, find)
    weight = numpy_helper.to_array(conv_relu().graph.initializer[0])
    assert len(kernel) == 1 and kernel[0].size == weight.size
    assert kernel[0].shape != weight.shape or not np.array_equal(kernel[0], weight)
    np.testing.assert_array_equal(np.sort(kernel[0], axis=None), np.sort(weight, axis=None))
    np.testing.assert_allclose(run(tuned), run(mod), rtol=1e-5, atol=1e-5)


def test_no_trials_is_a_clear_error(tmp_path: Path) -> None:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from harness.errors import JobError

    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    with pytest.raises(JobError, match="at least one trial"):
        search(mod, tvm.target.Target({"kind": "llvm"}), tmp_path, trials=0)
