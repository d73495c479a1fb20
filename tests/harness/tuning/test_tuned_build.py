"""Builds apply the tuning records of the device's class: ``edgefarm bench`` on an emulated
phone is tuned by default where records exist (the artifact key and the provenance name them)
and untuned when asked; a second model with the same layer shapes finds its task tuned; a
tuned build required where no records exist is a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from test_search import conv_relu

from harness.bench import BenchPlan, Protocol, run_bench
from harness.db import scoped
from harness.db.costs import local_store
from harness.devices import open_device
from harness.devices.emulator import EmulatedPhone
from harness.tuning.session import records_key_for, tune_model
from harness.tuning.store import save_records

import testmodels

FAST = Protocol(warmup=1, min_iterations=5, min_seconds=0.02, max_seconds=5.0)


def conv_relu_then_softmax(seed: int) -> object:
    """Another model holding conv_relu's layer (same shapes, other weights)."""
    rng = np.random.default_rng(seed)
    conv = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    return testmodels.make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], **conv),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Softmax", ["r"], ["y"], axis=1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w")],
        "conv_softmax",
    )


def _bench(path: Path, address: str, tuning: str | None = None) -> dict[str, Any]:
    options = {"tvm-cpu": {"tuning": tuning}} if tuning else {}
    plan = BenchPlan(path, devices=[address], protocol=FAST, options=options)  # type: ignore[arg-type]
    [doc] = run_bench(plan)
    return doc.dump()


def test_builds_apply_the_classes_records(home: Path, tmp_path: Path) -> None:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from harness.tuning.search import search

    first = testmodels.save(conv_relu(), tmp_path, "conv")
    second = testmodels.save(conv_relu_then_softmax(7), tmp_path, "conv_softmax")
    with EmulatedPhone("pixel-3a") as phone:
        address = f"tcp:{phone.serial}"
        device = open_device(address)
        facts = device.facts()
        untouched = _bench(first, address)  # no records yet: untuned, as before tuning
        assert untouched["status"] == "ok", untouched["error"]
        assert "tuning" not in untouched["provenance"]

        # Records for this phone's class (measured here: the store does not know how).
        work = tmp_path / "records"
        target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
        search(from_onnx(conv_relu(), keep_params_in_input=False), target, work, trials=4, seed=2)
        key = records_key_for(facts)
        with scoped(local_store())() as session:
            assert save_records(work, key, session=session) == 4

        tuned = _bench(first, address)
        untuned = _bench(first, address, "off")
        # The second model's conv is the first's workload: tuning it measures nothing new.
        # (Not confirmed: timing the conv's records again would rightly change the first
        # model's key, which applies them; tests/harness/tuning/test_confirm.py.)
        report = tune_model(second, device, local_store(), trials=4, confirm=0)
        device.close()
        tuned_second = _bench(second, address)
        # The second model's softmax records are not the first model's: its build is the same.
        tuned_again = _bench(first, address)

    for doc in (tuned, untuned, tuned_second, tuned_again):
        assert doc["status"] == "ok", doc["error"]
        assert doc["accuracy"]["passed"]
    assert tuned["provenance"]["tuning"] == {
        "records": tuned["provenance"]["tuning"]["records"],
        "trials": 4,
        "workloads": 1,
        "device_class": key.device_class,
        "scheduled": ["fused_conv2d_relu"],
    }
    assert len(tuned["provenance"]["tuning"]["records"]) == 16
    assert "tuning" not in untuned["provenance"]
    assert untuned["provenance"]["artifact_key"] == untouched["provenance"]["artifact_key"]
    assert tuned["provenance"]["artifact_key"] != untuned["provenance"]["artifact_key"]
    # Built after the second model's softmax was tuned: its records are the conv's 4 and the
    # softmax's, on two workloads, under another digest.
    second_tuning = tuned_second["provenance"]["tuning"]
    others = [t for t in report.tasks if "conv2d" not in t.name]
    measured = sum(t.measured for t in others)
    assert (second_tuning["trials"], second_tuning["workloads"]) == (4 + measured, 1 + len(others))
    assert second_tuning["records"] != tuned["provenance"]["tuning"]["records"]
    assert "fused_conv2d_relu" in second_tuning["scheduled"]
    # The first model's build names only its own records: the softmax's left it as it was.
    assert tuned_again["provenance"]["artifact_key"] == tuned["provenance"]["artifact_key"]
    assert tuned_again["provenance"]["cache_hit"]
    assert tuned_again["provenance"]["tuning"] == tuned["provenance"]["tuning"]

    conv_task = next(t for t in report.tasks if "conv2d" in t.name)
    assert (conv_task.before, conv_task.measured) == (4, 0)
    assert conv_task.name in report.reused
    # Its softmax is a new workload: measured now (on the phone).
    assert any(t.measured > 0 for t in report.tasks if t is not conv_task)


def test_tuned_without_records_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    path = testmodels.save(conv_relu(), tmp_path, "conv")
    doc = run_bench(BenchPlan(path, protocol=FAST, options={"tvm-cpu": {"tuning": "on"}}))[0]
    assert doc.status == "failed"
    assert doc.error is not None and "no tuning records for local:" in doc.error.message
    doc = run_bench(BenchPlan(path, protocol=FAST, options={"tvm-cpu": {"tuning": "yes"}}))[0]
    assert (
        doc.error is not None and "option tuning is auto, on, off, unconfirmed" in doc.error.message
    )


def test_a_model_joining_branches_with_max_tunes_and_builds_right(
    home: Path, tmp_path: Path
) -> None:
    """openWakeWord's pattern (ONNX's Max of two LeakyReLU branches): its tuning failed in
    TVM's ConvertLayout ("Invalid SLayout", a raw internal error). It tunes now, no task holds
    the stacked Max or a LeakyReLU, and the tuned build computes what onnxruntime does."""
    path = testmodels.save(testmodels.branch_max("Max"), tmp_path, "branch_max")
    device = open_device("local")
    try:
        report = tune_model(path, device, local_store(), trials=1, confirm=0)
    finally:
        device.close()
    names = [t.name for t in report.tasks]
    assert names and not [n for n in names if "stack" in n or "leaky" in n], names
    assert sum(t.measured for t in report.tasks) == len(names)
    doc = _bench(path, "local")
    assert doc["status"] == "ok", doc["error"]
    assert doc["accuracy"]["passed"] and doc["accuracy"]["max_abs_err"] < 1e-4
    assert doc["provenance"]["tuning"]["workloads"] == len(names)
