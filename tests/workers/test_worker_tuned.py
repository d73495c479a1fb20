"""A tvm-cpu job on a phone whose class the farm has tuning records for: start_job builds the
tuned artifact on the compile queue, so that the run finds it in the cache instead of
building it for minutes on the phone's turn; a phone of a class without records runs the
untuned artifact of the same job."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.config import get_settings
from harness.db import ArtifactStatus, RunStatus
from harness.devices import open_device
from harness.devices.emulator import EmulatedPhone
from harness.tuning.session import records_key_for, tune_model

import testmodels
from workerfarm import Farm, WorkerProcess, register


def conv_relu(seed: int) -> onnx.ModelProto:
    """One conv and its relu: one tuning task, tuned in a few seconds."""
    rng = np.random.default_rng(seed)
    conv = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    return testmodels.make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], **conv),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w")],
        "conv_relu",
    )


@pytest.fixture(scope="module")
def devices(farm: Farm, phones: list[EmulatedPhone]) -> list[int]:
    return [register(farm, f"tcp:{phone.serial}") for phone in phones]


@pytest.fixture(scope="module")
def worker(
    farm: Farm,
    phones: list[EmulatedPhone],
    devices: list[int],
    start_worker: Callable[..., WorkerProcess],
) -> Iterator[WorkerProcess]:
    args = [arg for phone in phones for arg in ("--device", f"tcp:{phone.serial}")]
    yield start_worker(farm, *args, "--concurrency", "2")


@pytest.mark.timeout(300)
def test_start_job_builds_the_tuned_artifact_the_run_then_finds_in_the_cache(
    farm: Farm,
    phones: list[EmulatedPhone],
    devices: list[int],
    worker: WorkerProcess,
    tmp_path: Path,
) -> None:
    seed = random.Random().randrange(1_000, 1_000_000)  # weights no other test compiled
    model = conv_relu(seed)
    tuned_phone, untuned_phone = phones
    # Real records for the first phone's class, measured on it, in the farm's database.
    device = open_device(f"tcp:{tuned_phone.serial}")
    try:
        facts = device.facts()
        report = tune_model(
            testmodels.save(model, tmp_path, "conv"),
            device,
            farm.sessions,
            minutes=0.001,  # spent by the first batch
            batch=4,
            population=32,
            seed=1,
        )
    finally:
        device.close()
    device_class = records_key_for(facts).device_class
    assert report.saved == 4 and report.device_class == device_class
    other = open_device(f"tcp:{untuned_phone.serial}")
    try:
        assert records_key_for(other.facts()).device_class != device_class
    finally:
        other.close()

    model_id = farm.add_model(model, f"conv-{seed}")
    job_id = farm.submit(model_id, devices, ["tvm-cpu"], ["x:1x8x16x16"])
    runs = farm.wait_done(job_id, timeout_s=240)

    assert [r.status for r in runs] == [RunStatus.done, RunStatus.done], [
        r.error_message for r in runs
    ]
    by_device = {r.device_id: r for r in runs}
    results = {r.run_id: r for r in farm.results(job_id)}
    artifacts = {a.id: a for a in farm.artifacts(model_id)}
    assert len(artifacts) == 2  # one tuned, one untuned: each built once, by start_job
    tuned_run, untuned_run = by_device[devices[0]], by_device[devices[1]]

    tuned = results[tuned_run.id].document["provenance"]
    assert tuned["tuning"]["device_class"] == device_class
    assert tuned["tuning"]["trials"] == 4
    # The run found the artifact start_job had built: the phone's turn compiled nothing.
    assert tuned["cache_hit"] is True
    # The farm's records say which artifact the run ran: the tuned one, built before the
    # run was sent to its phone.
    assert tuned_run.artifact_id is not None
    row = artifacts[tuned_run.artifact_id]
    assert row.status == ArtifactStatus.ready and row.cache_key == tuned["artifact_key"]
    assert row.provenance["tuning"] == tuned["tuning"]
    assert row.compile_ms and row.compile_ms > 0
    built_at = datetime.strptime(row.provenance["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert tuned_run.enqueued_at and tuned_run.started_at
    assert built_at.replace(tzinfo=UTC) <= _utc(tuned_run.enqueued_at) <= _utc(tuned_run.started_at)
    built = list((get_settings().cache_path / "artifacts").glob(f"*{row.cache_key}*"))
    assert [p.name for p in built] == [row.cache_key]

    # The phone of a class without records: the untuned artifact, its key as ever.
    untuned = results[untuned_run.id].document["provenance"]
    assert "tuning" not in untuned and untuned["cache_hit"] is True
    assert untuned_run.artifact_id is not None and untuned_run.artifact_id != row.id
    plain = artifacts[untuned_run.artifact_id]
    assert plain.cache_key == untuned["artifact_key"] and "tuning" not in plain.provenance
    assert "tuning_records" not in plain.options


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def test_tuning_on_without_records_fails_that_run_at_compile_before_any_phone(
    farm: Farm, devices: list[int], worker: WorkerProcess
) -> None:
    """``tuning: on`` requires records: the phone of a class without them fails at compile,
    cleanly, on the compile queue; the phone with them runs tuned."""
    model_id = farm.add_model(conv_relu(7), "conv-on")
    job_id = farm.submit(
        model_id, devices, ["tvm-cpu"], ["x:1x8x16x16"], options={"tvm-cpu": {"tuning": "on"}}
    )
    runs = farm.wait_done(job_id, timeout_s=240)
    by_device = {r.device_id: r for r in runs}
    with_records, without = by_device[devices[0]], by_device[devices[1]]
    assert with_records.status == RunStatus.done, with_records.error_message
    assert without.status == RunStatus.failed and without.error_stage == "compile"
    assert "no tuning records for" in (without.error_message or "")
    assert without.attempts == 0 and without.enqueued_at is None  # never sent to its phone
    results = {r.run_id: r for r in farm.results(job_id)}
    assert results[without.id].document["error"]["stage"] == "compile"
    assert results[with_records.id].document["provenance"]["cache_hit"] is True
    assert "tuning" in results[with_records.id].document["provenance"]
