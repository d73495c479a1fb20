"""A build applies, names and counts only the records of its own model's workloads: tuning one
model for a device class leaves the tuned key and provenance of an unrelated model (other
shapes) as they were, and a record for a workload of that model changes them. The model's
workloads are found once per untuned artifact key and kept in the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_search import conv_relu

from harness.backends import get_backend
from harness.compile.tuned import TUNING_PREFIX_VERSION
from harness.config import get_settings
from harness.db import scoped
from harness.db.costs import local_store
from harness.devices import open_device
from harness.errors import JobError
from harness.modelio import load
from harness.tuning.search import WORKLOADS_FILE, search
from harness.tuning.session import records_key_for
from harness.tuning.store import save_records

import testmodels


def dense_relu(seed: int = 0) -> object:
    """A model sharing no layer shape with conv_relu."""
    rng = np.random.default_rng(seed)
    return testmodels.make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Relu", ["h"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w")],
        "dense_relu",
    )


def conv_sin_twice(seed: int = 0) -> object:
    """conv -> Sin -> conv (stride 2) -> Sin: NNAPI takes the convs, not the Sins."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((8, 8, 3, 3)).astype(np.float32) for _ in range(2)]
    return testmodels.make_model(
        [
            helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Sin", ["c1"], ["s1"]),
            helper.make_node(
                "Conv", ["s1", "w2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], strides=[2, 2]
            ),
            helper.make_node("Sin", ["c2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(w, f"w{i + 1}") for i, w in enumerate(weights)],
        "conv_sin_twice",
    )


def _tune(model: object, work: Path, trials: int, seed: int) -> list[str]:
    """Records of ``model``'s tasks in ``work`` (measured here); their workloads' hashes."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    search(from_onnx(model, keep_params_in_input=False), target, work, trials=trials, seed=seed)
    lines = (work / WORKLOADS_FILE).read_text().splitlines()
    return [str(json.loads(line)[0]) for line in lines]


def test_tuning_one_model_leaves_another_models_key_and_provenance(
    home: Path, tmp_path: Path
) -> None:
    backend = get_backend("tvm-cpu")
    conv = load(testmodels.save(conv_relu(), tmp_path, "conv"))  # type: ignore[arg-type]
    dense = load(testmodels.save(dense_relu(), tmp_path, "dense"))  # type: ignore[arg-type]
    facts = open_device("local").facts()
    key = records_key_for(facts)
    sessions = scoped(local_store())
    options = backend.resolve_options(None)

    def records(model: object, mode: str = "auto") -> object:
        return backend.records_for({"tuning": mode}, facts, sessions, model=model)  # type: ignore[arg-type]

    def key_of(model: object) -> str:
        return backend.artifact_key(model, facts.target, options, records(model))  # type: ignore[arg-type]

    untuned_dense = backend.artifact_key(dense, facts.target, options)
    workloads_dir = get_settings().cache_path / "tuning" / "workloads"
    cached = workloads_dir / f"{untuned_dense}.json"
    assert records(dense) is None  # a class without records: untuned, nothing lowered
    assert not cached.exists()

    conv_work = tmp_path / "conv-records"
    [conv_workload] = _tune(conv_relu(), conv_work, trials=4, seed=2)
    with sessions() as session:
        assert save_records(conv_work, key, session=session) == 4

    conv_tuned = records(conv)
    assert conv_tuned is not None
    assert conv_tuned.provenance == {
        "records": conv_tuned.digest,
        "trials": 4,
        "workloads": 1,
        "device_class": key.device_class,
    }
    # The conv's records cover nothing of the dense model: it stays untuned, its key as it was.
    assert records(dense) is None
    assert key_of(dense) == untuned_dense
    with pytest.raises(JobError, match="cover none of this model's 1 TIR function"):
        records(dense, "on")
    # Its workloads were found once and cached under its untuned key.
    found = json.loads(cached.read_text())
    assert found["prefix"] == TUNING_PREFIX_VERSION
    [dense_workload] = found["workloads"]
    assert dense_workload != conv_workload
    conv_cached = workloads_dir / f"{backend.artifact_key(conv, facts.target, options)}.json"
    assert json.loads(conv_cached.read_text())["workloads"] == [conv_workload]
    # A file an older edgefarm cached (its prefix made other hashes) is not believed: with
    # it, the conv's own records would cover "none of this model's" workloads.
    conv_cached.write_text(json.dumps(["1234"]))
    assert records(conv) is not None
    assert json.loads(conv_cached.read_text())["workloads"] == [conv_workload]
    conv_cached.write_text(json.dumps({"prefix": TUNING_PREFIX_VERSION - 1, "workloads": ["1"]}))
    assert records(conv) is not None

    conv_key = key_of(conv)
    dense_work = tmp_path / "dense-records"
    assert _tune(dense_relu(), dense_work, trials=3, seed=5) == [dense_workload]
    with sessions() as session:
        added = save_records(dense_work, key, session=session)
    assert added > 0

    # A record of the dense model's workload tunes it; the conv's key and provenance stay.
    dense_tuned = records(dense)
    assert dense_tuned is not None
    assert (dense_tuned.provenance["trials"], dense_tuned.provenance["workloads"]) == (added, 1)
    assert dense_tuned.digest != conv_tuned.digest
    assert key_of(dense) != untuned_dense
    assert records(conv) == conv_tuned
    assert key_of(conv) == conv_key
    assert records(dense, "off") is None


@pytest.mark.parametrize("offload", [None, "nnapi"])
def test_workload_hashes_are_metaschedules_own(offload: str | None) -> None:
    """harness.compile.tuned.workload_hashes wraps each function as MetaSchedule does, without
    importing it: the hashes are those of MetaSchedule's tasks (a TVM upgrade that changes
    how MetaSchedule wraps them shows here)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx
    from tvm_ffi import structural_hash

    from harness.compile.lowering import Lowering
    from harness.compile.tuned import workload_hashes
    from harness.tuning.search import tasks_of

    target = tvm.target.Target({"kind": "llvm"})
    mod = from_onnx(conv_sin_twice(), keep_params_in_input=False)
    mod = Lowering(offload).lower(mod, get_backend("tvm-nnapi").resolve_options(None))
    tasks = tasks_of(mod, target)
    names = [t.task_name for t in tasks]
    if offload is None:
        assert len(names) >= 2 and any("conv2d" in n for n in names), names
    else:  # the CPU part: the two Sins
        assert len(names) == 2 and all("sin" in n and "conv" not in n for n in names), names
    expected = sorted({str(int(structural_hash(t.dispatched[0]))) for t in tasks})
    assert workload_hashes(mod, target) == expected


def test_weights_are_marked_layout_free_as_relax_marks_them() -> None:
    """tuning_prefix marks the weights (constant parameters) of each TIR function layout-free
    as Relax's AttachAttrLayoutFreeBuffers does, function for function, but keeps their names
    (the pass renames them all: tasks would be 'fused_conv2d_relu1', 'reshape11')."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from tvm_ffi import structural_hash

    from harness.compile.tuned import LAYOUT_FREE, tuning_prefix

    target = tvm.target.Target({"kind": "llvm"})
    mod = from_onnx(conv_sin_twice(), keep_params_in_input=False)
    ours = tuning_prefix(mod, target)
    unmarked = ours.clone()
    for gv, func in ours.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None:
            unmarked.update_func(gv, func.without_attr(LAYOUT_FREE))
    with target:
        theirs = relax.transform.AttachAttrLayoutFreeBuffers()(unmarked)
    # The pass marks a function without weights (the channels-last transposes) with an empty
    # list; tuning_prefix leaves it unmarked.
    for gv, func in list(theirs.functions.items()):
        attrs = func.attrs if isinstance(func, tvm.tirx.PrimFunc) else None
        if attrs is not None and LAYOUT_FREE in attrs and len(attrs[LAYOUT_FREE]) == 0:
            theirs.update_func(gv, func.without_attr(LAYOUT_FREE))

    def tir(module: tvm.IRModule) -> dict[str, int]:
        return {
            gv.name_hint: int(structural_hash(f))
            for gv, f in module.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc)
        }

    assert set(tir(ours)) == set(tir(unmarked))
    assert sorted(tir(ours).values()) != sorted(tir(unmarked).values())  # something is marked
    assert sorted(tir(ours).values()) == sorted(tir(theirs).values())
    assert set(tir(theirs)) != set(tir(ours))  # renamed by the pass
    marked = {
        gv.name_hint: [int(i) for i in f.attrs[LAYOUT_FREE]]
        for gv, f in ours.functions.items()
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and LAYOUT_FREE in f.attrs
    }
    # The convolutions' kernels (argument 1); the Sins have no weight.
    assert marked and all(v == [1] and "conv2d" in n for n, v in marked.items()), marked
