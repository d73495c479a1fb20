"""The farm's database: schema, engines, sessions."""

from harness.db.models import (
    ApiToken,
    Artifact,
    ArtifactStatus,
    Base,
    Device,
    DeviceHealth,
    DeviceState,
    Job,
    JobStatus,
    Model,
    OpCost,
    Result,
    Run,
    RunStatus,
    Worker,
    WorkerKind,
    WorkerStatus,
    utcnow,
)
from harness.db.session import database_url, make_engine, make_session_factory, session_scope

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "Artifact",
    "ArtifactStatus",
    "Base",
    "Device",
    "DeviceHealth",
    "DeviceState",
    "Job",
    "JobStatus",
    "Model",
    "OpCost",
    "Result",
    "Run",
    "RunStatus",
    "Worker",
    "WorkerKind",
    "WorkerStatus",
    "database_url",
    "make_engine",
    "make_session_factory",
    "metadata",
    "session_scope",
    "utcnow",
]
