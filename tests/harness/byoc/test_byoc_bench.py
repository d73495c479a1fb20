"""tvm-nnapi and tvm-neuron measured for real: generated C + host reference driver, run by the
native runner on the local device and on emulated phones, outputs checked against
onnxruntime, partition reports in the result documents."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest

from harness.bench import BenchPlan, Protocol, run_bench
from harness.devices.emulator import EmulatedPhone
from harness.devices.emulator.profiles import get_profile

import byoc_models
import testmodels

FAST = Protocol(warmup=1, min_iterations=5, min_seconds=0.05, max_seconds=5)
BACKENDS = ["tvm-nnapi", "tvm-neuron", "tvm-cpu"]

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mobilenet_like": testmodels.mobilenet_like,
    "mlp": testmodels.mlp,
    "transposed_matmul": byoc_models.transposed_matmul,
    "sin_in_the_middle": byoc_models.sin_in_the_middle,
    "pool_concat": byoc_models.pool_concat,
    "nothing_to_offload": byoc_models.nothing_to_offload,
}


def _bench(path: Path, devices: list[str], backends: list[str] = BACKENDS) -> list[dict[str, Any]]:
    plan = BenchPlan(path, backends=backends, devices=devices, protocol=FAST)
    return [doc.dump() for doc in run_bench(plan)]


def _assert_ok(doc: dict[str, Any]) -> None:
    assert doc["status"] == "ok", (doc["backend"], doc["error"])
    assert doc["accuracy"]["passed"], doc["accuracy"]
    assert doc["latency_ms"]["median"] > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_byoc_backends_match_onnxruntime_on_the_local_device(name: str, tmp_path: Path) -> None:
    # tvm-cpu's agreement with onnxruntime is every tvm-cpu test's business (a third build of
    # each model here cost the suite a minute).
    path = testmodels.save(MODELS[name](), tmp_path, name)
    docs = _bench(path, ["local"], ["tvm-nnapi", "tvm-neuron"])
    assert [d["backend"] for d in docs] == ["tvm-nnapi", "tvm-neuron"]
    for doc in docs:
        _assert_ok(doc)
    nnapi, neuron = docs
    for doc in (nnapi, neuron):
        report = doc["partition"]
        assert report["ops_total"] == report["ops_offloaded"] + len(report["cpu_ops"])
        if name == "nothing_to_offload":
            assert report["ops_offloaded"] == 0
            assert report["subgraphs"] == 0
        else:
            assert report["ops_offloaded"] > 0
            assert report["subgraphs"] >= 1
    assert nnapi["partition"]["dialect"] == "nnapi"
    assert nnapi["partition"]["feature_level"] == 7  # the local device runs the driver at 7
    assert neuron["partition"]["dialect"] == "neuron"
    assert nnapi["provenance"]["compile_options"]["preference"] == "fast_single_answer"


def test_byoc_on_an_emulated_phone(tmp_path: Path) -> None:
    path = testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet")
    with EmulatedPhone("dimensity-9200", thermal_time_constant_s=3600.0) as phone:
        docs = _bench(path, [f"tcp:{phone.serial}"], ["tvm-nnapi", "tvm-neuron"])
    for doc in docs:
        _assert_ok(doc)
        assert doc["device"]["emulated"]
    nnapi, neuron = docs
    # Android 14 (SDK 34): NNAPI feature level 7.
    assert nnapi["partition"]["feature_level"] == 7
    assert nnapi["provenance"]["compile_options"]["feature_level"] == 7
    assert neuron["partition"]["ops_offloaded"] == neuron["partition"]["ops_total"]


def test_an_old_phones_feature_level_bounds_the_offload(tmp_path: Path) -> None:
    """Pixel 3a, Android 9 (SDK 28): NNAPI feature level 2, so no BATCH_MATMUL (q @ k^T stays
    on the CPU); a fully connected layer (the Gemm) is NNAPI's from level 1."""
    path = testmodels.save(byoc_models.transposed_matmul(), tmp_path, "tm")
    with EmulatedPhone("pixel-3a", thermal_time_constant_s=3600.0) as phone:
        [doc] = _bench(path, [f"tcp:{phone.serial}"], ["tvm-nnapi"])
    _assert_ok(doc)
    report = doc["partition"]
    assert report["feature_level"] == 2
    assert report["by_op_type"]["matmul"] == {"offloaded": 1, "total": 2}
    kept = [c for c in report["cpu_ops"] if c["op"] == "matmul"]
    assert len(kept) == 1 and "feature level 6" in kept[0]["detail"]
    assert 0.0 < report["macs_offloaded_share"] < 1.0


def test_a_phone_without_nnapi_is_refused_for_tvm_nnapi(tmp_path: Path) -> None:
    profile = get_profile("pixel-3a")
    oreo = dataclasses.replace(
        profile,
        name="pixel-3a-android-8",
        props={**profile.props, "ro.build.version.sdk": "26", "ro.build.version.release": "8.0"},
    )
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    with EmulatedPhone(oreo, thermal_time_constant_s=3600.0) as phone:
        nnapi, neuron = _bench(path, [f"tcp:{phone.serial}"], ["tvm-nnapi", "tvm-neuron"])
    assert nnapi["status"] == "failed"
    assert nnapi["error"]["stage"] == "partition"
    assert "SDK level 26" in nnapi["error"]["message"]
    assert "no NNAPI" in nnapi["error"]["message"]
    # Neuron does not go through NNAPI: it still runs (on the emulator, on the host driver).
    _assert_ok(neuron)


def test_a_farm_job_that_names_no_feature_level_runs_at_an_older_phones_own(
    tmp_path: Path,
) -> None:
    """The farm stores a job's options with the backend's defaults filled in (tvm-nnapi:
    feature_level 7, NNAPI's highest). On a phone below 7 that default means the phone's own
    level, not a request the phone cannot meet: bench/chaos.py found every tvm-nnapi run
    submitted through the API to a Snapdragon 8 Gen 2 (level 6) or a Pixel 3a (level 2)
    failing at partition with "feature_level 7 is above what ... supports"."""
    from harness.db import Model
    from harness.farm.jobs import job_settings
    from harness.farm.models import declared_inputs
    from harness.modelio import model_from_bytes

    data = testmodels.mlp().SerializeToString()
    file = model_from_bytes(data, name="mlp")
    model = Model(
        sha256=file.sha256,
        name="mlp",
        format=file.format,
        size_bytes=len(data),
        input_spec=[
            {"name": s.name, "shape": list(s.shape), "dtype": s.dtype}
            for s in declared_inputs(file)
        ],
    )
    stored = job_settings(None, model=model, backends=["tvm-nnapi"]).options
    assert stored["tvm-nnapi"]["feature_level"] == 7  # as the API writes it into the job
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    with EmulatedPhone("pixel-3a", thermal_time_constant_s=3600.0) as phone:
        [measured] = run_bench(
            BenchPlan(
                path,
                backends=["tvm-nnapi"],
                devices=[f"tcp:{phone.serial}"],
                protocol=FAST,
                options=stored,
            )
        )
        doc = measured.dump()
        _assert_ok(doc)
        assert doc["partition"]["feature_level"] == 2

        # A level the job does name is a ceiling the phone must reach.
        [refusal] = run_bench(
            BenchPlan(
                path,
                backends=["tvm-nnapi"],
                devices=[f"tcp:{phone.serial}"],
                protocol=FAST,
                options={"tvm-nnapi": {"feature_level": 5}},
            )
        )
        refused = refusal.dump()
    assert refused["status"] == "failed" and refused["error"]["stage"] == "partition"
    assert "feature_level 5 is above what" in refused["error"]["message"]
