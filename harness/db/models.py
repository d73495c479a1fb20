"""The farm's schema (SQLAlchemy 2.0, typed). PostgreSQL in production, SQLite embedded.

The database is the source of truth for jobs and runs; Celery only carries ids. A device's
``state`` (idle/leased/running: what it is doing) is kept apart from its ``health``
(good/bad/maintenance/retired: whether it may be used), as in LAVA.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# JSONB on PostgreSQL, JSON elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always reads back an aware UTC datetime. PostgreSQL
    keeps the zone; SQLite stores the wall clock without one, so values are written in UTC
    and given back with UTC attached. The DDL is the plain DateTime's (no schema change)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    # A JSON column holds the dump of a harness type, read back through it where it crosses
    # a layer: Device.facts a DeviceFacts, Job.settings MeasurementSettings, Result.document
    # a ResultDocument, Artifact.options a backend's options, Artifact.provenance a Manifest.
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        datetime: UTCDateTime(timezone=True),
    }


class DeviceState(enum.StrEnum):
    idle = "idle"
    leased = "leased"
    running = "running"


class DeviceHealth(enum.StrEnum):
    good = "good"
    bad = "bad"
    maintenance = "maintenance"
    retired = "retired"
    # Measures, but its night's canary drifted beyond its own noise: its results are flagged.
    suspect = "suspect"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"


class RunStatus(enum.StrEnum):
    queued = "queued"
    compiling = "compiling"
    running = "running"
    done = "done"
    failed = "failed"

    @property
    def ended(self) -> bool:
        return self in (RunStatus.done, RunStatus.failed)


class ArtifactStatus(enum.StrEnum):
    building = "building"
    ready = "ready"
    failed = "failed"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as short strings with a CHECK constraint, the same on PostgreSQL and SQLite.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=16,
        validate_strings=True,
        values_callable=lambda e: [m.value for m in e],
    )


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("serial", name="uq_devices_serial"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The device's identity is its serial (ro.serialno; ``local@HOST`` for a host); the
    # address is where it was last registered, and may change (an emulated phone restarted on
    # another port, a phone on a new IP).
    serial: Mapped[str | None] = mapped_column(String(128), default=None)
    address: Mapped[str] = mapped_column(String(255), unique=True)
    pool: Mapped[str] = mapped_column(String(64), default="default", index=True)
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # DeviceFacts.dump()
    soc: Mapped[str] = mapped_column(String(64), default="", index=True)
    model_name: Mapped[str] = mapped_column(String(128), default="")
    target: Mapped[str] = mapped_column(String(32), default="host")
    state: Mapped[DeviceState] = mapped_column(
        _enum(DeviceState, "device_state"), default=DeviceState.idle
    )
    health: Mapped[DeviceHealth] = mapped_column(
        _enum(DeviceHealth, "device_health"), default=DeviceHealth.good
    )
    health_reason: Mapped[str | None] = mapped_column(Text, default=None)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    current_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", use_alter=True, name="fk_devices_current_run", ondelete="SET NULL"),
        default=None,
    )
    # The attempt of ``current_run_id`` that holds the lease: an earlier attempt of the same
    # run (its worker thought dead) can neither renew nor release it.
    lease_attempt: Mapped[int | None] = mapped_column(Integer, default=None)
    # A tuning's batch of candidates holds the lease instead of a run (``current_run_id`` is
    # then None): the ``tuning_slices`` row measuring on it (harness.farm.tunings). No foreign
    # key: a slice row is deleted once its tuning ends, and the lease never outlives it.
    tuning_slice_id: Mapped[int | None] = mapped_column(Integer, default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def queue(self) -> str:
        return f"device.{self.id}"


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    input_spec: Mapped[list[Any]] = mapped_column(default=list)  # declared inputs
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the backend's, resolved
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the artifact's Manifest
    compile_ms: Mapped[float | None] = mapped_column(Float, default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    status: Mapped[ArtifactStatus] = mapped_column(
        _enum(ArtifactStatus, "artifact_status"), default=ArtifactStatus.building
    )
    error_stage: Mapped[str | None] = mapped_column(String(16), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    submitted_by: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # MeasurementSettings dump
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.queued, index=True
    )
    nightly: Mapped[bool] = mapped_column(Boolean, default=False)
    # A suite's night (harness.db.regression.Night) and the option combination it measures.
    night_id: Mapped[int | None] = mapped_column(
        ForeignKey("nights.id", use_alter=True, name="fk_jobs_night", ondelete="CASCADE"),
        default=None,
        index=True,
    )
    variant: Mapped[str] = mapped_column(String(255), default="")
    # An A/B job (the confirmation of an alert): its runs measure ``experiment["control"]``
    # and ``["treatment"]`` interleaved (harness.farm.confirm.ExperimentSpec) instead of the
    # job's model alone; ``model_id`` is the treatment's model.
    experiment: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    runs: Mapped[list[Run]] = relationship(back_populates="job", order_by="Run.id")
    model: Mapped[Model] = relationship()


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("job_id", "device_id", "backend", name="uq_run"),
        # A device's newest runs (its page) read backwards from the newest, however many it has.
        Index("ix_runs_device_recent", "device_id", "id"),
        # The runs that ended within a window, or have not ended (utilisation).
        Index("ix_runs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    backend: Mapped[str] = mapped_column(String(32))
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.queued, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"), default=None)
    error_stage: Mapped[str | None] = mapped_column(String(16), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    job: Mapped[Job] = relationship(back_populates="runs")
    device: Mapped[Device] = relationship(foreign_keys=[device_id])
    result: Mapped[Result | None] = relationship(back_populates="run", uselist=False)


class Result(Base):
    """One measurement's result document, with the statistics that queries filter on as
    columns. ``run_id`` is unique: a run never produces two results."""

    __tablename__ = "results"
    __table_args__ = (
        # A series' runs in time order, and (covering) what a long series' points read.
        Index(
            "ix_results_points",
            "model_id",
            "device_id",
            "backend",
            "created_at",
            "id",
            "median_ms",
            "p90_ms",
            "status",
            "job_id",
        ),
        Index("ix_results_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    backend: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # ok | failed
    error_stage: Mapped[str | None] = mapped_column(String(16), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    median_ms: Mapped[float | None] = mapped_column(Float, default=None)
    mean_ms: Mapped[float | None] = mapped_column(Float, default=None)
    min_ms: Mapped[float | None] = mapped_column(Float, default=None)
    p90_ms: Mapped[float | None] = mapped_column(Float, default=None)
    p99_ms: Mapped[float | None] = mapped_column(Float, default=None)
    std_ms: Mapped[float | None] = mapped_column(Float, default=None)
    cv: Mapped[float | None] = mapped_column(Float, default=None)
    ci_low_ms: Mapped[float | None] = mapped_column(Float, default=None)
    ci_high_ms: Mapped[float | None] = mapped_column(Float, default=None)
    n: Mapped[int | None] = mapped_column(Integer, default=None)
    load_ms: Mapped[float | None] = mapped_column(Float, default=None)
    first_ms: Mapped[float | None] = mapped_column(Float, default=None)
    peak_rss_kb: Mapped[int | None] = mapped_column(BigInteger, default=None)
    accuracy_passed: Mapped[bool | None] = mapped_column(Boolean, default=None)
    max_abs_err: Mapped[float | None] = mapped_column(Float, default=None)
    cosine: Mapped[float | None] = mapped_column(Float, default=None)
    samples_ms: Mapped[list[Any]] = mapped_column(default=list)
    document: Mapped[dict[str, Any]] = mapped_column(default=dict)  # ResultDocument.dump()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="result")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class WorkerKind(enum.StrEnum):
    worker = "worker"  # a Celery worker: consumes ``queues``
    beat = "beat"  # the scheduler


class WorkerStatus(enum.StrEnum):
    up = "up"  # heartbeating (alive only while ``heartbeat_at`` is recent)
    stopped = "stopped"  # shut down on purpose
    down = "down"  # its supervisor gave up restarting it (``reason`` says why)


class Worker(Base):
    """A farm process that reports itself: a Celery worker (with the queues it consumes) or
    beat. It is *alive* while its heartbeat is younger than ``lease_timeout_s``; the row stays
    after it dies, so that health can say which phone lost its worker and since when."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[WorkerKind] = mapped_column(_enum(WorkerKind, "worker_kind"))
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    queues: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[WorkerStatus] = mapped_column(
        _enum(WorkerStatus, "worker_status"), default=WorkerStatus.up
    )
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class OpCost(Base):
    """A time measured on a device class for cost-guided partitioning (harness.byoc).

    ``variant`` says where it ran: ``cpu``, or the accelerator with its settings
    (``nnapi/fl7/fast_single_answer``); ``signature`` is an offload candidate's
    (harness.byoc.candidates.signature), ``probe:<bytes>`` for a boundary probe, or
    ``model:<key>`` for a whole model on the CPU (the baseline). ``software`` is the TVM and
    BYOC code version the time belongs to: a new version measures again.
    """

    __tablename__ = "op_costs"
    __table_args__ = (
        UniqueConstraint("device_class", "variant", "software", "signature", name="uq_op_cost"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_class: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(64))
    software: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(96))
    median_ms: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(256), default="")
    device: Mapped[str] = mapped_column(String(128), default="")  # the device it ran on
    measured_at: Mapped[datetime] = mapped_column(default=utcnow)


class TuningWorkload(Base):
    """A TIR function MetaSchedule tuned (its ``Workload``): ``shash`` is TVM's structural
    hash, ``workload`` the JSON MetaSchedule writes for it (hash and the serialized module),
    ``sha256`` the digest of that JSON (two modules of one hash stay apart)."""

    __tablename__ = "tuning_workloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    shash: Mapped[str] = mapped_column(String(32), index=True)
    workload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TuningRecord(Base):
    """One measured candidate of a workload on a device class for a compile target, as
    MetaSchedule's JSON tuning record (trace, run seconds, TVM target, argument info).
    ``run_s`` is the mean measured time (None: the candidate failed to run); ``software`` the
    TVM version that made it (records of another version are not applied). ``confirmed_s``:
    the record's median time in its workload's latest confirmation (its best records timed
    again side by side, :mod:`harness.tuning.confirm`); None: not among those timed. A build
    applies a workload's fastest confirmed record when it has one."""

    __tablename__ = "tuning_records"
    __table_args__ = (
        UniqueConstraint(
            "device_class", "target", "software", "workload_id", "sha256", name="uq_tuning_record"
        ),
        Index("ix_tuning_records_class_target", "device_class", "target", "software"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("tuning_workloads.id", ondelete="CASCADE"))
    device_class: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(64))
    software: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    record: Mapped[str] = mapped_column(Text)
    run_s: Mapped[float | None] = mapped_column(Float, default=None)
    confirmed_s: Mapped[float | None] = mapped_column(Float, default=None)
    device: Mapped[str] = mapped_column(String(128), default="")  # the device that measured it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TuningStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"  # its budget is spent (or nothing was left to tune)
    failed = "failed"
    cancelled = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (TuningStatus.done, TuningStatus.failed, TuningStatus.cancelled)


class Tuning(Base):
    """A farm tuning (``POST /api/v1/tunings``): MetaSchedule's search for one model and one
    device class, run on the ``tuning`` queue, its candidates measured on the class's idle
    phones (:class:`TuningSlice`). Owned like a run: ``attempts`` counts the claims, and the
    claim with the current count is the only one that may end it; a claimant silent beyond
    the lease timeout (its worker died) is replaced, and the replacement continues from the
    records already saved. ``report`` is the :class:`~harness.tuning.session.TuningReport`'s
    dump, kept up to date as batches are saved."""

    __tablename__ = "tunings"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    backend: Mapped[str] = mapped_column(String(32), default="tvm-cpu")
    device_class: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(32))
    pool: Mapped[str] = mapped_column(String(64), default="default")
    inputs: Mapped[list[Any]] = mapped_column(default=list)  # input specs, NAME:SHAPE[:DTYPE]
    trials: Mapped[int | None] = mapped_column(Integer, default=None)  # per task
    minutes: Mapped[float | None] = mapped_column(Float, default=None)
    batch: Mapped[int] = mapped_column(Integer, default=16)
    # TVM's thread pool while candidates are timed (the runs' option ``threads``); 0: the
    # runtime's default.
    threads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The evolutionary search's population (harness.tuning.DEFAULT_POPULATION, which every
    # tuning before the column searched with).
    population: Mapped[int] = mapped_column(Integer, default=64, server_default="64")
    status: Mapped[TuningStatus] = mapped_column(
        _enum(TuningStatus, "tuning_status"), default=TuningStatus.queued, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    night_id: Mapped[int | None] = mapped_column(
        ForeignKey("nights.id", ondelete="SET NULL"), default=None, index=True
    )
    submitted_by: Mapped[str] = mapped_column(String(128), default="")
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    model: Mapped[Model] = relationship()


class SliceStatus(enum.StrEnum):
    pending = "pending"  # sent to its phone's queue, not started
    running = "running"  # its phone's worker holds the lease and measures
    done = "done"  # ``results`` holds a timing or an error per candidate
    declined = "declined"  # the phone was busy (a run holds it or waits for it): not measured
    failed = "failed"  # the phone could not be used; ``error`` says why

    @property
    def ended(self) -> bool:
        return self in (SliceStatus.done, SliceStatus.declined, SliceStatus.failed)


class TuningSlice(Base):
    """One phone's share of a batch of candidates: the candidates' libraries (``bundle``, a
    tar of ``k<i>.so`` files, dropped once measured) and their arguments (``plan``), sent to
    the phone's queue; the phone's worker measures them under a lease of its own and writes
    ``results`` (one ``{costs_s}`` or ``{error}`` per candidate) and the phone's CPU count."""

    __tablename__ = "tuning_slices"

    id: Mapped[int] = mapped_column(primary_key=True)
    tuning_id: Mapped[int] = mapped_column(ForeignKey("tunings.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    status: Mapped[SliceStatus] = mapped_column(
        _enum(SliceStatus, "slice_status"), default=SliceStatus.pending
    )
    plan: Mapped[list[Any]] = mapped_column(default=list)  # [[argument texts], ...]
    bundle: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    results: Mapped[list[Any]] = mapped_column(default=list)
    cores: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
