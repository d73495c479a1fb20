"""What the farm's work produces, recorded idempotently: compiled artifacts and run results.

A run never produces two results: ``results.run_id`` is unique and :func:`record_result`
inserts with ``ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite), so a second recording of the
same run — a redelivered message, a worker thought dead that was only slow — leaves the first
one in place and returns it. Functions here never commit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness.db import Artifact, ArtifactStatus, Result, Run, utcnow
from harness.errors import JobError

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


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def result_columns(document: dict[str, Any]) -> dict[str, Any]:
    """The statistics columns of a Result, read from its result document."""
    latency = document.get("latency_ms") or {}
    accuracy = document.get("accuracy") or {}
    error = document.get("error") or {}
    ci = latency.get("ci95") or [None, None]
    passed = accuracy.get("passed")
    return {
        "status": "ok" if document.get("status") == "ok" else "failed",
        "error_stage": error.get("stage"),
        "error_message": error.get("message"),
        "median_ms": _float(latency.get("median")),
        "mean_ms": _float(latency.get("mean")),
        "min_ms": _float(latency.get("min")),
        "p90_ms": _float(latency.get("p90")),
        "p99_ms": _float(latency.get("p99")),
        "std_ms": _float(latency.get("std")),
        "cv": _float(latency.get("cv")),
        "ci_low_ms": _float(ci[0]),
        "ci_high_ms": _float(ci[1]),
        "n": _int(latency.get("n")),
        "load_ms": _float(document.get("load_ms")),
        "first_ms": _float(document.get("first_ms")),
        "peak_rss_kb": _int(document.get("peak_rss_kb")),
        "accuracy_passed": passed if isinstance(passed, bool) else None,
        "max_abs_err": _float(accuracy.get("max_abs_err")),
        "cosine": _float(accuracy.get("cosine")),
        "samples_ms": [s for s in map(_float, document.get("samples_ms") or []) if s is not None],
    }


def _insert_ignoring_conflict(
    session: Session, table: Table, values: dict[str, Any], conflict: str
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


def record_result(run: Run, document: dict[str, Any], *, session: Session) -> Result:
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
        "document": json_safe(document),
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
    options: dict[str, Any],
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
