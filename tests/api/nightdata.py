"""Nights of a suite written as the farm's workers write them, with measurements of known
truth: what tests of the nightly analysis (tests/api/test_night_analysis.py, test_canary.py)
build their histories from."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.db import (
    Device,
    Job,
    JobStatus,
    Model,
    Night,
    NightTrigger,
    Result,
    RunStatus,
    Suite,
    utcnow,
)
from harness.farm.analysis import close_finished_nights
from harness.farm.suites import create_suite, start_night
from harness.regression.suites import SuiteFields

FIRST = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def add_model(session: Session, name: str) -> Model:
    """An uploaded model called ``name`` (a new version if the name exists)."""
    model = Model(
        sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        name=name,
        format="onnx",
        size_bytes=1000,
        input_spec=[],
    )
    session.add(model)
    session.flush()
    return model


def add_suite(session: Session, devices: list[Device], models: list[str], prefix: str) -> Suite:
    """A suite of ``models`` with tvm-cpu on ``devices``."""
    fields = SuiteFields(
        name=f"{prefix}-{uuid.uuid4().hex[:8]}",
        spec={
            "models": models,
            "backends": ["tvm-cpu"],
            "devices": {"ids": [d.id for d in devices]},
        },
    )
    return create_suite(session, fields, created_by="tester")


def measured_night(
    session: Session,
    suite: Suite,
    k: int,
    median_ms: Callable[[str, int], float],
    rng: np.random.Generator,
    *,
    failed: dict[str, str] | None = None,
    first: datetime = FIRST,
) -> Night:
    """Night ``k`` of ``suite`` (``k`` days after ``first``), started, measured and closed: each
    run at ``median_ms(model name, device id)`` with 1% noise, or failed at the stage
    ``failed[model name]``."""
    started = start_night(
        session, suite, scheduled_for=first + timedelta(days=k), trigger=NightTrigger.schedule
    )
    assert started is not None
    for job in session.scalars(select(Job).where(Job.id.in_(started.job_ids))):
        name = job.model.name
        for run in job.runs:
            stage = (failed or {}).get(name)
            ok = stage is None
            median = median_ms(name, run.device_id) * float(np.exp(rng.normal(0.0, 0.01)))
            run.status = RunStatus.done if ok else RunStatus.failed
            run.attempts = 1
            run.error_stage = stage
            run.error_message = None if ok else "outputs differ from onnxruntime"
            run.finished_at = utcnow()
            session.add(
                Result(
                    run_id=run.id,
                    job_id=job.id,
                    model_id=job.model_id,
                    device_id=run.device_id,
                    backend=run.backend,
                    status="ok" if ok else "failed",
                    error_stage=stage,
                    median_ms=median if ok else None,
                    load_ms=5.0 if ok else None,
                    peak_rss_kb=20_000 if ok else None,
                    document={"provenance": {"runner_version": "1"}},
                )
            )
        job.status = JobStatus.done
    session.flush()
    assert close_finished_nights(session) == [started.night.id]
    return started.night
