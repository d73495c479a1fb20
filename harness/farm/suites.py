"""Suites and their nights in the farm's database. Functions take ``session`` and never commit.

A night is started by inserting its row, unique on (suite, scheduled time), inside a savepoint:
whoever inserts it first starts the night, everyone else (a second beat, a restarted beat, a
redelivered tick) finds the key taken and starts nothing. The jobs of the night are created in
the same transaction, so a night exists with all its jobs or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness.config import get_settings
from harness.db import Device, Job, Model, Night, NightStatus, NightTrigger, Series, Suite, utcnow
from harness.errors import EdgefarmError
from harness.farm import InvalidRequest, NotFound
from harness.farm.jobs import create_job
from harness.farm.models import StagedModel, models_dir, store_model
from harness.farm.queries import MAX_ID
from harness.farm.selection import DeviceSelector, NoDevicesMatch, select_devices
from harness.regression.canary import (
    CANARY_BACKEND,
    CANARY_NAME,
    CANARY_SETTINGS,
    CANARY_VARIANT,
    canary_bytes,
    canary_sha256,
)
from harness.regression.suites import SuiteChanges, SuiteFields, SuiteInvalid, SuiteSpec, due_time
from harness.regression.toolchain import DeviceBuild, current

log = logging.getLogger(__name__)


def _checked(spec: SuiteSpec) -> SuiteSpec:
    try:
        spec.check()
    except SuiteInvalid as exc:
        raise InvalidRequest(exc.message, field=("spec", *exc.field)) from None
    return spec


def create_suite(session: Session, fields: SuiteFields, *, created_by: str) -> Suite:
    """A new suite (version 1); InvalidRequest when its name is taken or its spec cannot run."""
    _checked(fields.spec)
    if session.scalar(select(Suite.id).where(Suite.name == fields.name)) is not None:
        raise InvalidRequest(f"a suite named {fields.name!r} exists", field=("name",))
    suite = Suite(
        name=fields.name,
        description=fields.description,
        spec=fields.spec.model_dump(mode="json"),
        schedule=fields.schedule,
        timezone=fields.timezone,
        enabled=fields.enabled,
        created_by=created_by,
    )
    session.add(suite)
    session.flush()
    return suite


def get_suite(session: Session, key: str | int) -> Suite:
    """The suite called ``key``, else the one with id ``key``; NotFound otherwise. (A name may
    be all digits: the name is looked up first.)"""
    suite = None
    if isinstance(key, str):
        suite = session.scalar(select(Suite).where(Suite.name == key))
    number = key if isinstance(key, int) else int(key) if key.isascii() and key.isdigit() else 0
    if suite is None and 1 <= number <= MAX_ID:
        suite = session.get(Suite, number)
    if suite is None:
        raise NotFound("suite", "name" if isinstance(key, str) else "id", key)
    return suite


def list_suites(session: Session) -> list[Suite]:
    return list(session.scalars(select(Suite).order_by(Suite.name)))


def spec_of(suite: Suite) -> SuiteSpec:
    return SuiteSpec.model_validate(suite.spec)


def update_suite(session: Session, suite: Suite, changes: SuiteChanges) -> Suite:
    """``changes`` applied; a changed spec is a new version of the suite. The stored spec is
    read as the spec model reads it now, so that a field a later edgefarm added (with its
    default) is no change."""
    if changes.spec is not None:
        spec = _checked(changes.spec).model_dump(mode="json")
        if spec != spec_of(suite).model_dump(mode="json"):
            suite.spec = spec
            suite.version += 1
    for name in ("description", "schedule", "timezone", "enabled"):
        value = getattr(changes, name)
        if value is not None:
            setattr(suite, name, value)
    suite.updated_at = utcnow()
    session.flush()
    return suite


def delete_suite(session: Session, suite: Suite) -> None:
    """The suite, its nights, series and alerts go; its jobs and results stay (unlinked)."""
    nights = select(Night.id).where(Night.suite_id == suite.id)
    for job in session.scalars(select(Job).where(Job.night_id.in_(nights))):
        job.night_id = None
    session.flush()
    session.delete(suite)
    session.flush()


def latest_model(session: Session, name: str) -> tuple[Model, int] | None:
    """The newest upload called ``name`` and its version (1 for the first upload)."""
    rows = list(
        session.scalars(
            select(Model).where(Model.name == name).order_by(Model.created_at, Model.id)
        )
    )
    return (rows[-1], len(rows)) if rows else None


def due(session: Session, now: datetime) -> list[tuple[Suite, datetime]]:
    """Each enabled suite whose schedule has fired since its last scheduled night (or since it
    was created), with the latest such time: a night missed while the farm was down runs once."""
    last = dict(
        session.execute(
            select(Night.suite_id, func.max(Night.scheduled_for))
            .where(Night.trigger == NightTrigger.schedule)
            .group_by(Night.suite_id)
        ).all()
    )
    found = []
    for suite in session.scalars(select(Suite).where(Suite.enabled.is_(True)).order_by(Suite.id)):
        after = last.get(suite.id) or suite.created_at
        when = due_time(suite.schedule, suite.timezone, now=now, after=after)
        if when is not None:
            found.append((suite, when))
    return found


@dataclass
class Started:
    """A night that was started: its row and the jobs to enqueue once committed."""

    night: Night
    job_ids: list[int] = field(default_factory=list)
    tuning_ids: list[int] = field(default_factory=list)  # sent after the jobs


def _night_tunings(
    session: Session, suite: Suite, spec: SuiteSpec, night: Night, problems: list[dict[str, str]]
) -> list[int]:
    """The night's tunings (the suite's budget): per model, one per device class of the suite's
    devices."""
    from harness.farm.tunings import TuningRequest, create_tunings

    budget = spec.tuning
    assert budget is not None
    ids: list[int] = []
    for name in spec.models:
        found = latest_model(session, name)
        if found is None:
            continue  # already a problem of the night
        request = TuningRequest(
            devices=_selector(spec),
            trials=budget.trials,
            minutes=budget.minutes,
            batch=budget.batch,
            inputs=tuple(spec.settings.inputs),
            threads=budget.threads,
            population=budget.population,
        )
        try:
            with session.begin_nested():
                tunings = create_tunings(
                    request,
                    model=found[0],
                    session=session,
                    submitted_by=f"suite:{suite.name}",
                    night_id=night.id,
                )
        except (InvalidRequest, NoDevicesMatch) as exc:
            problems.append({"what": f"tuning {name}", "message": exc.message})
            continue
        ids += [t.id for t in tunings]
    return ids


def _selector(spec: SuiteSpec) -> DeviceSelector:
    d = spec.devices
    return DeviceSelector(
        pool=d.pool, soc=d.soc, model=d.model, ids=tuple(d.ids) if d.ids else None, all=d.all
    )


def _series(
    session: Session, suite: Suite, model_name: str, device: Device, backend: str, variant: str
) -> Series:
    found = session.scalar(
        select(Series).where(
            Series.suite_id == suite.id,
            Series.model_name == model_name,
            Series.device_id == device.id,
            Series.backend == backend,
            Series.variant == variant,
        )
    )
    if found is None:
        found = Series(
            suite_id=suite.id,
            model_name=model_name,
            device_id=device.id,
            backend=backend,
            variant=variant,
        )
        session.add(found)
        session.flush()
    return found


def canary_model(session: Session) -> Model:
    """The canary's Model row, stored in the farm's model store on first use (not committed)."""
    found = session.scalar(select(Model).where(Model.sha256 == canary_sha256()))
    if found is not None:
        return found
    settings = get_settings()
    with StagedModel(models_dir(), settings.max_upload_mb * 1024 * 1024) as staged:
        staged.write(canary_bytes())
        model, _ = store_model(staged, f"{CANARY_NAME}.onnx", session=session)
    return model


def _canary_job(
    session: Session,
    suite: Suite,
    night: Night,
    devices: list[Device],
    toolchains: dict[str, object],
    problems: list[dict[str, str]],
) -> int | None:
    """The night's canary job (:mod:`harness.regression.canary`) on ``devices``, its series
    and their toolchains; None, with a problem recorded, when it cannot be made."""
    try:
        with session.begin_nested():
            model = canary_model(session)
            job = create_job(
                session=session,
                model=model,
                devices=devices,
                backends=[CANARY_BACKEND],
                settings=CANARY_SETTINGS,
                submitted_by=f"suite:{suite.name}",
                nightly=True,
            )
    except (EdgefarmError, OSError) as exc:
        message = exc.message if isinstance(exc, EdgefarmError) else str(exc)
        problems.append({"what": "canary", "message": message})
        return None
    job.night_id = night.id
    job.variant = CANARY_VARIANT
    for device in devices:
        series = _series(session, suite, CANARY_NAME, device, CANARY_BACKEND, CANARY_VARIANT)
        facts = device.facts or {}
        toolchains[str(series.id)] = current(
            model_sha256=model.sha256,
            model_version=1,
            device=DeviceBuild(
                fingerprint=str(facts.get("fingerprint") or ""),
                nnapi_feature_level=facts.get("nnapi_feature_level"),
            ),
            options={},
        ).model_dump(mode="json")
    return job.id


def start_night(
    session: Session,
    suite: Suite,
    *,
    scheduled_for: datetime,
    trigger: NightTrigger,
) -> Started | None:
    """Start ``suite``'s night for ``scheduled_for``: the night row, one job per (model,
    backend, variant) on the suite's devices (suspect ones too), and the toolchain of each
    series; when anything runs, the device canary's job comes first in ``job_ids``, so that
    its runs reach each phone's queue before the suite's. None when that night exists
    already. A model or device that is gone is a problem recorded on the night (the others
    still run); a night with nothing to run ends ``failed`` at once."""
    night = Night(
        suite_id=suite.id,
        scheduled_for=scheduled_for,
        suite_version=suite.version,
        trigger=trigger,
        status=NightStatus.running,
    )
    try:
        with session.begin_nested():
            session.add(night)
            session.flush()
    except IntegrityError:
        return None

    spec = spec_of(suite)
    problems: list[dict[str, str]] = []
    toolchains: dict[str, object] = {}
    started = Started(night)
    try:
        # A suspect phone measures too: its canary is how it comes back to good.
        devices = select_devices(_selector(spec), session=session, suspect=True)
    except (NoDevicesMatch, InvalidRequest) as exc:
        devices = []
        problems.append({"what": "devices", "message": exc.message})
    for name in spec.models:
        found = latest_model(session, name)
        if found is None:
            problems.append(
                {"what": f"model {name}", "message": f"no model named {name!r} is uploaded"}
            )
            continue
        model, version = found
        for backend in spec.backends if devices else []:
            for variant in spec.variants(backend):
                request = spec.settings.model_copy(update={"options": {backend: variant.options}})
                try:
                    with session.begin_nested():
                        job = create_job(
                            session=session,
                            model=model,
                            devices=devices,
                            backends=[backend],
                            settings=request,
                            submitted_by=f"suite:{suite.name}",
                            nightly=True,
                        )
                except InvalidRequest as exc:
                    problems.append({"what": f"{name} with {backend}", "message": exc.message})
                    continue
                job.night_id = night.id
                job.variant = variant.label
                started.job_ids.append(job.id)
                options = job.settings.get("options", {}).get(backend, {})
                for device in devices:
                    series = _series(session, suite, name, device, backend, variant.label)
                    facts = device.facts or {}
                    toolchains[str(series.id)] = current(
                        model_sha256=model.sha256,
                        model_version=version,
                        device=DeviceBuild(
                            fingerprint=str(facts.get("fingerprint") or ""),
                            nnapi_feature_level=facts.get("nnapi_feature_level"),
                        ),
                        options=options,
                    ).model_dump(mode="json")
    if spec.tuning is not None and devices:
        started.tuning_ids = _night_tunings(session, suite, spec, night, problems)
    if started.job_ids:
        canary = _canary_job(session, suite, night, devices, toolchains, problems)
        if canary is not None:
            started.job_ids.insert(0, canary)  # sent first: on each phone before the suite
    night.toolchain = {"series": toolchains}
    night.problems = problems
    if not started.job_ids:
        night.status = NightStatus.failed
        night.finished_at = utcnow()
    for problem in problems:
        log.warning("suite %s night %s: %s: %s", suite.name, night.id, *problem.values())
    session.flush()
    return started
