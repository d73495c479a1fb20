"""The API's bodies and answers for farm tunings (``/api/v1/tunings``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, model_validator

from api.schemas import (
    DeviceSelectorCreate,
    Listing,
    Public,
    RowId,
    StrictBody,
    Text,
)
from harness.db import Tuning, TuningStatus
from harness.farm.tunings import DEFAULT_TRIALS, MAX_BATCH, MAX_MINUTES, MAX_TRIALS, TuningRequest
from harness.jsontypes import MAX_THREADS
from harness.tuning import DEFAULT_POPULATION, MAX_POPULATION

InputText = Annotated[Text, Field(min_length=1, max_length=256)]


class TuningCreate(StrictBody):
    """Tune a model for the device classes of the selected devices (one tuning per class)."""

    model_id: RowId | None = None
    model_sha256: str | None = Field(default=None, pattern="^[0-9a-fA-F]{64}$")
    devices: DeviceSelectorCreate = Field(
        description="which devices' classes to tune for; candidates are measured on every idle "
        "good phone of each class"
    )
    backend: Annotated[Text, Field(min_length=1, max_length=64)] = "tvm-cpu"
    trials: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRIALS,
        description=f"trials per task, counting the records the farm holds already (default "
        f"{DEFAULT_TRIALS} when minutes is not given)",
    )
    minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES, description="a time budget")
    batch: int = Field(default=16, ge=1, le=MAX_BATCH, description="candidates per round")
    inputs: list[InputText] = Field(
        default_factory=list, max_length=64, description="input specs NAME:1x3x224x224[:dtype]"
    )
    threads: int = Field(
        default=0,
        ge=0,
        le=MAX_THREADS,
        description="TVM's thread pool while candidates are timed: the threads option of the "
        "runs the records are for (0: the runtime's default)",
    )
    population: int = Field(
        default=DEFAULT_POPULATION,
        ge=1,
        le=MAX_POPULATION,
        description="the evolutionary search's population: candidates it evolves, scored by "
        "the cost model, before it picks each batch to measure",
    )

    @model_validator(mode="after")
    def _one_model(self) -> TuningCreate:
        if (self.model_id is None) == (self.model_sha256 is None):
            raise ValueError("give the model by model_id or by model_sha256 (one of them)")
        if self.trials is not None and self.minutes is not None:
            raise ValueError("give trials or minutes, not both")
        return self

    def request(self) -> TuningRequest:
        return TuningRequest(
            devices=self.devices.selector(),
            backend=self.backend,
            trials=self.trials,
            minutes=self.minutes,
            batch=self.batch,
            inputs=tuple(self.inputs),
            threads=self.threads,
            population=self.population,
        )


class TuningPublic(Public):
    id: int
    model_id: int
    backend: str
    device_class: str
    target: str
    status: TuningStatus
    trials: int | None = Field(description="the budget: trials per task")
    minutes: float | None = Field(description="the budget: minutes")
    batch: int
    threads: int = Field(description="TVM's thread pool while timing (0: the runtime's default)")
    population: int = Field(description="the evolutionary search's population")
    attempts: int = Field(description="how many times a worker took it up (a resumed tuning: 2+)")
    night_id: int | None
    submitted_by: str
    report: dict[str, Any] = Field(
        description="tasks (trials before, measured now), batches, records saved, seconds, "
        "the phones that measured, the attempt it is of; kept current while it runs"
    )
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, tuning: Tuning) -> TuningPublic:
        return cls.model_validate(tuning)


class TuningsPublic(Listing):
    data: list[TuningPublic]


class TuningsSubmitted(Public):
    data: list[TuningPublic] = Field(description="one tuning per device class")
    enqueued: bool = Field(
        description="false: the broker was unreachable; the tunings stay queued and the "
        "workers' reaper sends them"
    )
