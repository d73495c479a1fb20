"""The A/B confirmation of a suspected regression, before anyone is told.

Night-to-night medians move with the phone (its temperature, its governor, what else ran): a
change point in them is a suspicion. A regression alert is confirmed the way MobileLab and
chromeperf's Pinpoint do it: its series' last good night's build (the *control*) and
tonight's (the *treatment*) are measured interleaved in one lease on the same phone, A B B A
A B ... (:func:`harness.regression.ab.interleaved`), and, when the farm has one, on another
phone of the same device class. The phone's drift hits both sides of each pair alike and
cancels; the paired test on the block log-ratios says whether they differ.

* :func:`request_confirmations` (after a night's analysis): one A/B job per series with new
  regressions, an ordinary job (visible in the jobs list, its runs on the phones' queues)
  whose ``experiment`` names both sides. A side is pinned to its stored artifact (by cache
  key) when its night's run had one, so a toolchain change is measured as built that night,
  not rebuilt with today's TVM; otherwise (``ort``, a cost-guided partition built on the
  phone) it is that night's model version with that night's options.
* :func:`settle_confirmations` (every tick): an alert whose A/B job has finished is
  ``confirmed`` when the experiment on the series' phone (or, when that failed, on the other
  phone) found the difference significant, at least ``confirm_min_effect``, in the alert's
  direction; ``rejected`` otherwise (recorded, never notified); ``unavailable`` when no
  experiment could run (the alert stands, notified, and says why). An ``inconclusive``
  experiment (neither a difference nor its absence shown) gets another round as long as all
  before it, while the total stays within ``confirm_max_blocks``; the verdict pools the
  rounds' block pairs.
* :func:`notify_settled` queues a night's notifications once none of its alerts awaits a
  confirmation: one per group of the alerts that stand.

Improvements, accuracy and failure alerts are not re-measured (improvements are recorded,
not notified; accuracy and failures are not a matter of noise). ``confirm_blocks = 0``
switches confirmation off: alerts are notified as found. Functions take ``session`` and
never commit.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from harness.config import Settings, get_settings
from harness.db import (
    Alert,
    AlertKind,
    Artifact,
    ConfirmationStatus,
    Device,
    DeviceHealth,
    Job,
    JobStatus,
    Model,
    Night,
    Result,
    Run,
    RunStatus,
    Series,
    utcnow,
)
from harness.devices.base import DeviceFacts
from harness.farm.analysis import alert_groups
from harness.farm.liveness import liveness, offered
from harness.measure.calibration import device_class
from harness.measure.document import ExperimentRecord
from harness.regression.difference import paired_difference
from harness.regression.webhooks import notify

log = logging.getLogger(__name__)

CONFIRMED_KINDS = (AlertKind.regression,)
"""What is re-measured before it is notified."""

SUBMITTER = "edgefarm:confirmation"


class ArmSpec(BaseModel):
    """One side of a farm A/B job: a model version, and its stored build when it had one
    (the night and run it comes from, for a confirmation)."""

    label: str
    model_id: int
    artifact_key: str | None = None
    night_id: int | None = None
    run_id: int | None = None
    options: dict[str, Any] = {}  # the backend's, as that night's job gave them


class ExperimentSpec(BaseModel):
    """A job's ``experiment``: what its runs measure interleaved, and for which alerts."""

    series_id: int
    alert_ids: list[int]
    control: ArmSpec
    treatment: ArmSpec
    blocks: int
    alpha: float
    min_effect: float


def _series_run(session: Session, series: Series, night_id: int) -> Run | None:
    """The run of ``series`` in night ``night_id``, if it ran and ended done."""
    return session.scalar(
        select(Run)
        .join(Job, Run.job_id == Job.id)
        .join(Model, Job.model_id == Model.id)
        .where(
            Job.night_id == night_id,
            Job.variant == series.variant,
            Model.name == series.model_name,
            Run.device_id == series.device_id,
            Run.backend == series.backend,
            Run.status == RunStatus.done,
        )
    )


def _arm(session: Session, run: Run, label: str, night_id: int) -> ArmSpec:
    artifact = session.get(Artifact, run.artifact_id) if run.artifact_id is not None else None
    key = artifact.cache_key if artifact is not None and artifact.status == "ready" else None
    options = (run.job.settings or {}).get("options", {}).get(run.backend) or {}
    return ArmSpec(
        label=label,
        model_id=run.job.model_id,
        night_id=night_id,
        run_id=run.id,
        artifact_key=key,
        options=dict(options),
    )


def _peer(session: Session, device: Device) -> Device | None:
    """Another phone of ``device``'s class that is good, free for runs and has a live
    worker: where the experiment is repeated."""
    if not device.facts:
        return None
    klass = device_class(DeviceFacts.from_dict(device.facts))
    report = liveness(session)
    for other in session.scalars(
        select(Device)
        .where(Device.id != device.id, Device.health == DeviceHealth.good)
        .order_by(Device.id)
    ):
        same = other.facts and device_class(DeviceFacts.from_dict(other.facts)) == klass
        if same and offered(other, report):
            return other
    return None


def _ab_job(
    session: Session, spec: ExperimentSpec, *, like: Job, runs: list[tuple[int, str]]
) -> Job:
    """A queued A/B job measuring ``spec``: the model, settings and variant of ``like``, one
    run per (device id, backend) of ``runs``. Added and flushed."""
    job = Job(
        submitted_by=SUBMITTER,
        model_id=like.model_id,
        settings=dict(like.settings),
        status=JobStatus.queued,
        nightly=True,
        variant=like.variant,
        experiment=spec.model_dump(mode="json"),
    )
    session.add(job)
    for device_id, backend in runs:
        job.runs.append(Run(device_id=device_id, backend=backend))
    session.flush()
    return job


def _unavailable(alert: Alert, why: str) -> None:
    alert.confirmation_status = ConfirmationStatus.unavailable
    alert.confirmation = {**(alert.confirmation or {}), "status": "unavailable", "reason": why}
    alert.message += f" [not confirmed: {why}]"


def request_confirmations(
    session: Session, night: Night, alerts: list[Alert], settings: Settings | None = None
) -> list[int]:
    """The A/B jobs confirming ``night``'s new regression alerts (added and flushed; their
    ids, to be started). Alerts that cannot be confirmed are marked ``unavailable``."""
    settings = settings or get_settings()
    if settings.confirm_blocks == 0:
        return []
    by_series: dict[int, list[Alert]] = defaultdict(list)
    for alert in alerts:
        if alert.kind in CONFIRMED_KINDS:
            by_series[alert.series_id].append(alert)
    job_ids = []
    for series_id, members in sorted(by_series.items()):
        series = session.get(Series, series_id)
        assert series is not None
        # The control is the night before the earliest change; a change found a night late
        # shares it with the metric found at once.
        good_nights = [a.last_good_night_id for a in members if a.last_good_night_id]
        treatment_run = _series_run(session, series, night.id)
        control_night = min(good_nights) if good_nights else None
        control_run = (
            _series_run(session, series, control_night) if control_night is not None else None
        )
        if treatment_run is None or control_run is None or control_night is None:
            why = "no earlier good night to compare with" if control_run is None else "no run"
            for alert in members:
                _unavailable(alert, why)
            continue
        device = session.get(Device, series.device_id)
        assert device is not None
        devices = [device]
        peer = _peer(session, device)
        if peer is not None:
            devices.append(peer)
        spec = ExperimentSpec(
            series_id=series_id,
            alert_ids=[a.id for a in members],
            control=_arm(session, control_run, f"night {control_night}", control_night),
            treatment=_arm(session, treatment_run, f"night {night.id}", night.id),
            blocks=settings.confirm_blocks,
            alpha=settings.confirm_alpha,
            min_effect=settings.confirm_min_effect,
        )
        job = _ab_job(
            session,
            spec,
            like=treatment_run.job,
            runs=[(target.id, series.backend) for target in devices],
        )
        for alert in members:
            alert.confirmation_status = ConfirmationStatus.pending
            alert.confirmation_job_id = job.id
            alert.confirmation = {
                "status": "pending",
                "job_id": job.id,
                "jobs": [job.id],
                "control": spec.control.model_dump(mode="json"),
                "treatment": spec.treatment.model_dump(mode="json"),
                "devices": [d.id for d in devices],
                "blocks": spec.blocks,
            }
        job_ids.append(job.id)
        log.info(
            "night %s: series %s: A/B job %s (%s) confirms alert(s) %s",
            night.id, series_id, job.id, "+".join(d.address for d in devices),
            ", ".join(str(a.id) for a in members),
        )  # fmt: skip
    session.flush()
    return job_ids


def _expected(alert: Alert) -> str:
    return "slower" if alert.direction == "up" else "faster"


def _pooled(session: Session, job_ids: list[int], series: Series) -> list[dict[str, Any]]:
    """Per device of the A/B rounds ``job_ids``: its runs, the experiment records they
    recorded and why the others have none; the series' own phone first."""
    by_device: dict[int, dict[str, Any]] = {}
    rows = session.execute(
        select(Run, Result)
        .outerjoin(Result, Result.run_id == Run.id)
        .where(Run.job_id.in_(job_ids))
        .order_by(Run.id)
    )
    for run, result in rows:
        entry = by_device.setdefault(
            run.device_id,
            {"device_id": run.device_id, "run_ids": [], "records": [], "errors": []},
        )
        entry["run_ids"].append(run.id)
        record = (result.document or {}).get("experiment") if result is not None else None
        if run.status == RunStatus.done and record is not None:
            entry["records"].append(ExperimentRecord.model_validate(record))
        else:
            stage = run.error_stage or "run"
            entry["errors"].append(f"failed at {stage}: {run.error_message or run.status}")
    return sorted(by_device.values(), key=lambda e: e["device_id"] != series.device_id)


def _judged(alert: Alert, entry: dict[str, Any], spec: ExperimentSpec) -> dict[str, Any]:
    """One device's verdict on ``alert``'s metric, from every block pair its rounds measured
    (pooled: each pair is a paired sample of the same two builds), or why it has none."""
    item: dict[str, Any] = {"device_id": entry["device_id"], "run_ids": entry["run_ids"]}
    control: list[float] = []
    treatment: list[float] = []
    for record in entry["records"]:
        control += record.control.blocks.get(alert.metric, [])
        treatment += record.treatment.blocks.get(alert.metric, [])
    usable = len(control) == len(treatment) >= 2 and all(v > 0 for v in control + treatment)
    if not usable:
        item["error"] = "; ".join(entry["errors"]) or f"no usable {alert.metric} in its blocks"
        return item
    difference = paired_difference(control, treatment, alpha=spec.alpha, min_effect=spec.min_effect)
    item.update(difference.to_dict(), blocks=len(control))
    return item


def _decide(alert: Alert, shown: list[dict[str, Any]]) -> None:
    """Settle ``alert`` on its devices' verdicts (the first usable one decides)."""
    decided = next((i for i in shown if "verdict" in i), None)
    confirmation = {**(alert.confirmation or {}), "experiments": shown}
    alert.confirmation = confirmation
    if decided is None:
        reasons = "; ".join(f"device {i['device_id']}: {i['error']}" for i in shown) or "no run"
        _unavailable(alert, f"the A/B could not run ({reasons})")
        return
    stands = decided["verdict"] == _expected(alert)
    status = ConfirmationStatus.confirmed if stands else ConfirmationStatus.rejected
    others = [i for i in shown if i is not decided and "verdict" in i]
    alert.confirmation = {
        **confirmation,
        "status": str(status),
        "decided_by": decided["device_id"],
        "ratio": decided["ratio"],
        "ratio_ci": [decided["ratio_low"], decided["ratio_high"]],
        "pvalue": decided["pvalue"],
        "verdict": decided["verdict"],
        "blocks": decided["blocks"],
        "replicated": (all(i["verdict"] == decided["verdict"] for i in others) if others else None),
    }
    alert.confirmation_status = status
    word = "confirmed" if stands else "not confirmed"
    alert.message += (
        f" [{word} by A/B on device {decided['device_id']}: ratio {decided['ratio']:.3f} "
        f"(95% CI {decided['ratio_low']:.3f}-{decided['ratio_high']:.3f}) over "
        f"{decided['blocks']} block pairs, {decided['verdict']}]"
    )
    alert.updated_at = utcnow()


def _follow_up(session: Session, last: Job, blocks: int, alerts: list[Alert]) -> Job:
    """Another round of ``last``'s A/B, ``blocks`` pairs, on the same phones."""
    spec = ExperimentSpec.model_validate(last.experiment).model_copy(
        update={"blocks": blocks, "alert_ids": [a.id for a in alerts]}
    )
    job = _ab_job(session, spec, like=last, runs=[(r.device_id, r.backend) for r in last.runs])
    for alert in alerts:
        jobs = [*(alert.confirmation or {}).get("jobs", [last.id]), job.id]
        alert.confirmation = {**(alert.confirmation or {}), "jobs": jobs, "job_id": job.id}
        alert.confirmation_job_id = job.id
    return job


def settle_confirmations(
    session: Session, settings: Settings | None = None
) -> tuple[list[Alert], list[int]]:
    """Decide every pending alert whose A/B round has finished (or is gone): the alerts
    settled, and the follow-up rounds created (to be started). A round that leaves an alert
    ``inconclusive`` is followed by one as long again as all before it, on the same phones,
    while the total stays within ``confirm_max_blocks``; the verdict pools every round's
    block pairs (Pinpoint's way: more repetitions when unsure)."""
    settings = settings or get_settings()
    settled: list[Alert] = []
    follow_ups: list[int] = []
    pending = session.scalars(
        select(Alert)
        .where(Alert.confirmation_status == ConfirmationStatus.pending)
        .order_by(Alert.id)
    )
    by_job: dict[int | None, list[Alert]] = defaultdict(list)
    for alert in pending:
        by_job[alert.confirmation_job_id].append(alert)
    for job_id, alerts in by_job.items():
        job = session.get(Job, job_id) if job_id is not None else None
        if job is None:
            for alert in alerts:
                _unavailable(alert, "its A/B job was deleted")
            settled += alerts
            continue
        if job.status != JobStatus.done:
            continue
        spec = ExperimentSpec.model_validate(job.experiment)
        again: list[Alert] = []
        for alert in alerts:
            rounds = list((alert.confirmation or {}).get("jobs", [job.id]))
            shown = [
                _judged(alert, entry, spec) for entry in _pooled(session, rounds, alert.series)
            ]
            first = next((i for i in shown if "verdict" in i), None)
            total = first["blocks"] if first is not None else 0
            if (
                first is not None
                and first["verdict"] == "inconclusive"
                and 2 * total <= settings.confirm_max_blocks
            ):
                alert.confirmation = {**(alert.confirmation or {}), "experiments": shown}
                again.append(alert)
                continue
            _decide(alert, shown)
            log.info("alert %s: %s", alert.id, alert.confirmation_status)
            settled.append(alert)
        if again:
            total = max(a.confirmation["experiments"][0]["blocks"] for a in again)
            follow_ups.append(_follow_up(session, job, total, again).id)
            log.info(
                "alert(s) %s inconclusive after %d block pairs: another round (job %s)",
                ", ".join(str(a.id) for a in again), total, follow_ups[-1],
            )  # fmt: skip
    session.flush()
    return settled, follow_ups


def notify_settled(session: Session) -> list[str]:
    """Queue the notifications of every analysed night none of whose alerts awaits its
    confirmation: one per group of the alerts that stand (not ``rejected``). The event keys
    queued."""
    awaiting = exists().where(
        Alert.night_id == Night.id, Alert.confirmation_status == ConfirmationStatus.pending
    )
    queued = []
    for night in list(
        session.scalars(
            select(Night)
            .where(Night.analysed_at.is_not(None), Night.notified_at.is_(None), ~awaiting)
            .order_by(Night.id)
        )
    ):
        standing = list(
            session.scalars(
                select(Alert)
                .where(
                    Alert.night_id == night.id,
                    (Alert.confirmation_status.is_(None))
                    | (Alert.confirmation_status != ConfirmationStatus.rejected),
                )
                .order_by(Alert.id)
            )
        )
        for event_key, payload in alert_groups(night, standing):
            notify(session, night.suite, event_key=event_key, payload=payload)
            queued.append(event_key)
        night.notified_at = utcnow()
    session.flush()
    return queued
