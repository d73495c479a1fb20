"""Jobs through a real worker: compile once, measure on two phones, record once."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from harness.config import get_settings
from harness.db import ArtifactStatus, DeviceHealth, DeviceState, RunStatus
from harness.devices.emulator import EmulatedPhone

import testmodels
from workerfarm import Farm, WorkerProcess, register, wait_for

INPUTS = ["input:1x3x32x32"]


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
    yield start_worker(farm, *args, "--beat", "--concurrency", "3")


@pytest.fixture(scope="module")
def fresh_model(farm: Farm) -> int:
    """A model no other test has compiled (its own weights, so its own artifact key)."""
    seed = random.Random().randrange(1_000, 1_000_000)
    return farm.add_model(testmodels.mobilenet_like(seed), f"mnet-{seed}")


def test_two_phones_compile_once_and_both_runs_end_with_results(
    farm: Farm, devices: list[int], worker: WorkerProcess, fresh_model: int
) -> None:
    job_id = farm.submit(fresh_model, devices, ["tvm-cpu"], INPUTS)
    runs = farm.wait_done(job_id, timeout_s=180)

    assert [r.status for r in runs] == [RunStatus.done, RunStatus.done]
    assert all(r.attempts == 1 and r.error_stage is None for r in runs)
    assert all(r.started_at and r.finished_at and r.enqueued_at for r in runs)
    results = farm.results(job_id)
    assert sorted(r.run_id for r in results) == [r.id for r in runs]
    for result in results:
        assert result.status == "ok" and result.accuracy_passed is True
        assert result.median_ms is not None and result.median_ms > 0
        assert result.n == len(result.samples_ms) >= 10
        assert result.ci_low_ms <= result.median_ms <= result.ci_high_ms  # type: ignore[operator]
        assert result.document["status"] == "ok"
        # The phone found the artifact start_job had built: nothing was compiled twice.
        assert result.document["provenance"]["cache_hit"] is True
    # One Artifact row for the two phones (same backend, same target), built once.
    (artifact,) = farm.artifacts(fresh_model)
    assert artifact.status == ArtifactStatus.ready and artifact.target == "host"
    assert {r.artifact_id for r in runs} == {artifact.id}
    assert artifact.compile_ms and artifact.compile_ms > 0 and artifact.size_bytes
    key = artifact.cache_key
    assert artifact.provenance["key"] == key
    assert {r.document["provenance"]["artifact_key"] for r in results} == {key}
    built = list((get_settings().cache_path / "artifacts").glob(f"*{key}*"))
    assert [p.name for p in built] == [key]
    for device_id in devices:
        device = farm.device(device_id)
        assert device.state == DeviceState.idle and device.current_run_id is None
        assert device.health == DeviceHealth.good and device.last_seen_at is not None
    job = farm.job(job_id)
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at

    # A second job of the same model reuses the artifact: same row, not built again.
    second = farm.submit(fresh_model, devices, ["tvm-cpu"], INPUTS)
    runs2 = farm.wait_done(second, timeout_s=120)
    assert [r.status for r in runs2] == [RunStatus.done, RunStatus.done]
    (again,) = farm.artifacts(fresh_model)
    assert again.id == artifact.id
    assert again.provenance["created_at"] == artifact.provenance["created_at"]
    assert {r.artifact_id for r in runs2} == {artifact.id}


def test_unsupported_operator_fails_each_run_at_import_with_one_result(
    farm: Farm, devices: list[int], worker: WorkerProcess
) -> None:
    model_id = farm.add_model(testmodels.unsupported_op(), "det")
    job_id = farm.submit(model_id, devices, ["tvm-cpu"], ["m:2x4x4"])
    runs = farm.wait_done(job_id, timeout_s=120)

    assert [r.status for r in runs] == [RunStatus.failed, RunStatus.failed]
    for run in runs:
        assert run.error_stage == "import" and "Det" in (run.error_message or "")
        assert run.attempts == 0  # never reached a phone
    results = farm.results(job_id)
    assert sorted(r.run_id for r in results) == [r.id for r in runs]
    for result in results:
        assert result.status == "failed" and result.error_stage == "import"
        assert result.document["error"]["stage"] == "import"
        assert result.document["model"]["name"] == "det"
    (artifact,) = farm.artifacts(model_id)
    assert artifact.status == ArtifactStatus.failed and artifact.error_stage == "import"


def test_a_redelivered_message_for_a_done_run_does_nothing(
    farm: Farm, devices: list[int], worker: WorkerProcess
) -> None:
    model_id = farm.add_model(testmodels.mobilenet_like(), "mnet")
    job_id = farm.submit(model_id, devices[:1], ["tvm-cpu"], INPUTS)
    (run,) = farm.wait_done(job_id, timeout_s=120)
    assert run.status == RunStatus.done
    (result,) = farm.results(job_id)

    # The same message again, twice, as a broker would redeliver it.
    before = _runs_finished(worker)
    for _ in range(2):
        farm.client.send_task("edgefarm.run", args=[run.id], queue=f"device.{run.device_id}")
    wait_for("the worker to take both", lambda: _runs_finished(worker) >= before + 2, 30)
    again = farm.run(run.id)
    assert (again.status, again.attempts, again.finished_at) == (
        RunStatus.done,
        1,
        run.finished_at,
    )
    assert [(r.id, r.created_at) for r in farm.results(job_id)] == [(result.id, result.created_at)]


def _runs_finished(worker: WorkerProcess) -> int:
    """How many edgefarm.run tasks the worker has finished (Celery logs each)."""
    return sum(
        1
        for line in worker.log().splitlines()
        if "Task edgefarm.run[" in line and "succeeded" in line
    )


def test_the_user_s_mistake_is_recorded_at_once_without_retries(
    farm: Farm, devices: list[int], worker: WorkerProcess
) -> None:
    """The ort baseline on a phone (which has no Python) is the user's error (JobError):
    one attempt, one failed Result, the phone stays healthy."""
    model_id = farm.add_model(testmodels.mobilenet_like(), "mnet")
    job_id = farm.submit(model_id, devices[:1], ["ort"], INPUTS)
    (run,) = farm.wait_done(job_id, timeout_s=60)
    assert run.status == RunStatus.failed and run.error_stage == "run"
    assert run.attempts == 1 and run.artifact_id is None
    assert "local device only" in (run.error_message or "")
    (result,) = farm.results(job_id)
    assert result.status == "failed" and "retryable" not in result.document["error"]
    assert farm.device(devices[0]).health == DeviceHealth.good


def test_nnapi_artifacts_are_built_per_feature_level_in_start_job(
    farm: Farm, devices: list[int], worker: WorkerProcess, fresh_model: int
) -> None:
    """The two phones have different NNAPI feature levels (SDK 34 -> 7, SDK 33 -> 6): one
    tvm-nnapi artifact each, built by start_job, found by the runs in the cache."""
    job_id = farm.submit(fresh_model, devices, ["tvm-nnapi"], INPUTS)
    runs = farm.wait_done(job_id, timeout_s=300)
    assert [r.status for r in runs] == [RunStatus.done, RunStatus.done], [
        (r.error_stage, r.error_message) for r in runs
    ]
    nnapi = [a for a in farm.artifacts(fresh_model) if a.backend == "tvm-nnapi"]
    assert sorted(a.options["feature_level"] for a in nnapi) == [6, 7]
    assert {r.artifact_id for r in runs} == {a.id for a in nnapi}
    for result in farm.results(job_id):
        assert result.accuracy_passed is True
        assert result.document["provenance"]["cache_hit"] is True  # not rebuilt in the run
        assert result.document["partition"]["ops_offloaded"] > 0


def test_cost_guided_partition_calibrates_on_the_phones_and_stores_costs_in_the_farm_db(
    farm: Farm, devices: list[int], worker: WorkerProcess, fresh_model: int
) -> None:
    """partition "cost": start_job builds only the calibration artifacts; each phone's run
    finds its device class's costs in the farm's database or measures them there, then builds
    the cost-guided artifact. The result shows predicted against measured latency."""
    from sqlalchemy import func, select

    from harness.db import OpCost

    options = {"tvm-neuron": {"partition": "cost"}}
    job_id = farm.submit(fresh_model, devices, ["tvm-neuron"], INPUTS, options=options)
    runs = farm.wait_done(job_id, timeout_s=420)
    assert [r.status for r in runs] == [RunStatus.done, RunStatus.done], [
        (r.error_stage, r.error_message) for r in runs
    ]
    assert all(r.artifact_id is None for r in runs)  # built in the run, after calibration
    classes = set()
    for result in farm.results(job_id):
        assert result.accuracy_passed is True
        report = result.document["partition"]
        assert report["mode"] == "cost"
        assert report["predicted_ms"] > 0 and report["measured_ms"] == result.median_ms
        cost = report["cost"]
        classes.add(cost["device_class"])
        assert cost["calibration"]["measured_now"] + cost["calibration"]["reused"] > 0
        offloaded = sum(len(c["ops"]) for c in cost["candidates"] if c["offloaded"])
        assert offloaded == report["ops_offloaded"]
    with farm.sessions() as session:
        stored = dict(
            session.execute(
                select(OpCost.device_class, func.count())
                .where(OpCost.device_class.in_(classes))
                .group_by(OpCost.device_class)
            ).all()
        )
    # Both phones' classes have CPU and Neuron times of every candidate, probes, baseline.
    assert set(stored) == classes
    assert all(n >= 2 * 3 + 1 for n in stored.values())


def test_an_ab_job_runs_two_stored_builds_interleaved_on_its_phone(
    farm: Farm, devices: list[int], worker: WorkerProcess
) -> None:
    """An A/B job (what confirms an alert) through a real worker on PostgreSQL + Redis: the
    control's and the treatment's stored artifacts run interleaved under one lease, the run's
    result carries the experiment; a control whose artifact is not in the cache fails the run
    at compile, saying so."""
    from sqlalchemy import select

    from harness.db import Job, JobStatus, Run
    from harness.farm.confirm import ArmSpec, ExperimentSpec

    small = farm.add_model(testmodels.convnet(8, seed=5, size=32), "ab-small")
    large = farm.add_model(testmodels.convnet(32, seed=5, size=32), "ab-large")
    built = {}
    for model_id in (small, large):  # ordinary jobs build (and keep) each artifact
        job_id = farm.submit(model_id, devices[:1], ["tvm-cpu"], ["x:1x3x32x32"])
        assert [r.status for r in farm.wait_done(job_id, timeout_s=180)] == [RunStatus.done]
        (artifact,) = farm.artifacts(model_id)
        built[model_id] = artifact.cache_key

    def ab_job(control_key: str) -> int:
        spec = ExperimentSpec(
            series_id=1,
            alert_ids=[],
            control=ArmSpec(label="control", model_id=small, artifact_key=control_key),
            treatment=ArmSpec(label="treatment", model_id=large, artifact_key=built[large]),
            blocks=3,
            alpha=0.01,
            min_effect=0.01,
        )
        job_id = farm.create_job(large, devices[:1], ["tvm-cpu"], ["x:1x3x32x32"])
        with farm.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.experiment = spec.model_dump(mode="json")
            session.commit()
        farm.enqueue(job_id)
        return job_id

    job_id = ab_job(built[small])
    (run,) = farm.wait_done(job_id, timeout_s=240)
    assert run.status == RunStatus.done, (run.error_stage, run.error_message, worker.log())
    (result,) = farm.results(job_id)
    experiment = result.document["experiment"]
    assert experiment["blocks"] == 3
    assert experiment["control"]["artifact_key"] == built[small]
    assert experiment["treatment"]["artifact_key"] == built[large]
    assert len(experiment["control"]["blocks"]["median_ms"]) == 3
    latency = experiment["differences"]["median_ms"]
    assert latency["ratio"] > 2.0 and latency["verdict"] == "slower", experiment
    assert result.document["provenance"]["artifact_key"] == built[large]
    assert result.accuracy_passed is True  # the treatment's outputs against the reference
    assert farm.device(devices[0]).state == DeviceState.idle  # the lease is released

    missing = ab_job("0" * 32)
    (run,) = farm.wait_done(missing, timeout_s=120)
    assert run.status == RunStatus.failed and run.error_stage == "compile"
    assert "not in the compile cache" in (run.error_message or "")
    assert farm.job(missing).status == JobStatus.done
    with farm.sessions() as session:
        assert session.scalar(select(Run.attempts).where(Run.id == run.id)) == 1
