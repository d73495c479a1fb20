"""The device canary (real PostgreSQL): each night measures a fixed reference model on each
phone first; a phone whose canary drifts beyond its own noise becomes ``suspect`` and that
night's alerts on it are flagged; it is good again when its canary returns.

Results are written as a worker writes them, with canary and model latencies whose truth is
known (as in tests/api/test_night_analysis.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from nightdata import add_model, add_suite, measured_night
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.config import Settings
from harness.db import (
    AlertKind,
    Device,
    DeviceHealth,
    Job,
    Model,
    Night,
    NightTrigger,
    Series,
    Suite,
)
from harness.devices.records import HealthReport
from harness.farm.analysis import alert_groups, alert_payload, analyse_night
from harness.farm.models import model_path
from harness.farm.registry import record_health
from harness.farm.selection import DeviceSelector, NoDevicesMatch, select_devices
from harness.farm.suites import canary_model, start_night
from harness.regression import canary
from harness.regression.canary import (
    CANARY_NAME,
    CANARY_SETTINGS,
    CANARY_VARIANT,
    CanaryRule,
    canary_drift,
)

FIRST = datetime(2026, 10, 1, 2, 0, tzinfo=UTC)
SETTINGS = Settings(detect_max_pvalue=0.001, detect_min_effect=0.03)
CANARY_MS = 2.0


def _suite(session: Session, devices: list[Device], models: list[str]) -> Suite:
    for name in models:
        add_model(session, name)
    return add_suite(session, devices, models, "canary")


def _night(
    session: Session,
    suite: Suite,
    k: int,
    latency: dict[tuple[str, int], float],
    rng: np.random.Generator,
) -> Night:
    """Night ``k``, measured: each (model name, device id) at ``latency`` (default: the
    canary at CANARY_MS, a model at 10 ms), with 1% noise."""

    def median_ms(name: str, device_id: int) -> float:
        return latency.get((name, device_id), CANARY_MS if name == CANARY_NAME else 10.0)

    return measured_night(session, suite, k, median_ms, rng, first=FIRST)


@pytest.fixture
def phones(farm: dict[str, Any]) -> list[Device]:
    return [farm["devices"]["mtk-a"], farm["devices"]["mtk-b"]]


def test_the_canary_is_the_same_model_every_time_stored_once(session: Session) -> None:
    sha = canary.canary_sha256()
    canary.canary_bytes.cache_clear()
    assert canary.canary_sha256() == sha  # built again from scratch: the same bytes
    model = canary_model(session)
    assert (model.name, model.sha256, model.format) == (CANARY_NAME, sha, "onnx")
    assert hashlib.sha256(model_path(model).read_bytes()).hexdigest() == sha
    assert canary_model(session).id == model.id


def test_the_drift_rule_judges_a_phone_against_its_own_noise() -> None:
    steady = [2.0, 2.02, 1.98, 2.01, 1.99, 2.0]
    assert canary_drift(2.0, steady[:4]) is None  # too little history: no verdict
    calm = canary_drift(2.05, steady)
    assert calm is not None and not calm.drifting and calm.nights == 6
    jump = canary_drift(2.6, steady)
    assert jump is not None and jump.drifting
    assert jump.ratio == pytest.approx(1.3, rel=0.01) and jump.baseline_ms == pytest.approx(2.0)
    assert "+30.0%" in jump.describe()
    faster = canary_drift(1.5, steady)
    assert faster is not None and faster.drifting  # too fast is as suspect as too slow
    # A phone that is noisy by nature may move further before it is suspect.
    noisy = [2.0, 2.4, 1.7, 2.2, 1.8, 2.5, 1.6]
    wide = canary_drift(2.6, noisy)
    assert wide is not None and not wide.drifting and wide.bound > 0.3
    assert canary_drift(2.6, steady, CanaryRule(min_change=0.5)).drifting is False  # type: ignore[union-attr]


def test_a_night_queues_the_canary_first_on_every_phone(
    session: Session, phones: list[Device]
) -> None:
    suite = _suite(session, phones, ["alpha", "beta"])
    started = start_night(session, suite, scheduled_for=FIRST, trigger=NightTrigger.schedule)
    assert started is not None and len(started.job_ids) == 3
    first = session.get(Job, started.job_ids[0])
    assert first is not None
    assert (first.model.name, first.variant, first.night_id) == (
        CANARY_NAME,
        CANARY_VARIANT,
        started.night.id,
    )
    assert sorted((r.device_id, r.backend) for r in first.runs) == sorted(
        (d.id, "tvm-cpu") for d in phones
    )
    assert first.settings["warmup"] == CANARY_SETTINGS.warmup
    assert first.settings["min_iterations"] == CANARY_SETTINGS.min_iterations
    canary_series = session.scalars(
        select(Series).where(Series.suite_id == suite.id, Series.variant == CANARY_VARIANT)
    ).all()
    assert sorted(s.device_id for s in canary_series) == sorted(d.id for d in phones)
    assert all(str(s.id) in started.night.toolchain["series"] for s in canary_series)


def test_a_drifting_phone_is_suspect_its_alerts_flagged_until_its_canary_returns(
    session: Session, phones: list[Device]
) -> None:
    rng = np.random.default_rng(11)
    hot, calm = phones
    suite = _suite(session, phones, ["alpha"])
    for k in range(6):
        night = _night(session, suite, k, {}, rng)
        assert analyse_night(session, night.id, SETTINGS) == []
    assert (hot.health, calm.health) == (DeviceHealth.good, DeviceHealth.good)

    # The hot phone throttles: its canary and the model on it are 30% slower, nothing changed.
    slow = {(CANARY_NAME, hot.id): CANARY_MS * 1.3, ("alpha", hot.id): 13.0}
    night = _night(session, suite, 6, slow, rng)
    alerts = analyse_night(session, night.id, SETTINGS)
    assert hot.health == DeviceHealth.suspect
    assert hot.health_reason is not None and "canary" in hot.health_reason
    assert re.search(r"\(\+(2[7-9]|3[0-3])\.\d%, within ±15\.0% is noise\)", hot.health_reason)
    assert calm.health == DeviceHealth.good  # a steady phone stays good
    (alert,) = alerts  # alpha on the hot phone; never the canary's own series
    assert alert.series.model_name == "alpha" and alert.series.device_id == hot.id
    assert alert.kind == AlertKind.regression
    assert f"device {hot.id} is suspect" in alert.message
    payload = alert_payload(alert)
    assert payload["device_suspect"] is True
    assert payload["canary"]["ratio"] == pytest.approx(1.3, rel=0.03)  # type: ignore[index]
    assert night.toolchain["canary"][str(calm.id)]["suspect"] is False
    # Only the phone explains it (no toolchain change): recorded, not notified.
    assert alert_groups(night, alerts) == []

    # Still suspect, yet measured the next night: its canary is back, so it is good again.
    night = _night(session, suite, 7, {}, rng)
    analyse_night(session, night.id, SETTINGS)
    assert (hot.health, hot.health_reason) == (DeviceHealth.good, None)
    assert calm.health == DeviceHealth.good


def test_a_model_change_seen_on_a_suspect_phone_is_still_notified_flagged(
    session: Session, phones: list[Device]
) -> None:
    rng = np.random.default_rng(12)
    hot, calm = phones
    suite = _suite(session, phones, ["alpha"])
    for k in range(6):
        _night(session, suite, k, {}, rng)
    session.add(
        Model(
            sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
            name="alpha",
            format="onnx",
            size_bytes=1000,
            input_spec=[],
        )
    )  # version 2, slower on both phones; the hot phone also drifts tonight
    slow = {
        (CANARY_NAME, hot.id): CANARY_MS * 1.3,
        ("alpha", hot.id): 12.0,
        ("alpha", calm.id): 12.0,
    }
    night = _night(session, suite, 6, slow, rng)
    alerts = analyse_night(session, night.id, SETTINGS)
    assert sorted(a.series.device_id for a in alerts) == sorted(d.id for d in phones)
    ((_, body),) = alert_groups(night, alerts)  # one cause: the model version
    flags = {a["series"]["device_id"]: a["device_suspect"] for a in body["alerts"]}  # type: ignore[attr-defined]
    assert flags == {hot.id: True, calm.id: False}


def test_a_suspect_phone_runs_nights_and_named_benchmarks_only(
    session: Session, farm: dict[str, Any], phones: list[Device]
) -> None:
    hot, calm = phones
    hot.health, hot.health_reason = DeviceHealth.suspect, "canary drifted"
    session.flush()
    pool = DeviceSelector(pool=hot.pool)
    assert [d.id for d in select_devices(pool, session=session)] == [calm.id]
    assert [d.id for d in select_devices(pool, session=session, suspect=True)] == [hot.id, calm.id]
    assert [d.id for d in select_devices(DeviceSelector(ids=(hot.id,)), session=session)] == [
        hot.id
    ]
    with pytest.raises(NoDevicesMatch):
        select_devices(DeviceSelector(ids=(farm["devices"]["old"].id,)), session=session)

    # A passed health check does not clear what the canary found; a failed one still counts.
    ok: HealthReport = {
        "reachable": True,
        "shell": True,
        "free_bytes": None,
        "bundle_present": None,
        "ok": True,
        "problem": None,
    }
    record_health(session, hot, ok)
    assert (hot.health, hot.health_reason) == (DeviceHealth.suspect, "canary drifted")
    record_health(session, hot, {**ok, "ok": False, "problem": "adb is gone"})
    assert hot.health == DeviceHealth.bad


def test_a_phone_build_change_starts_its_canary_history_afresh(
    session: Session, phones: list[Device]
) -> None:
    rng = np.random.default_rng(13)
    updated, calm = phones
    suite = _suite(session, phones, ["alpha"])
    for k in range(6):
        _night(session, suite, k, {}, rng)
    # An OS update makes the phone 30% slower on purpose: a toolchain change, not a drift.
    updated.facts = {**updated.facts, "fingerprint": "vendor/phone:15/NEW"}
    slow = {(CANARY_NAME, updated.id): CANARY_MS * 1.3, ("alpha", updated.id): 13.0}
    night = _night(session, suite, 6, slow, rng)
    (alert,) = analyse_night(session, night.id, SETTINGS)
    assert updated.health == DeviceHealth.good
    assert night.toolchain["canary"][str(updated.id)] == {"drift": None, "suspect": False}
    assert night.toolchain["canary"][str(calm.id)]["drift"] is not None
    assert "suspect" not in alert.message and alert.changes  # the fingerprint changed
    ((_, body),) = alert_groups(night, [alert])
    assert body["alerts"][0]["device_suspect"] is False  # type: ignore[index]
