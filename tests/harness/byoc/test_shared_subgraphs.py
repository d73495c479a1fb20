"""Subgraphs of the same structure with different weights (a trained network's repeated
blocks). Partitioning made them one function called at several call sites, and the generated
C, which builds its accelerator model once with the weights of its first call, ran the later
call sites with the first one's weights: the MobileNetV3 text-direction classifier came out at
max abs err 0.419 on tvm-nnapi and tvm-neuron, found by ``accuracy.first_divergence`` (the
10th offloaded call, the 2nd call of its function). Now every call site has a function of its
own, and a subgraph called with other weights than its model's fails loudly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.backends import get_backend
from harness.bench import BenchPlan, Protocol, run_bench
from harness.byoc import partition
from harness.byoc.codegen import CONST_PARAMS_ATTR
from harness.modelio import load, to_relax

import byoc_models
import testmodels

FAST = Protocol(warmup=1, min_iterations=3, min_seconds=0.0, max_seconds=5)


def _offloaded_calls(mod: Any) -> list[str]:
    """The offloaded functions main calls, in order, one entry per call."""
    from tvm import relax

    offloaded = {gv for gv, f in mod.functions.items() if f.attrs and "Codegen" in f.attrs}
    calls: list[str] = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op in offloaded:
                calls.append(value.op.name_hint)
    return calls


@pytest.mark.parametrize("dialect", ["nnapi", "neuron"])
def test_each_repeated_block_gets_a_function_of_its_own(dialect: str, tmp_path: Path) -> None:
    model = load(testmodels.save(byoc_models.repeated_block(), tmp_path, "rep"))
    done = partition(to_relax(model), dialect, {}, codegen=False)
    calls = _offloaded_calls(done.mod)
    assert len(calls) == 2 and len(set(calls)) == 2, calls
    assert all(name.endswith(f"_{dialect}") for name in calls)
    for name in calls:
        func = done.mod[name]
        assert list(func.attrs[CONST_PARAMS_ATTR]) == [1, 2]  # weights and bias
    # Both blocks' operators count as offloaded: conv, bias add, relu twice (not the Sin).
    report = done.report
    assert (report["subgraphs"], report["ops_offloaded"], report["ops_total"]) == (2, 6, 7)


def test_repeated_blocks_match_onnxruntime(tmp_path: Path) -> None:
    """Failed before: max abs err 2.63, cosine 0.368 on both dialects, the first divergence at
    the second call of the shared function."""
    path = testmodels.save(byoc_models.repeated_block(), tmp_path, "rep")
    plan = BenchPlan(path, backends=["tvm-nnapi", "tvm-neuron"], devices=["local"], protocol=FAST)
    for doc in run_bench(plan):
        assert doc.status == "ok", (doc.backend, doc.error, doc.accuracy)
        assert doc.accuracy is not None and doc.accuracy.max_abs_err < 1e-4
        assert doc.partition is not None
        assert doc.partition["subgraphs"] == 2


def test_a_subgraph_called_with_other_weights_fails(tmp_path: Path) -> None:
    """The generated C's guard, called directly: the same weights again (the same buffer, or
    a copy) run; other weights are an error naming the argument."""
    import tvm

    path = testmodels.save(byoc_models.repeated_block(), tmp_path, "rep")
    model = load(path)
    artifact = get_backend("tvm-nnapi").compile(model, target="host", options=None)
    [first, _] = _offloaded_calls(partition(to_relax(model), "nnapi", {}, codegen=False).mod)
    subgraph = tvm.runtime.load_module(str(artifact.library)).get_function(first, True)
    rng = np.random.default_rng(1)
    x = tvm.runtime.tensor(rng.standard_normal((1, 8, 6, 6)).astype(np.float32))
    weights = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    w = tvm.runtime.tensor(weights)
    b = tvm.runtime.tensor(rng.standard_normal((1, 8, 1, 1)).astype(np.float32))
    out = tvm.runtime.empty((1, 8, 6, 6), "float32")
    subgraph(x, w, b, out)
    before = out.numpy().copy()
    moved = tvm.runtime.tensor(weights.copy())
    subgraph(x, moved, b, out)  # moved, same bytes
    np.testing.assert_array_equal(out.numpy(), before)
    with pytest.raises(Exception, match="argument 1 holds other weights"):
        subgraph(x, tvm.runtime.tensor(weights + 1.0), b, out)
    # The moved buffer, now holding other weights: its address once passed the check, and a
    # freed buffer's address comes back with other contents (this failed when the guard
    # remembered the last address that passed).
    moved.copyfrom(weights + 1.0)
    with pytest.raises(Exception, match="argument 1 holds other weights"):
        subgraph(x, moved, b, out)
