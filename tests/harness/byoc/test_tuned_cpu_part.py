"""The BYOC backends' CPU parts apply the device class's tuning records: the partition first,
then the TIR functions left on the CPU scheduled by their records (named in the provenance);
the outputs still match onnxruntime, and an untuned build is the build it was before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.backends import get_backend
from harness.bench import BenchPlan, Protocol, run_bench
from harness.db import scoped
from harness.db.costs import local_store
from harness.devices import open_device
from harness.tuning.search import search
from harness.tuning.session import records_key_for
from harness.tuning.store import save_records

import byoc_models
import testmodels

ROOT = Path(__file__).resolve().parents[3]
FAST = Protocol(warmup=1, min_iterations=5, min_seconds=0.02, max_seconds=5.0)


def _bench(path: Path, tuning: str | None = None) -> dict[str, dict[str, Any]]:
    backends = ["tvm-nnapi", "tvm-neuron"]
    options = {b: {"tuning": tuning} for b in backends} if tuning else {}
    plan = BenchPlan(path, backends=backends, protocol=FAST, options=options)  # type: ignore[arg-type]
    docs = [doc.dump() for doc in run_bench(plan)]
    for doc in docs:
        assert doc["status"] == "ok", (doc["backend"], doc["error"])
        assert doc["accuracy"]["passed"], doc["accuracy"]  # against onnxruntime
    return {doc["backend"]: doc for doc in docs}


def test_the_cpu_part_of_an_offloading_build_applies_the_records(
    home: Path, tmp_path: Path
) -> None:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    # dense -> Sin -> dense: both denses offloaded, the Sin alone on the CPU.
    path = testmodels.save(byoc_models.sin_in_the_middle(), tmp_path, "sin")
    before = _bench(path)  # no records: untuned
    for doc in before.values():
        assert "tuning" not in doc["provenance"]
        assert doc["partition"]["cpu_ops"] and doc["partition"]["ops_offloaded"] > 0

    # Records for the CPU part's function, measured here: tuned as the build lowers it (the
    # partition first; the whole model's tasks fuse the Sin into the first dense instead).
    backend = get_backend("tvm-nnapi")
    mod = from_onnx(byoc_models.sin_in_the_middle(), keep_params_in_input=False)
    cpu_part = backend.lowering.lower(mod, backend.resolve_options(None))
    work = tmp_path / "records"
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    result = search(cpu_part, target, work, trials=3, seed=1)
    assert result.tasks == ["tir_sin"]
    key = records_key_for(open_device("local").facts())
    with scoped(local_store())() as session:
        saved = save_records(work, key, session=session)
    assert saved > 0

    tuned = _bench(path)
    untuned = _bench(path, "off")
    for name in ("tvm-nnapi", "tvm-neuron"):
        provenance = tuned[name]["provenance"]
        assert provenance["tuning"] == {
            "records": provenance["tuning"]["records"],
            "trials": saved,
            "workloads": 1,
            "device_class": key.device_class,
            "scheduled": ["tir_sin"],
        }
        # The same offload as untuned: the records change only how the CPU part is built.
        assert tuned[name]["partition"] == before[name]["partition"]
        assert provenance["artifact_key"] != before[name]["provenance"]["artifact_key"]
        assert "tuning" not in untuned[name]["provenance"]
        assert (
            untuned[name]["provenance"]["artifact_key"]
            == before[name]["provenance"]["artifact_key"]
        )
        assert untuned[name]["provenance"]["cache_hit"]


def test_bench_tuned_asks_the_offloading_backends_for_records(home: Path, tmp_path: Path) -> None:
    path = testmodels.save(byoc_models.sin_in_the_middle(), tmp_path, "sin")
    command = [sys.executable, "-m", "harness.cli", "bench", str(path), "--tuned"]
    command += [
        "-b",
        "tvm-nnapi",
        "-b",
        "tvm-neuron",
        "-b",
        "ort",
        "--json",
        str(tmp_path / "r.json"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    docs = {d["backend"]: d for d in json.loads((tmp_path / "r.json").read_text())}
    for name in ("tvm-nnapi", "tvm-neuron"):  # --tuned is tuning: on, and the class has none
        assert docs[name]["status"] == "failed"
        assert "no tuning records for local:" in docs[name]["error"]["message"]
    assert docs["ort"]["status"] == "ok"  # ort has no records to apply


def _tune_cpu_part(path: Path, options: dict[str, Any] | None, *, trials: int) -> Any:
    """What ``edgefarm tune PATH --backend tvm-nnapi`` does on this machine (batches of
    ``trials``, seed 1)."""
    from harness.backends import cpu_part
    from harness.tuning.session import tune_model

    device = open_device("local")
    try:
        lower = cpu_part("tvm-nnapi", device.facts(), options)
        return tune_model(
            path, device, local_store(), trials=trials, batch=trials, seed=1, lower=lower
        )
    finally:
        device.close()


def test_edgefarm_tune_with_a_byoc_backend_tunes_what_its_partition_leaves_on_the_cpu(
    home: Path, tmp_path: Path
) -> None:
    """``edgefarm tune --backend tvm-nnapi`` partitions as the device's build does and searches
    the CPU part's functions (the Sin between two offloaded denses), not the whole model's
    (where the Sin is fused into the first dense); the next tvm-nnapi build applies them."""
    path = testmodels.save(byoc_models.sin_in_the_middle(), tmp_path, "sin")
    report = _tune_cpu_part(path, None, trials=3)
    # An elementwise Sin has one schedule (no decision to search): measured once.
    assert [(t.name, t.measured) for t in report.tasks] == [("tir_sin", 1)]
    assert report.failed == 0 and report.saved == 1
    tuned = _bench(path)["tvm-nnapi"]
    assert tuned["provenance"]["tuning"]["scheduled"] == ["tir_sin"]
    assert tuned["provenance"]["tuning"]["trials"] == 1
    assert tuned["accuracy"]["passed"]


def _cpu_part_tasks(path: Path, options: dict[str, Any]) -> set[str]:
    """The tasks ``edgefarm tune PATH --backend tvm-nnapi`` would search (as tune_model
    extracts them: the model imported, partitioned, lowered for this machine)."""
    from harness.backends import cpu_part
    from harness.compile.targets import get_target
    from harness.modelio import load, to_relax
    from harness.tuning.search import tasks_of
    from harness.tuning.session import device_cores, tuning_target

    device = open_device("local")
    try:
        facts = device.facts()
        lower = cpu_part("tvm-nnapi", facts, options)
        assert lower is not None
        mod = lower(to_relax(load(path, [])))
        target = tuning_target(get_target(facts.target), device_cores(device))
    finally:
        device.close()
    return {t.task_name for t in tasks_of(mod, target)}


def test_a_cpu_part_with_convolutions_in_a_row_is_tuned_channels_last_and_stays_right(
    home: Path, tmp_path: Path
) -> None:
    """Tuned builds lay 2-D convolutions out channels-last where a stretch of them repays its
    two transposes: two dilated convolutions in a row left on the CPU (NNAPI takes dilation
    from feature level 3) become NHWC between a transpose in and one out, and the tuned
    build's outputs match onnxruntime's; the same two each alone between offloaded subgraphs
    stay NCHW (no transpose among the tasks a tuning would search)."""
    options: dict[str, Any] = {"feature_level": 2}
    apart = testmodels.save(byoc_models.dilated_convs(offload_between=True), tmp_path, "apart")
    names = _cpu_part_tasks(apart, options)
    assert {"conv2d", "conv2d1"} <= names and not any("transpose" in n for n in names), names

    path = testmodels.save(byoc_models.dilated_convs(offload_between=False), tmp_path, "row")
    report = _tune_cpu_part(path, options, trials=2)
    names = {t.name for t in report.tasks}
    assert names == _cpu_part_tasks(path, options)
    assert {"conv2d", "conv2d1"} <= names, names
    # The layout's transposes (NCHW to NHWC and back) are tasks of their own.
    transposes = names - {"conv2d", "conv2d1"}
    assert len(transposes) == 2 and all(n.startswith("transpose") for n in transposes), names
    assert report.failed == 0

    plan = BenchPlan(
        path,
        backends=["tvm-nnapi", "ort"],
        protocol=FAST,
        options={"tvm-nnapi": {**options, "tuning": "on"}},
    )
    docs = {doc.dump()["backend"]: doc.dump() for doc in run_bench(plan)}
    doc = docs["tvm-nnapi"]
    assert doc["status"] == "ok", doc["error"]
    assert doc["accuracy"]["passed"], doc["accuracy"]  # against onnxruntime
    assert doc["partition"]["by_op_type"]["nn.conv2d"] == {"offloaded": 0, "total": 2}
    assert doc["partition"]["ops_offloaded"] > 0
    assert {"conv2d", "conv2d1"} <= set(doc["provenance"]["tuning"]["scheduled"])
