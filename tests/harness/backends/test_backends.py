"""Backends as objects: what callers ask them instead of testing their names."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import backend_names, get_backend
from harness.backends.base import Target
from harness.bench import run_limits
from harness.devices.base import DeviceFacts
from harness.errors import JobError
from harness.modelio import load

import testmodels

PHONE = DeviceFacts(id="tcp:127.0.0.1:5555", kind="adb", sdk_level=30, nnapi_feature_level=4)
OLD_PHONE = DeviceFacts(id="tcp:127.0.0.1:5556", kind="adb", sdk_level=26)
HERE = DeviceFacts(id="local", kind="local")


def _quiet(event: str, message: str) -> None:
    pass


def test_registry_names_and_unknown_backend() -> None:
    assert backend_names() == ["ort", "tvm-cpu", "tvm-neuron", "tvm-nnapi"]
    with pytest.raises(JobError, match="unknown backend 'litert'; known backends: ort, "):
        get_backend("litert")


def test_only_offloading_backends_take_a_partition() -> None:
    assert [n for n in backend_names() if get_backend(n).offloads()] == [
        "tvm-neuron",
        "tvm-nnapi",
    ]


def test_facts_say_what_a_device_can_do_and_survive_their_dict() -> None:
    for facts in (PHONE, OLD_PHONE, HERE):
        again = DeviceFacts.from_dict(facts.to_dict())
        assert again == facts
        assert again.runs_host_python == (facts is HERE)
        assert again.android_nnapi == (facts is not HERE)
    never_probed = DeviceFacts.from_dict({"id": "tcp:10.0.0.1:5555"})
    assert not never_probed.runs_host_python and never_probed.android_nnapi


def test_nnapi_feature_level_is_bounded_by_the_phone_not_by_this_machine() -> None:
    nnapi = get_backend("tvm-nnapi")
    options = nnapi.resolve_options(None)
    assert nnapi.device_options(PHONE, options)["feature_level"] == 4  # type: ignore[index]
    assert nnapi.device_options(HERE, options) == options
    with pytest.raises(JobError, match="feature_level 6 is above what"):
        nnapi.device_options(PHONE, {**options, "feature_level": 6})
    with pytest.raises(JobError, match="has no NNAPI"):
        nnapi.device_options(OLD_PHONE, options)
    # Neuron and plain TVM have no such bound.
    neuron = get_backend("tvm-neuron")
    assert neuron.device_options(OLD_PHONE, {"x": 1}) == {"x": 1}


def test_what_a_job_builds_on_the_compile_queue() -> None:
    cpu, nnapi, ort = get_backend("tvm-cpu"), get_backend("tvm-nnapi"), get_backend("ort")
    assert [b.for_run for b in cpu.job_builds(cpu.resolve_options(None))] == [True]
    assert ort.job_builds(ort.resolve_options(None)) == []
    cost = nnapi.job_builds(nnapi.resolve_options({"partition": "cost"}))
    assert [(b.for_run, b.options["partition"]) for b in cost] == [
        (False, "calibrate-cpu"),
        (False, "calibrate-accel"),
    ]
    assert nnapi.needs_device({"partition": "cost"}) and not cpu.needs_device(None)


def test_the_ort_baseline_runs_where_this_python_is(tmp_path: Path) -> None:
    model = load(testmodels.save(testmodels.mlp(), tmp_path, "mlp"))
    ort = get_backend("ort")

    def where(facts: DeviceFacts) -> Target:
        return Target(facts=facts, target="host", limits=run_limits(), progress=_quiet)

    prepared = ort.prepare(model, {"threads": 1}, where(HERE))
    assert prepared.partition is None
    assert prepared.provenance["compile_options"] == {"threads": 1, "graph_optimization": "all"}
    assert "onnxruntime_version" in prepared.provenance
    with pytest.raises(JobError, match="runs on the local device only"):
        ort.prepare(model, None, where(PHONE))
    with pytest.raises(JobError, match="has no option 'opt_level'"):
        ort.prepare(model, {"opt_level": 2}, where(HERE))
