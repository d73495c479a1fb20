"""MobileNetV3's activations through the partitioner: Clip with its bounds as inputs (which
TVM's ONNX importer lowers to ``call_tir`` maximum/minimum), hard-swish written out and as the
HardSwish operator, HardSigmoid. Each offloads at the feature levels whose operations express
it (HARD_SWISH from 4, MAXIMUM/MINIMUM from 3, RELU6 from 1), stays on the CPU with its reason
below, and the outputs match onnxruntime either way."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from harness.bench import BenchPlan, Protocol, run_bench
from harness.byoc import partition
from harness.byoc.codegen import build_model
from harness.byoc.dialect import DIALECTS
from harness.byoc.normalize import normalize
from harness.byoc.report import op_calls
from harness.byoc.translate import op_name
from harness.modelio import load, to_relax

import byoc_models
import testmodels

ONCE = Protocol(warmup=0, min_iterations=1, min_seconds=0.0, max_seconds=5)


def _operations(mod: Any, dialect: str, level: int) -> tuple[Any, Counter[str]]:
    """The partition report and the NN operations of its offloaded subgraphs."""
    parted = partition(mod, dialect, {"feature_level": level}, codegen=False)
    operations: Counter[str] = Counter()
    for func in parted.mod.functions.values():
        if func.attrs and "Codegen" in func.attrs:
            model = build_model(func, DIALECTS[dialect], level)
            operations.update(op.code for op in model.operations)
    return parted.report, operations


def test_each_feature_level_offloads_what_its_operations_express(tmp_path: Path) -> None:
    mod = to_relax(load(testmodels.save(byoc_models.hard_activations(), tmp_path, "hard")))
    imported = Counter(op_name(call) for _, call in op_calls(mod["main"]))
    assert imported["relax.call_tir"] == 7  # the importer's 4 Clips: maximum and minimum
    normalized = Counter(op_name(call) for _, call in op_calls(normalize(mod)["main"]))
    assert "relax.call_tir" not in normalized
    assert normalized["relax.clip"] == 5 and normalized["relax.minimum"] == 1

    new, ops7 = _operations(mod, "nnapi", 7)
    assert new["ops_offloaded"] == new["ops_total"] and new["subgraphs"] == 1
    assert new["boundary_bytes"] == 2 * 8 * 6 * 6 * 4  # the input and the output
    assert ops7["HARD_SWISH"] == 2  # spelled out and the HardSwish operator
    assert "RELU6" not in ops7  # the Clip(0, 6) of its own is its conv's fused activation
    assert ops7["MAXIMUM"] == 2 and ops7["MINIMUM"] == 3  # clip to [-0.5, 2], [0, 1]; min 1.5

    neuron, ops_neuron = _operations(mod, "neuron", 0)
    assert neuron["ops_offloaded"] == neuron["ops_total"] and neuron["subgraphs"] == 1
    assert ops_neuron["HARD_SWISH"] == 2

    # Before HARD_SWISH (level 4): each hard-swish as ADD, RELU6, MUL, DIV; still one subgraph.
    old, ops3 = _operations(mod, "nnapi", 3)
    assert old["ops_offloaded"] == old["ops_total"] and old["subgraphs"] == 1
    assert "HARD_SWISH" not in ops3 and ops3["RELU6"] == 2 and ops3["DIV"] == 2

    # Before MAXIMUM and MINIMUM (level 3): the clips to other bounds than relu's stay.
    older, ops2 = _operations(mod, "nnapi", 2)
    assert sorted(c["op"] for c in older["cpu_ops"]) == ["clip", "clip", "minimum"]
    assert all("feature level 3" in c["detail"] for c in older["cpu_ops"])
    assert "MAXIMUM" not in ops2 and ops2["RELU6"] == 2
    assert older["subgraphs"] == 3


def test_the_outputs_match_onnxruntime_at_levels_7_and_2(tmp_path: Path) -> None:
    """(Neuron's HARD_SWISH runs in tests/harness/byoc/test_trained_classifier.py.)"""
    path = testmodels.save(byoc_models.hard_activations(), tmp_path, "hard")
    docs = run_bench(BenchPlan(path, backends=["tvm-nnapi"], protocol=ONCE))
    docs += run_bench(
        BenchPlan(
            path,
            backends=["tvm-nnapi"],
            protocol=ONCE,
            options={"tvm-nnapi": {"feature_level": 2}},
        )
    )
    for doc in docs:
        assert doc.status == "ok", (doc.backend, doc.error)
        assert doc.accuracy is not None and doc.accuracy.passed, doc.accuracy
        assert doc.accuracy.max_abs_err < 1e-5
    assert [d.partition["subgraphs"] for d in docs] == [1, 3]  # type: ignore[index]


def test_a_constant_call_numpy_does_not_evaluate_is_still_folded() -> None:
    """exp is left to Relax's FoldConstant (numpy's may round differently from TVM's)."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            e = bb.emit(relax.op.exp(relax.const(np.ones((1, 4), np.float32))))
            out = bb.emit_output(relax.op.add(x, e))
        bb.emit_func_output(out)
    folded = normalize(bb.get())
    [(_, add)] = list(op_calls(folded["main"]))
    assert op_name(add) == "relax.add"
    constant = add.args[1]
    assert isinstance(constant, tvm.ir.Constant)
    np.testing.assert_allclose(constant.value.numpy(), np.exp(np.ones((1, 4))), rtol=1e-6)
