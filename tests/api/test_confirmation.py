"""The A/B confirmation of regression alerts, in the farm's database (real PostgreSQL): which
alerts get an A/B job, what the job measures (the last good night's stored build against
tonight's, on the series' phone and on another of its class), how its experiments decide the
alert, and that nobody is told before they have.

The nights and the A/B runs' results are written as the farm's workers write them, with
block values whose truth is known (tests/api/nightdata.py); the whole loop with real A/B runs
on emulated phones is tests/test_nightly.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from nightdata import add_model, add_suite, measured_night
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.config import Settings
from harness.db import (
    Alert,
    AlertKind,
    Artifact,
    ConfirmationStatus,
    Delivery,
    Device,
    DeviceHealth,
    Job,
    JobStatus,
    Night,
    Result,
    Run,
    RunStatus,
    Suite,
    Webhook,
    utcnow,
)
from harness.devices.base import DeviceFacts
from harness.farm.analysis import analyse_night
from harness.farm.confirm import notify_settled, request_confirmations, settle_confirmations
from harness.farm.webhooks import create_webhook
from harness.regression.difference import paired_difference

SETTINGS = Settings(
    detect_max_pvalue=0.001, detect_min_effect=0.03, confirm_blocks=6, confirm_min_effect=0.01
)


@pytest.fixture
def phones(farm: dict[str, Any], session: Session) -> list[Device]:
    """mtk-a, mtk-b, and a second phone of mtk-a's class (same model and SoC)."""
    a = farm["devices"]["mtk-a"]
    twin = Device(
        address=f"tcp:twin-{uuid.uuid4().hex[:8]}:5555",
        pool=a.pool,
        soc=a.soc,
        model_name=a.model_name,
        health=DeviceHealth.good,
        facts=DeviceFacts(id="twin", kind="adb", model=a.model_name, soc=a.soc).dump(),
    )
    session.add(twin)
    session.commit()
    return [a, farm["devices"]["mtk-b"], twin]


def _with_artifacts(session: Session, night: Night) -> None:
    """Each run of ``night`` linked to a stored build of its own, as start_job records it."""
    for run in session.scalars(select(Run).join(Job).where(Job.night_id == night.id)):
        artifact = Artifact(
            cache_key=uuid.uuid4().hex,
            model_id=run.job.model_id,
            backend=run.backend,
            target="aarch64-linux-android",
            status="ready",
        )
        session.add(artifact)
        session.flush()
        run.artifact_id = artifact.id
    session.flush()


def _regression(
    session: Session, phones: list[Device], *, slower: float = 1.2
) -> tuple[Suite, list[Night], list[Alert]]:
    """Six steady nights of ``alpha`` on mtk-a and mtk-b, then a slower version: the
    seventh night's alerts (one per phone)."""
    rng = np.random.default_rng(11)
    add_model(session, "alpha")
    suite = add_suite(session, phones[:2], ["alpha"], "confirm")
    nights = []
    for k in range(6):
        night = measured_night(session, suite, k, lambda *_: 10.0, rng)
        _with_artifacts(session, night)
        assert analyse_night(session, night.id, SETTINGS) == []
        nights.append(night)
    add_model(session, "alpha")
    night = measured_night(session, suite, 6, lambda *_: 10.0 * slower, rng)
    _with_artifacts(session, night)
    nights.append(night)
    alerts = analyse_night(session, night.id, SETTINGS)
    kind = AlertKind.regression if slower > 1 else AlertKind.improvement
    assert len(alerts) == 2 and all(a.kind == kind for a in alerts)
    return suite, nights, alerts


def _block_values(
    ratio: float, rng: np.random.Generator, n: int, noise: float
) -> tuple[list[float], ...]:
    control = [10.0 * float(np.exp(rng.normal(0, noise))) for _ in range(n)]
    treatment = [c * ratio * float(np.exp(rng.normal(0, noise))) for c in control]
    return control, treatment


def _finish(
    session: Session, job: Job, outcome: dict[int, float | str], noise: float = 0.004
) -> None:
    """End the A/B job's runs as a worker does: per device, an experiment whose blocks show
    ``outcome[device]`` as the treatment's latency ratio (``noise``: the sd of each block's
    log), or a failure at that stage."""
    rng = np.random.default_rng(3)
    for run in job.runs:
        what = outcome[run.device_id]
        run.attempts, run.finished_at = 1, utcnow()
        if isinstance(what, str):
            run.status, run.error_stage, run.error_message = RunStatus.failed, what, "no phone"
            continue
        run.status = RunStatus.done
        blocks = (job.experiment or {})["blocks"]
        control, treatment = _block_values(what, rng, blocks, noise)
        differences = {
            "median_ms": paired_difference(control, treatment, alpha=0.01, min_effect=0.01)
        }
        spec = job.experiment or {}
        experiment = {
            "control": {"label": "A", "model_sha256": "a" * 64,
                        "artifact_key": spec["control"]["artifact_key"],
                        "blocks": {"median_ms": control}},
            "treatment": {"label": "B", "model_sha256": "b" * 64,
                          "artifact_key": spec["treatment"]["artifact_key"],
                          "blocks": {"median_ms": treatment}},
            "blocks": blocks, "min_effect": 0.01, "alpha": 0.01,
            "differences": {k: d.to_dict() for k, d in differences.items()},
        }  # fmt: skip
        session.add(
            Result(
                run_id=run.id,
                job_id=job.id,
                model_id=job.model_id,
                device_id=run.device_id,
                backend=run.backend,
                status="ok",
                median_ms=treatment[-1],
                document={"experiment": experiment},
            )
        )
    job.status = JobStatus.done
    session.flush()


def _deliveries(session: Session, suite: Suite) -> list[Delivery]:
    return list(
        session.scalars(
            select(Delivery).join(Webhook).where(Webhook.suite_id == suite.id).order_by(Delivery.id)
        )
    )


def test_each_regressed_series_gets_one_ab_job_of_its_stored_builds(
    session: Session, phones: list[Device]
) -> None:
    suite, nights, alerts = _regression(session, phones)
    create_webhook(session, suite, url="http://127.0.0.1:9/hook")
    job_ids = request_confirmations(session, nights[-1], alerts, SETTINGS)
    assert len(job_ids) == 2  # one per series (phone)
    for alert in alerts:
        assert alert.confirmation_status == ConfirmationStatus.pending
        job = session.get(Job, alert.confirmation_job_id)
        assert job is not None and job.id in job_ids
        assert job.submitted_by == "edgefarm:confirmation" and job.status == JobStatus.queued
        spec = job.experiment or {}
        assert spec["alert_ids"] == [alert.id] and spec["blocks"] == 6
        last_good = alert.last_good_night_id
        assert spec["control"]["night_id"] == last_good == nights[-2].id
        assert spec["treatment"]["night_id"] == nights[-1].id
        for side, night in (("control", nights[-2]), ("treatment", nights[-1])):
            run = session.get(Run, spec[side]["run_id"])
            assert run is not None and run.job.night_id == night.id
            assert run.device_id == alert.series.device_id
            artifact = session.get(Artifact, run.artifact_id)
            assert artifact is not None and spec[side]["artifact_key"] == artifact.cache_key
        assert job.model_id == session.get(Run, spec["treatment"]["run_id"]).job.model_id
        devices = sorted(r.device_id for r in job.runs)
        if alert.series.device_id == phones[0].id:  # mtk-a has a twin of its class
            assert devices == sorted([phones[0].id, phones[2].id])
        else:
            assert devices == [phones[1].id]
    queued = notify_settled(session)
    assert not any(key.endswith(f":{nights[-1].id}") for key in queued)
    assert _deliveries(session, suite) == []  # nobody is told before the A/B says


def test_the_ab_decides_confirmed_rejected_or_unavailable_and_only_what_stands_is_told(
    session: Session, phones: list[Device]
) -> None:
    suite, nights, alerts = _regression(session, phones)
    create_webhook(session, suite, url="http://127.0.0.1:9/hook")
    request_confirmations(session, nights[-1], alerts, SETTINGS)
    on_a = next(a for a in alerts if a.series.device_id == phones[0].id)
    on_b = next(a for a in alerts if a.series.device_id == phones[1].id)

    # mtk-a: its own phone's A/B failed, its twin's finds treatment 20% slower: confirmed,
    # decided by the twin. mtk-b: the A/B finds no difference: rejected.
    job_a = session.get(Job, on_a.confirmation_job_id)
    job_b = session.get(Job, on_b.confirmation_job_id)
    assert job_a is not None and job_b is not None
    _finish(session, job_a, {phones[0].id: "run", phones[2].id: 1.2})
    assert [a.id for a in settle_confirmations(session, SETTINGS)[0]] == [on_a.id]  # b queued
    assert on_a.confirmation_status == ConfirmationStatus.confirmed
    assert on_a.confirmation["decided_by"] == phones[2].id
    assert on_a.confirmation["ratio"] == pytest.approx(1.2, rel=0.02)
    assert on_a.confirmation["verdict"] == "slower"
    failed = [e for e in on_a.confirmation["experiments"] if "error" in e]
    assert [(e["device_id"], e["error"]) for e in failed] == [
        (phones[0].id, "failed at run: no phone")
    ]
    assert "confirmed by A/B on device" in on_a.message
    assert not any(str(nights[-1].id) in key for key in notify_settled(session))  # b pending

    _finish(session, job_b, {phones[1].id: 1.0})
    assert settle_confirmations(session, SETTINGS) == ([on_b], [])
    assert on_b.confirmation_status == ConfirmationStatus.rejected
    assert on_b.confirmation["verdict"] in ("same", "inconclusive")
    assert "not confirmed by A/B" in on_b.message

    queued = [k for k in notify_settled(session) if k.endswith(f":{nights[-1].id}")]
    assert len(queued) == 1  # one group: the confirmed alert only
    (delivery,) = _deliveries(session, suite)
    told = delivery.payload["alerts"]
    assert [a["id"] for a in told] == [on_a.id]
    assert told[0]["confirmation_status"] == "confirmed"
    assert session.get(Night, nights[-1].id).notified_at is not None
    assert not any(k.endswith(f":{nights[-1].id}") for k in notify_settled(session))  # once


def test_an_ab_that_cannot_run_leaves_the_alert_standing_and_says_why(
    session: Session, phones: list[Device]
) -> None:
    _, nights, alerts = _regression(session, phones)
    request_confirmations(session, nights[-1], alerts, SETTINGS)
    for alert in alerts:
        job = session.get(Job, alert.confirmation_job_id)
        assert job is not None
        if job.status != JobStatus.done:
            _finish(session, job, {run.device_id: "compile" for run in job.runs})
    settle_confirmations(session, SETTINGS)
    for alert in alerts:
        assert alert.confirmation_status == ConfirmationStatus.unavailable
        assert "the A/B could not run" in alert.confirmation["reason"]
        assert "failed at compile" in alert.confirmation["reason"]


def test_improvements_are_not_remeasured_and_no_blocks_means_no_confirmation(
    session: Session, phones: list[Device]
) -> None:
    suite, nights, alerts = _regression(session, phones)
    off = SETTINGS.model_copy(update={"confirm_blocks": 0})
    assert request_confirmations(session, nights[-1], alerts, off) == []
    assert all(a.confirmation_status is None for a in alerts)
    create_webhook(session, suite, url="http://127.0.0.1:9/hook")
    assert [k for k in notify_settled(session) if k.endswith(f":{nights[-1].id}")]

    _, later, faster = _regression(session, phones, slower=0.8)  # improvements
    assert request_confirmations(session, later[-1], faster, SETTINGS) == []
    assert all(a.confirmation_status is None for a in faster)


def test_a_series_without_an_earlier_good_run_cannot_be_confirmed(
    session: Session, phones: list[Device]
) -> None:
    _, nights, alerts = _regression(session, phones)
    for run in session.scalars(select(Run).join(Job).where(Job.night_id == nights[-2].id)):
        run.status = RunStatus.failed  # the last good night's runs are gone
    session.flush()
    assert request_confirmations(session, nights[-1], alerts, SETTINGS) == []
    for alert in alerts:
        assert alert.confirmation_status == ConfirmationStatus.unavailable
        assert "no earlier good night" in alert.confirmation["reason"]


def test_an_inconclusive_ab_gets_another_round_and_the_rounds_are_pooled(
    session: Session, phones: list[Device]
) -> None:
    """Noisy blocks that show neither a difference nor its absence: a second round as long
    as the first on the same phone, then a verdict on both rounds' pairs (12 of at most 20:
    no third round)."""
    _, nights, alerts = _regression(session, phones)
    request_confirmations(session, nights[-1], alerts, SETTINGS)
    alert = next(a for a in alerts if a.series.device_id == phones[1].id)
    first = session.get(Job, alert.confirmation_job_id)
    assert first is not None
    _finish(session, first, {phones[1].id: 1.0}, noise=0.05)
    settled, follow_ups = settle_confirmations(session, SETTINGS)
    assert alert not in settled and len(follow_ups) == 1
    assert alert.confirmation_status == ConfirmationStatus.pending
    assert alert.confirmation["experiments"][0]["verdict"] == "inconclusive"
    second = session.get(Job, follow_ups[0])
    assert second is not None and alert.confirmation_job_id == second.id
    assert alert.confirmation["jobs"] == [first.id, second.id]
    assert (second.experiment or {})["blocks"] == 6
    assert [r.device_id for r in second.runs] == [phones[1].id]
    assert second.model_id == first.model_id and second.status == JobStatus.queued

    _finish(session, second, {phones[1].id: 1.0}, noise=0.05)
    settled, follow_ups = settle_confirmations(session, SETTINGS)
    assert settled == [alert] and follow_ups == []
    assert alert.confirmation_status == ConfirmationStatus.rejected
    assert alert.confirmation["blocks"] == 12  # both rounds' pairs
    assert len(alert.confirmation["experiments"][0]["run_ids"]) == 2
