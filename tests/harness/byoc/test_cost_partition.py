"""Cost-guided partitioning through TVM and on devices: the decision follows the costs given,
kept regions carry the reason "cost decision", calibration measures on the device once per
device class and is reused, and the result shows predicted against measured latency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.backends import get_backend
from harness.bench import Protocol, compute_reference, make_model_inputs, measure
from harness.byoc import partition
from harness.byoc.candidates import describe
from harness.byoc.costmodel import Candidate, Costs, Line, Planner
from harness.byoc.normalize import normalize
from harness.byoc.partition import PartitionOptions, find_candidates
from harness.compile import compile_artifact
from harness.db import SessionScope, make_engine, make_session_factory, scoped
from harness.db.costs import CostKey, Measured, list_costs, store_costs
from harness.db.migrate import upgrade
from harness.devices import open_device
from harness.devices.base import DeviceFacts
from harness.devices.emulator import EmulatedPhone
from harness.errors import JobError
from harness.measure.calibration import (
    accel_variant,
    baseline_key,
    cpu_variant,
    device_class,
    software_version,
)
from harness.modelio import load, to_relax

import byoc_models
import testmodels

FAST = Protocol(warmup=1, min_iterations=5, min_seconds=0.05, max_seconds=5)


def _candidates(mod: Any, dialect: str) -> list[Candidate]:
    folded = normalize(mod)
    opts = PartitionOptions.from_backend(dialect, {})
    return describe(folded, find_candidates(folded, opts))


def test_the_cpu_calibration_module_keeps_the_tir_functions_of_its_baseline(
    tmp_path: Path,
) -> None:
    """The baseline (the whole model on the CPU) calls what the importer lowered to TIR: its
    module must hold those functions. It did not, and ``partition: cost`` failed to build on
    the trained classifier (its Clips were call_tir then) and on any model with such an
    operator (here a reflecting Pad)."""
    import tvm

    mod = to_relax(load(testmodels.save(byoc_models.reflect_pad(), tmp_path, "pad")))
    cal = partition(mod, "nnapi", {"partition": "calibrate-cpu"}).mod
    assert "mirror_pad" in {gv.name_hint for gv in cal.functions}
    tvm.compile(cal, target="llvm")  # failed: no definition of GlobalVar("mirror_pad")
    report = partition(mod, "nnapi", {}).report
    assert [c["op"] for c in report["cpu_ops"]] == ["call_tir"]


def _table(
    candidates: list[Candidate], accel_wins: Callable[[Candidate], bool], *, fixed: float = 0.0
) -> dict[str, Any]:
    return Costs(
        device_class="test-class",
        baseline_ms=float(len(candidates)),
        cpu_ms={c.signature: 1.0 for c in candidates},
        accel_ms={c.signature: 0.01 if accel_wins(c) else 5.0 for c in candidates},
        boundary=Line(fixed, 0.0),
    ).to_dict()


def _has_conv(c: Candidate) -> bool:
    return "nn.conv2d" in c.ops


@pytest.fixture(scope="module")
def mnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return testmodels.save(testmodels.mobilenet_like(), tmp_path_factory.mktemp("m"), "mnet")


def test_the_decision_follows_the_costs_given(mnet: Path) -> None:
    mod = to_relax(load(mnet))
    candidates = _candidates(mod, "neuron")
    convs = [c for c in candidates if _has_conv(c)]
    assert len(convs) == 3 and len(candidates) > len(convs)

    def run(wins: Callable[[Candidate], bool], **kw: Any) -> dict[str, Any]:
        costs = _table(candidates, wins, **kw)
        report = partition(mod, "neuron", {"partition": "cost", "costs": costs}).report
        assert report["mode"] == "cost"
        assert report["ops_total"] == report["ops_offloaded"] + len(report["cpu_ops"])
        # The report's prediction is the planner's for the choice it reports.
        chosen = {c.name for c in candidates if wins(c)}
        planner = Planner(candidates, Costs.from_dict(costs))
        assert report["predicted_ms"] == pytest.approx(planner.predict(chosen).latency_ms)
        flags = [c["offloaded"] for c in report["cost"]["candidates"]]
        assert flags == [wins(c) for c in candidates]
        return report

    conv_only = run(_has_conv)
    assert conv_only["by_op_type"]["nn.conv2d"] == {"offloaded": 3, "total": 3}
    assert conv_only["ops_offloaded"] == sum(len(c.ops) for c in convs)
    assert {e["reason"] for e in conv_only["cpu_ops"]} == {"cost decision"}
    assert "test-class" in conv_only["cpu_ops"][0]["detail"]

    no_conv = run(lambda c: not _has_conv(c))
    assert no_conv["by_op_type"]["nn.conv2d"]["offloaded"] == 0
    kept = [e for e in no_conv["cpu_ops"] if e["op"] == "nn.conv2d"]
    assert len(kept) == 3 and all(e["reason"] == "cost decision" for e in kept)

    everything = run(lambda c: True)
    offload_all = partition(mod, "neuron", {"partition": "all"}).report
    assert everything["ops_offloaded"] == offload_all["ops_offloaded"]
    assert everything["subgraphs"] == offload_all["subgraphs"] == 1
    nothing = run(lambda c: False)
    assert nothing["ops_offloaded"] == 0 and nothing["subgraphs"] == 0


def test_cost_mode_without_costs_or_with_missing_ones_is_a_partition_error(mnet: Path) -> None:
    mod = to_relax(load(mnet))
    with pytest.raises(JobError, match="calibration") as err:
        partition(mod, "nnapi", {"partition": "cost"})
    assert err.value.stage == "partition"
    candidates = _candidates(mod, "nnapi")
    costs = _table(candidates, _has_conv)
    dropped = next(c for c in candidates if c.ops == ("mean",))
    del costs["accel_ms"][dropped.signature]
    with pytest.raises(JobError, match=r"no measured costs on test-class for 1 .*\(mean\)"):
        partition(mod, "nnapi", {"partition": "cost", "costs": costs})


def _store(tmp_path: Path) -> SessionScope:
    """A cost store of its own: a database made by the project's migrations."""
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    upgrade(url)
    return scoped(make_session_factory(make_engine(url)))


def _seed(
    store: SessionScope,
    model: Any,
    backend_name: str,
    facts: DeviceFacts,
    accel_wins: Callable[[str], bool],
) -> None:
    """Store made-up costs for every key a cost run of ``model`` on ``facts``'s class needs:
    1 ms per candidate on the CPU, 0.01 ms on the accelerator where ``accel_wins(ops)``."""
    backend = get_backend(backend_name)
    options = backend.resolve_options(backend.device_options(facts, {"partition": "cost"}))
    base = {k: v for k, v in options.items() if k != "costs"}
    art = compile_artifact(
        model, backend, target="host", options={**base, "partition": "calibrate-cpu"}
    )
    info = art.manifest["extra"]["calibration"]
    ops = {c["signature"]: "+".join(c["ops"]) for c in info["candidates"]}
    probes = {f"probe:{p['bytes']}": Measured(0.001, 10) for p in info["probes"]}
    cpu = {s: Measured(1.0 + 0.001, 10) for s in ops}
    accel = {s: Measured((0.01 if accel_wins(o) else 5.0) + 0.001, 10) for s, o in ops.items()}
    klass, software = device_class(facts), software_version()
    dialect = backend.dialect  # type: ignore[attr-defined]
    with store() as session:
        store_costs(
            CostKey(klass, cpu_variant(options), software),
            {**cpu, **probes, baseline_key(model): Measured(float(len(ops)) + 0.5, 10)},
            device="seeded",
            session=session,
        )
        store_costs(
            CostKey(klass, accel_variant(dialect, options), software),
            {**accel, **probes},
            device="x",
            session=session,
        )


def _measure(
    model: Any, device: Any, backend: str, store: SessionScope, threads: int = 0
) -> dict[str, Any]:
    inputs = make_model_inputs(model, seed=0)
    return measure(
        model,
        device,
        get_backend(backend),
        inputs=inputs,
        reference=compute_reference(model, inputs),
        protocol=FAST,
        options={"partition": "cost", **({"threads": threads} if threads else {})},
        cost_sessions=store,
    ).dump()


def test_stored_costs_decide_what_runs_where_and_outputs_stay_right(
    mnet: Path, tmp_path: Path
) -> None:
    model = load(mnet)
    device = open_device("local")
    facts = device.facts()
    docs = {}
    tables: dict[str, Callable[[str], bool]] = {
        "convs": lambda ops: "conv2d" in ops,
        "rest": lambda ops: "conv2d" not in ops,
    }
    for name, wins in tables.items():
        (tmp_path / name).mkdir()
        store = _store(tmp_path / name)
        _seed(store, model, "tvm-nnapi", facts, wins)
        doc = _measure(model, device, "tvm-nnapi", store)
        assert doc["status"] == "ok", doc["error"]
        assert doc["accuracy"]["passed"]
        report = doc["partition"]
        assert report["cost"]["calibration"]["measured_now"] == 0  # all seeded
        assert report["cost"]["device_class"] == device_class(facts)
        assert report["measured_ms"] == doc["latency_ms"]["median"]
        assert report["predicted_ms"] > 0
        docs[name] = doc
    convs, rest = docs["convs"]["partition"], docs["rest"]["partition"]
    # Every convolution goes (the depthwise one, which has no bias, by edgefarm's addition
    # to TVM's NNAPI table).
    assert convs["by_op_type"]["nn.conv2d"] == {"offloaded": 3, "total": 3}
    assert rest["by_op_type"]["nn.conv2d"]["offloaded"] == 0
    assert any(e["reason"] == "cost decision" and e["op"] == "nn.conv2d" for e in rest["cpu_ops"])
    # Different costs, different artifacts.
    keys = {d["provenance"]["artifact_key"] for d in docs.values()}
    assert len(keys) == 2


def test_calibration_on_an_emulated_phone_is_stored_per_class_and_reused(
    mnet: Path, tmp_path: Path
) -> None:
    model = load(mnet)
    store = _store(tmp_path)
    with EmulatedPhone("dimensity-9200", thermal_time_constant_s=3600.0) as phone:
        device = open_device(f"tcp:{phone.serial}")
        try:
            first = _measure(model, device, "tvm-neuron", store)
            second = _measure(model, device, "tvm-neuron", store)
            two = _measure(model, device, "tvm-neuron", store, threads=2)
        finally:
            device.close()
    for doc in (first, second):
        assert doc["status"] == "ok", doc["error"]
        assert doc["accuracy"]["passed"]
        assert doc["partition"]["measured_ms"] == doc["latency_ms"]["median"]
    cal1 = first["partition"]["cost"]["calibration"]
    cal2 = second["partition"]["cost"]["calibration"]
    klass = cal1["device_class"]
    assert klass.startswith("adb:") and klass.endswith("emulated")
    with store() as session:
        after = list_costs(klass, session=session)
    rows = [r for r in after if r.variant != "cpu/o3/t2"]  # the first two runs'
    # Candidates on both sides, 3 probes on both, the whole model on the CPU; once.
    assert cal1["measured_now"] == len(rows) > 2 + 3 + 3 + 1
    assert {r.variant for r in rows} == {"cpu/o3", "neuron/fast_single_answer"}
    assert cal2["measured_now"] == 0 and cal2["reused"] == cal1["measured_now"]
    assert all(r.median_ms > 0 and r.samples >= 15 and r.device == device.id for r in rows)
    # Same stored costs, same decision, same artifact: the second build was a cache hit.
    assert second["provenance"]["artifact_key"] == first["provenance"]["artifact_key"]
    assert second["provenance"]["cache_hit"] is True
    assert second["partition"]["predicted_ms"] == first["partition"]["predicted_ms"]

    # A run on two threads: the CPU side is timed again with two, stored as its own
    # variant; the accelerator's costs (its driver has no TVM pool) are reused.
    assert two["status"] == "ok", two["error"]
    assert two["accuracy"]["passed"] and two["provenance"]["threads"] == 2
    cal_two = two["partition"]["cost"]["calibration"]
    assert cal_two["variants"] == {"cpu": "cpu/o3/t2", "accel": "neuron/fast_single_answer"}
    cpu_rows = [r for r in rows if r.variant == "cpu/o3"]
    two_rows = [r for r in after if r.variant == "cpu/o3/t2"]
    assert {r.signature for r in two_rows} == {r.signature for r in cpu_rows}
    assert cal_two["measured_now"] == len(two_rows)
    assert cal_two["reused"] == len(rows) - len(cpu_rows)
    assert len(after) == len(rows) + len(two_rows)
