"""What the farm's work produces, recorded idempotently: compiled artifacts and run results.

A run never produces two results: ``results.run_id`` is unique and :func:`record_result`
inserts with ``ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite), so a second recording of the
same run — a redelivered message, a worker thought dead that was only slow — leaves the first
one in place and returns it. Functions here never commit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.db import Artifact, ArtifactStatus, Result, Run, utcnow
from harness.errors import JobError
from harness.jsontypes import BackendOptions
from harness.measure.document import ResultDocument

if TYPE_CHECKING:  # the compile package is heavy; only its Artifact's type is needed here
    from harness.compile import Artifact as BuiltArtifact


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars as Python numbers, every non-finite float as
    None (JSONB refuses NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _float(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


class ResultColumns(TypedDict):
    """The columns of a Result that queries filter on, read from its result document."""

    status: str
    error_stage: str | None
    error_message: str | None
    median_ms: float | None
    mean_ms: float | None
    min_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    std_ms: float | None
    cv: float | None
    ci_low_ms: float | None
    ci_high_ms: float | None
    n: int | None
    load_ms: float | None
    first_ms: float | None
    peak_rss_kb: int | None
    accuracy_passed: bool | None
    max_abs_err: float | None
    cosine: float | None
    samples_ms: list[float]


def result_columns(document: ResultDocument) -> ResultColumns:
    """The statistics columns of a Result, read from its result document."""
    latency, accuracy, error = document.latency_ms, document.accuracy, document.error
    return {
        "status": "ok" if document.status == "ok" else "failed",
        "error_stage": error.stage if error else None,
        "error_message": error.message if error else None,
        "median_ms": _float(latency.median) if latency else None,
        "mean_ms": _float(latency.mean) if latency else None,
        "min_ms": _float(latency.min) if latency else None,
        "p90_ms": _float(latency.p90) if latency else None,
        "p99_ms": _float(latency.p99) if latency else None,
        "std_ms": _float(latency.std) if latency else None,
        "cv": _float(latency.cv) if latency else None,
        "ci_low_ms": _float(latency.ci95[0]) if latency else None,
        "ci_high_ms": _float(latency.ci95[1]) if latency else None,
        "n": latency.n if latency else None,
        "load_ms": _float(document.load_ms),
        "first_ms": _float(document.first_ms),
        "peak_rss_kb": document.peak_rss_kb,
        "accuracy_passed": accuracy.passed if accuracy else None,
        "max_abs_err": _float(accuracy.max_abs_err) if accuracy else None,
        "cosine": _float(accuracy.cosine) if accuracy else None,
        "samples_ms": [s for s in map(_float, document.samples_ms) if s is not None],
    }


def _insert_ignoring_conflict(
    session: Session, table: Table, values: Mapping[str, object], conflict: str
) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            postgresql.insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[conflict])
        )
    elif dialect == "sqlite":
        session.execute(
            sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=[conflict])
        )
    else:  # any other database: a savepoint absorbs the duplicate
        try:
            with session.begin_nested():
                session.execute(table.insert().values(**values))
        except IntegrityError:
            pass


def record_result(run: Run, document: ResultDocument, *, session: Session) -> Result:
    """The Result of ``run`` from its result ``document``, inserted unless the run already has
    one; returns the stored Result (the earlier one, if there was)."""
    existing = session.scalar(select(Result).where(Result.run_id == run.id))
    if existing is not None:
        return existing
    table = Result.__table__
    assert isinstance(table, Table)
    values = {
        "run_id": run.id,
        "job_id": run.job_id,
        "model_id": run.job.model_id,
        "device_id": run.device_id,
        "backend": run.backend,
        "document": json_safe(document.dump()),
        "created_at": utcnow(),
        **result_columns(document),
    }
    _insert_ignoring_conflict(session, table, values, "run_id")
    stored = session.scalar(
        select(Result).where(Result.run_id == run.id).execution_options(populate_existing=True)
    )
    assert stored is not None
    return stored


def record_artifact(
    *,
    session: Session,
    model_id: int,
    key: str,
    backend: str,
    target: str,
    options: BackendOptions,
    built: BuiltArtifact | None = None,
    error: JobError | None = None,
) -> Artifact:
    """The Artifact row of cache key ``key``: ready with the build's manifest as provenance,
    or failed with the compile error. An existing row is updated (a rebuild after a failure
    caused by the farm, or a concurrent builder that got there first)."""
    if (built is None) == (error is None):
        raise ValueError("give exactly one of built and error")
    table = Artifact.__table__
    assert isinstance(table, Table)
    _insert_ignoring_conflict(
        session,
        table,
        {
            "cache_key": key,
            "model_id": model_id,
            "backend": backend,
            "target": target,
            "options": json_safe(options),
            "provenance": {},
            "status": ArtifactStatus.building.value,
            "created_at": utcnow(),
        },
        "cache_key",
    )
    row = session.scalar(
        select(Artifact).where(Artifact.cache_key == key).execution_options(populate_existing=True)
    )
    assert row is not None
    if built is not None:
        sizes = built.manifest.get("sizes", {})
        row.status = ArtifactStatus.ready
        row.provenance = json_safe(built.manifest)
        row.compile_ms = built.compile_ms
        row.size_bytes = sizes.get("total_bytes", sizes.get("library_bytes"))
        row.error_stage = row.error_message = None
    elif error is not None:
        row.status = ArtifactStatus.failed
        row.error_stage = error.stage
        row.error_message = error.message
    session.flush()
    return row
