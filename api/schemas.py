"""The API's request and response bodies (``XCreate`` in, ``XPublic`` / ``XsPublic`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)

from harness.db import Device, DeviceHealth, DeviceState, Job, JobStatus, Model, Result, Run
from harness.devices.base import DeviceFacts
from harness.farm.liveness import FarmLiveness, device_worker, offered
from harness.farm.selection import DeviceSelector, DeviceSummary
from harness.measure.document import ResultDocument
from harness.measure.protocol import NO_NUL as NO_NUL
from harness.measure.protocol import MeasurementRequest, MeasurementSettings

MAX_ID = 2**31 - 1  # row ids are PostgreSQL integers
MAX_BACKENDS = 16
# PostgreSQL's text and JSONB cannot hold NUL: no text the API takes may contain one.
Text = Annotated[str, Field(pattern=NO_NUL)]
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]


class StrictBody(BaseModel):
    """A request body: unknown fields are refused (422 naming the field)."""

    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Listing(Public):
    count: int = Field(description="how many match, over all pages")
    next: str | None = Field(description="the next page's URL, if there is one")


# Models.


class TensorSpecPublic(Public):
    name: str
    shape: list[int | str] = Field(description="sizes; names for dynamic dimensions")
    dtype: str


class ModelPublic(Public):
    id: int
    sha256: str
    name: str
    format: str
    size_bytes: int
    inputs: list[TensorSpecPublic]
    created_at: datetime

    @classmethod
    def of(cls, model: Model) -> ModelPublic:
        return cls(
            id=model.id,
            sha256=model.sha256,
            name=model.name,
            format=model.format,
            size_bytes=model.size_bytes,
            inputs=[TensorSpecPublic.model_validate(entry) for entry in model.input_spec],
            created_at=model.created_at,
        )


class ModelsPublic(Listing):
    data: list[ModelPublic]


# Devices.


class RunRef(Public):
    id: int
    job_id: int
    backend: str
    status: str


class DeviceLivenessPublic(Public):
    worker: str | None = Field(description="the farm process consuming the device's queue")
    alive: bool = Field(description="whether that worker's heartbeat is recent")
    heartbeat_at: datetime | None
    reason: str | None = Field(description="why it is not alive, when it is not")
    offered: bool = Field(
        description="whether new jobs may select the device (good health, and a live worker "
        "or none ever)"
    )


class DevicePublic(Public):
    id: int
    serial: str | None = Field(description="the device's identity (ro.serialno; local@HOST)")
    address: str
    pool: str
    soc: str
    model_name: str
    target: str
    facts: DeviceFacts
    state: DeviceState
    health: DeviceHealth
    health_reason: str | None
    worker: str | None = Field(description="the worker host that registered it")
    liveness: DeviceLivenessPublic
    current_run: RunRef | None
    lease_expires_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, device: Device, current_run: Run | None, liveness: FarmLiveness) -> DevicePublic:
        return cls(
            id=device.id,
            serial=device.serial,
            address=device.address,
            pool=device.pool,
            soc=device.soc,
            model_name=device.model_name,
            target=device.target,
            facts=DeviceFacts.from_dict(device.facts or {"id": device.address}),
            state=device.state,
            health=device.health,
            health_reason=device.health_reason,
            worker=device.worker,
            liveness=DeviceLivenessPublic(
                **device_worker(device, liveness),
                offered=device.health == DeviceHealth.good and offered(device, liveness),
            ),
            current_run=RunRef.model_validate(current_run) if current_run else None,
            lease_expires_at=device.lease_expires_at,
            last_seen_at=device.last_seen_at,
            created_at=device.created_at,
        )


class DevicesPublic(Listing):
    data: list[DevicePublic]


class DeviceUpdate(StrictBody):
    pool: Text | None = Field(default=None, min_length=1, max_length=64)
    health: DeviceHealth | None = None
    health_reason: Text | None = Field(
        default=None, max_length=2000, description='why; "" clears it'
    )


# Benchmarks and jobs.


class DeviceSelectorCreate(StrictBody):
    """Which devices: every given criterion must hold; ``all`` alone takes every good
    device. Only devices whose health is ``good`` are picked."""

    pool: Text | None = Field(default=None, min_length=1, max_length=64)
    soc: Text | None = Field(
        default=None, min_length=1, max_length=255, description="case-insensitive"
    )
    model: Text | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="case-insensitive substring of the model name",
    )
    ids: list[RowId] | None = Field(default=None, min_length=1, max_length=1000)
    all: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> DeviceSelectorCreate:
        given = [k for k in ("pool", "soc", "model", "ids") if getattr(self, k) is not None]
        if self.all and given:
            raise ValueError(f"all takes every good device; give it alone, not with {given}")
        if not self.all and not given:
            raise ValueError("say which devices: pool, soc, model, ids, or all: true")
        return self

    def selector(self) -> DeviceSelector:
        return DeviceSelector(
            pool=self.pool,
            soc=self.soc,
            model=self.model,
            ids=tuple(self.ids) if self.ids is not None else None,
            all=self.all,
        )


class BenchmarkSettings(MeasurementRequest):
    """The measurement protocol; what is left out takes the farm's defaults."""


class BenchmarkCreate(StrictBody):
    model_id: RowId | None = None
    model_sha256: str | None = Field(default=None, pattern="^[0-9a-fA-F]{64}$")
    devices: DeviceSelectorCreate
    backends: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_BACKENDS, description="tvm-cpu, ort, ..."
    )
    settings: BenchmarkSettings = Field(default_factory=BenchmarkSettings)

    @model_validator(mode="after")
    def _one_model(self) -> BenchmarkCreate:
        if (self.model_id is None) == (self.model_sha256 is None):
            raise ValueError("give the model by model_id or by model_sha256 (one of them)")
        return self


class ResultPublic(Public):
    id: int
    run_id: int
    job_id: int
    model_id: int
    device_id: int
    backend: str
    status: str
    created_at: datetime
    document: ResultDocument = Field(description="the result document (see the README)")

    @classmethod
    def of(cls, result: Result) -> ResultPublic:
        return cls.model_validate(result)


class ResultsPublic(Listing):
    data: list[ResultPublic]


class RunError(Public):
    stage: str | None
    message: str


class RunPublic(Public):
    id: int
    device_id: int
    backend: str
    status: str
    attempts: int
    artifact_id: int | None
    error: RunError | None
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: ResultPublic | None

    @classmethod
    def of(cls, run: Run, *, with_result: bool) -> RunPublic:
        error = (
            RunError(stage=run.error_stage, message=run.error_message)
            if run.error_message is not None
            else None
        )
        result = run.result if with_result else None
        return cls(
            id=run.id,
            device_id=run.device_id,
            backend=run.backend,
            status=run.status,
            attempts=run.attempts,
            artifact_id=run.artifact_id,
            error=error,
            created_at=run.created_at,
            enqueued_at=run.enqueued_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            result=ResultPublic.of(result) if result is not None else None,
        )


class JobFields(Public):
    id: int
    status: JobStatus
    model_id: int
    submitted_by: str
    nightly: bool
    experiment: dict[str, Any] | None = Field(
        description="an A/B job (the confirmation of an alert): its control and treatment "
        "(night, run, model version, stored artifact key), blocks and the alerts it confirms"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPublic(JobFields):
    settings: MeasurementSettings
    runs: list[RunPublic]

    @classmethod
    def of(cls, job: Job, *, with_results: bool = True) -> JobPublic:
        return cls(
            **JobFields.model_validate(job).model_dump(),
            settings=MeasurementSettings.model_validate(job.settings),
            runs=[RunPublic.of(run, with_result=with_results) for run in job.runs],
        )


class JobSubmitted(JobPublic):
    enqueued: bool = Field(
        description="false: the broker was unreachable; the runs stay queued and are "
        "enqueued again by the workers' reaper"
    )


class JobSummaryPublic(JobFields):
    runs: dict[str, int] = Field(description="how many runs are in each status")

    @classmethod
    def of(cls, job: Job) -> JobSummaryPublic:
        counts: dict[str, int] = {}
        for run in job.runs:
            counts[str(run.status)] = counts.get(str(run.status), 0) + 1
        return cls(**JobFields.model_validate(job).model_dump(), runs=counts)


class JobsPublic(Listing):
    data: list[JobSummaryPublic]


# Errors and health.


class ErrorPublic(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    type: str = Field(description="what kind of problem, e.g. missing, less_than_equal")
    loc: list[str | int] = Field(description='where: ["body", "settings", "warmup"]')
    msg: str
    input: Any = Field(default=None, description="the value given (NaN/Infinity as text)")
    ctx: dict[str, JsonValue] | None = None


class ValidationErrorPublic(BaseModel):
    detail: list[ValidationIssue]


class NoDevicesPublic(BaseModel):
    detail: str
    devices: list[DeviceSummary] = Field(description="the farm's devices, to pick again")


class ProcessPublic(BaseModel):
    name: str = Field(description="LABEL@HOST: device.3@lab-1, compile@lab-1, beat@lab-1")
    kind: Literal["worker", "beat"]
    host: str
    pid: int | None
    queues: list[str]
    status: Literal["up", "stopped", "down"] = Field(
        description="up: heartbeating (alive while recent); stopped: shut down on purpose; "
        "down: its supervisor gave up restarting it"
    )
    reason: str | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    alive: bool


class StarvedQueuePublic(BaseModel):
    queue: str
    waiting_runs: int
    device_id: int | None
    device_address: str | None


class BeatPublic(BaseModel):
    alive: bool
    last_tick_at: datetime | None
    age_s: float | None


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="ok: the farm can make progress; degraded: see problems (answered 503)"
    )
    database: Literal["ok", "down"]
    broker: Literal["ok", "down"]
    detail: str | None = Field(
        default=None,
        description="what is down; the database's and broker's own error text only for a "
        "caller with a token",
    )
    problems: list[str] = Field(default_factory=list)
    beat: BeatPublic | None = Field(default=None, description="when beat last ticked")
    workers: list[ProcessPublic] = Field(
        default_factory=list, description="farm processes alive or heard from within a day"
    )
    live_queues: list[str] = Field(
        default_factory=list, description="the device queues a live worker consumes"
    )
    starved_queues: list[StarvedQueuePublic] = Field(
        default_factory=list, description="queues with runs waiting and no live consumer"
    )
    runs_in_flight: int = 0
