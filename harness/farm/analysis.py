"""After a night: close it once its jobs are done, then judge every series it measured.

Per series and metric (median latency, peak RSS, load time), the change-point detector
(:mod:`harness.regression.changepoint`) looks at the last ``detect_window`` nights; a change
that starts within the last ``detect_recent`` nights and has no alert yet becomes one, with
what changed in the toolchain between the last good night and the first changed one. A series
that was measured the night before and fails tonight is a ``failure`` alert (``accuracy`` when
it failed comparing its outputs). Alerts whose change starts the same night with the same
toolchain change share a ``group_key``: one cause, one notification per night that finds
them. Functions take ``session`` and never commit.

Before the series, each phone's device canary (:mod:`harness.regression.canary`) is judged
against the phone's own canary history: a drifting phone becomes ``suspect`` (unless an
operator set maintenance or retired, or a health check found it bad), a suspect phone whose
canary is back within its noise becomes ``good``; the verdicts are kept in the night's
``toolchain["canary"]``. The canary's own series is never analysed as a model series. An alert
on a phone that is suspect after tonight's verdict is flagged (its message, and
``device_suspect`` with the canary's drift in its payload); a group of alerts that are all on
suspect phones and whose toolchain did not change (nothing but the phone explains them) is
recorded but not notified.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, object_session

from harness.config import Settings, get_settings
from harness.db import (
    Alert,
    AlertKind,
    Device,
    DeviceHealth,
    Job,
    JobStatus,
    Model,
    Night,
    NightStatus,
    Result,
    Run,
    RunStatus,
    Series,
    utcnow,
)
from harness.regression.canary import CANARY_VARIANT, CanaryRule, canary_drift, canary_medians
from harness.regression.changepoint import DetectorSettings, recent_changes
from harness.regression.toolchain import Toolchain, differences

log = logging.getLogger(__name__)

# What is watched (each is worse when larger), and the smallest absolute change of each that
# can be an alert: a relative change of a tiny value is noise (a 0.2 ms model load that took
# 2 ms one night because the other phone read a file at the same moment). A load is timed
# once per run, not a median: 0.3 ms loads took 6 ms for several nights while other work held
# both cores, so its floor is well above that.
METRICS = ("median_ms", "peak_rss_kb", "load_ms")
MIN_ABSOLUTE = {"median_ms": 0.01, "peak_rss_kb": 1024.0, "load_ms": 20.0}


def close_finished_nights(session: Session, now: datetime | None = None) -> list[int]:
    """Mark ``done`` every running night whose jobs have all finished; their ids."""
    unfinished = exists().where(Job.night_id == Night.id, Job.status != JobStatus.done)
    closed = []
    for night in session.scalars(
        select(Night).where(Night.status == NightStatus.running, ~unfinished)
    ):
        night.status = NightStatus.done
        night.finished_at = now or utcnow()
        closed.append(night.id)
    session.flush()
    return closed


@dataclass(frozen=True)
class Point:
    """One night of one series."""

    night: Night
    run: Run
    result: Result | None


def _history(session: Session, night: Night, window: int) -> dict[int, list[Point]]:
    """Per series id, its points over the suite's last ``window`` nights up to ``night``,
    oldest first."""
    nights = list(
        session.scalars(
            select(Night)
            .where(
                Night.suite_id == night.suite_id,
                Night.scheduled_for <= night.scheduled_for,
                Night.status == NightStatus.done,
            )
            .order_by(Night.scheduled_for.desc(), Night.id.desc())
            .limit(window)
        )
    )
    if night not in nights:
        nights.append(night)
    by_id = {n.id: n for n in nights}
    series = {
        (s.model_name, s.device_id, s.backend, s.variant): s.id
        for s in session.scalars(select(Series).where(Series.suite_id == night.suite_id))
    }
    rows = session.execute(
        select(Run, Job, Model.name, Result)
        .join(Job, Run.job_id == Job.id)
        .join(Model, Job.model_id == Model.id)
        .outerjoin(Result, Result.run_id == Run.id)
        .where(Job.night_id.in_(by_id))
    ).all()
    points: dict[int, list[Point]] = defaultdict(list)
    for run, job, model_name, result in rows:
        key = series.get((model_name, run.device_id, run.backend, job.variant))
        if key is not None and job.night_id is not None:
            points[key].append(Point(by_id[job.night_id], run, result))
    for found in points.values():
        found.sort(key=lambda p: (p.night.scheduled_for, p.night.id))
    return points


def _toolchain(point: Point, series_id: int) -> Toolchain | None:
    stored = (point.night.toolchain or {}).get("series", {}).get(str(series_id))
    if stored is None:
        return None
    runner = None
    if point.result is not None:
        runner = (point.result.document or {}).get("provenance", {}).get("runner_version")
    return Toolchain.model_validate({**stored, "runner": runner})


def _changes(before: Point | None, after: Point, series_id: int) -> list[object]:
    if before is None:
        return []
    old, new = _toolchain(before, series_id), _toolchain(after, series_id)
    if old is None or new is None:
        return []
    return list(differences(old, new))


def _attribute(
    measured: list[tuple[Point, float]], index: int, series_id: int
) -> tuple[Point | None, Point, list[object]]:
    """The last good and first changed point of a change estimated to start at
    ``measured[index]``, and what changed in the toolchain between them.

    A change point's night is an estimate: a noisy metric (a load timed once per run) that
    changed with a new model version may be placed one night late or early. When the estimated
    night brings no toolchain change and a neighbouring night does, the change is that
    night's: the alert names its cause and joins the group of the series' other metrics."""

    def split(i: int) -> tuple[Point | None, Point, list[object]]:
        before = measured[i - 1][0] if i > 0 else None
        return before, measured[i][0], _changes(before, measured[i][0], series_id)

    estimated = split(index)
    if estimated[2]:
        return estimated
    for neighbour in (index - 1, index + 1):
        if 0 < neighbour < len(measured):
            moved = split(neighbour)
            if moved[2]:
                return moved
    return estimated


def group_key(first_bad_night_id: int, changes: list[object]) -> str:
    """Alerts whose change starts the same night with the same toolchain change are one group
    (one cause), whichever night each was found on: a metric that needed a second night to
    be significant joins the group of the first."""
    text = json.dumps([first_bad_night_id, changes], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def detector(settings: Settings) -> DetectorSettings:
    return DetectorSettings(
        max_pvalue=settings.detect_max_pvalue, min_effect=settings.detect_min_effect
    )


def _measured(points: list[Point], metric: str) -> list[tuple[Point, float]]:
    out = []
    for p in points:
        value = getattr(p.result, metric, None) if p.result is not None else None
        if p.result is not None and p.result.status == "ok" and value is not None and value > 0:
            out.append((p, float(value)))
    return out


def _metric_alerts(
    series_id: int, points: list[Point], night: Night, settings: Settings
) -> list[Alert]:
    alerts = []
    for metric in METRICS:
        measured = _measured(points, metric)
        if len(measured) < 3:
            continue
        values = [value for _, value in measured]
        for point in recent_changes(values, detector(settings), recent=settings.detect_recent):
            if abs(point.after - point.before) < MIN_ABSOLUTE[metric]:
                continue
            last_good, first_bad, changes = _attribute(measured, point.index, series_id)
            worse = point.ratio > 1.0
            alerts.append(
                Alert(
                    series_id=series_id,
                    night_id=night.id,
                    kind=AlertKind.regression if worse else AlertKind.improvement,
                    metric=metric,
                    direction=point.direction,
                    ratio=point.ratio,
                    ratio_low=point.ratio_low,
                    ratio_high=point.ratio_high,
                    before=point.before,
                    after=point.after,
                    pvalue=point.pvalue,
                    first_bad_night_id=first_bad.night.id,
                    last_good_night_id=last_good.night.id if last_good else None,
                    changes=changes,
                    group_key=group_key(first_bad.night.id, changes),
                    message=(
                        f"{metric} {'rose' if worse else 'fell'} {abs(point.ratio - 1) * 100:.1f}%"
                        f" ({point.before:.4g} -> {point.after:.4g}; 95% CI of the ratio "
                        f"{point.ratio_low:.3f}-{point.ratio_high:.3f})"
                    ),
                )
            )
    return alerts


def _failure_alert(series_id: int, points: list[Point], night: Night) -> Alert | None:
    """Tonight failed where the series' previous night did not."""
    if len(points) < 2 or points[-1].night.id != night.id:
        return None
    now, before = points[-1], points[-2]
    if now.run.status != RunStatus.failed or before.run.status != RunStatus.done:
        return None
    stage = now.run.error_stage or "run"
    changes = _changes(before, now, series_id)
    return Alert(
        series_id=series_id,
        night_id=night.id,
        kind=AlertKind.accuracy if stage == "compare" else AlertKind.failure,
        metric="accuracy" if stage == "compare" else "status",
        direction="down",
        first_bad_night_id=night.id,
        last_good_night_id=before.night.id,
        changes=changes,
        group_key=group_key(night.id, changes),
        message=f"failed at {stage}: {now.run.error_message or ''}".strip(),
    )


def _known(session: Session, alert: Alert, recent: list[int]) -> bool:
    """The same change was alerted already: an alert of the series for the same metric and
    direction whose change starts among its ``recent`` nights (a change point's estimated
    night may move by one as nights are added)."""
    found = session.scalar(
        select(Alert.id).where(
            Alert.series_id == alert.series_id,
            Alert.metric == alert.metric,
            Alert.direction == alert.direction,
            Alert.first_bad_night_id.in_(recent),
        )
    )
    return found is not None


def judge_canaries(
    session: Session, night: Night, rule: CanaryRule | None = None
) -> dict[str, dict[str, object]]:
    """Each phone's canary verdict for ``night`` (by device id, as text), applied to its
    health and kept in ``night.toolchain["canary"]``: ``drift`` (None with too little
    history or no canary result tonight, health unchanged) and ``suspect`` (after it)."""
    rule = rule or CanaryRule()
    verdicts: dict[str, dict[str, object]] = {}
    for device_id, (tonight, history) in sorted(
        canary_medians(session, night, rule.window).items()
    ):
        device = session.get(Device, device_id)
        drift = canary_drift(tonight, history, rule) if tonight is not None else None
        if device is not None and drift is not None:
            if drift.drifting and device.health in (DeviceHealth.good, DeviceHealth.suspect):
                if device.health == DeviceHealth.good:
                    log.warning("device %s is suspect: %s", device.address, drift.describe())
                device.health = DeviceHealth.suspect
                device.health_reason = f"night {night.id}: {drift.describe()}"
            elif not drift.drifting and device.health == DeviceHealth.suspect:
                log.info("device %s: its canary is back within its noise", device.address)
                device.health, device.health_reason = DeviceHealth.good, None
        verdicts[str(device_id)] = {
            "drift": drift.to_json() if drift is not None else None,
            "suspect": device is not None and device.health == DeviceHealth.suspect,
        }
    night.toolchain = {**(night.toolchain or {}), "canary": verdicts}
    session.flush()
    return verdicts


def _flag(alert: Alert, device_id: int, verdict: dict[str, object] | None) -> None:
    drift = (verdict or {}).get("drift")
    why = (
        f"{(float(drift['ratio']) - 1) * 100:+.1f}% on its canary tonight"
        if isinstance(drift, dict)
        else "its canary drifted on an earlier night"
    )
    alert.message += f" [device {device_id} is suspect: {why}]"


def analyse_night(session: Session, night_id: int, settings: Settings | None = None) -> list[Alert]:
    """The alerts night ``night_id`` raises (added, flushed); none if it was analysed
    already or is not done."""
    settings = settings or get_settings()
    # Claimed by one conditional UPDATE: of two ticks analysing at once, one does it.
    claimed = session.execute(
        update(Night)
        .where(
            Night.id == night_id,
            Night.analysed_at.is_(None),
            Night.status == NightStatus.done,
        )
        .values(analysed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return []
    night = session.get(Night, night_id)
    assert night is not None
    session.refresh(night)
    verdicts = judge_canaries(session, night)
    suspect = set(session.scalars(select(Device.id).where(Device.health == DeviceHealth.suspect)))
    series_rows = {
        s.id: s for s in session.scalars(select(Series).where(Series.suite_id == night.suite_id))
    }
    alerts: list[Alert] = []
    for series_id, points in sorted(_history(session, night, settings.detect_window).items()):
        if points[-1].night.id != night.id:
            continue  # the series did not run tonight (a device gone)
        series = series_rows[series_id]
        if series.variant == CANARY_VARIANT:
            continue  # the phone's reference, judged above
        candidates = _metric_alerts(series_id, points, night, settings)
        failure = _failure_alert(series_id, points, night)
        if failure is not None:
            candidates.append(failure)
        tonight = points[-1]
        if tonight.run.status == RunStatus.done and not any(
            c.kind in NOTIFIED for c in candidates
        ):  # the newest night nothing is wrong with: its build is the next A/B's control
            series.last_good_night_id = night.id
            series.last_good_artifact_id = tonight.run.artifact_id
        recent = [p.night.id for p in points[-(settings.detect_recent + 1) :]]
        for alert in candidates:
            if not _known(session, alert, recent):
                if series.device_id in suspect:
                    _flag(alert, series.device_id, verdicts.get(str(series.device_id)))
                session.add(alert)
                session.flush()
                alerts.append(alert)
    for alert in alerts:
        log.warning("night %s: series %s: %s", night.id, alert.series_id, alert.message)
    return alerts


def _suspect(alert: Alert) -> tuple[bool, object]:
    """Whether ``alert`` was raised on a phone suspect that night, and its canary drift."""
    session = object_session(alert)
    night = session.get(Night, alert.night_id) if session is not None else None
    verdicts = (night.toolchain or {}).get("canary", {}) if night is not None else {}
    verdict = verdicts.get(str(alert.series.device_id)) or {}
    return bool(verdict.get("suspect")), verdict.get("drift")


def alert_payload(alert: Alert) -> dict[str, object]:
    """An alert as notifications show it (``device_suspect``: raised on a phone whose
    canary had drifted that night, with the canary's ``drift``)."""
    series = alert.series
    suspect, drift = _suspect(alert)
    return {
        "id": alert.id,
        "kind": str(alert.kind),
        "state": str(alert.state),
        "series": {
            "id": series.id,
            "model": series.model_name,
            "device_id": series.device_id,
            "backend": series.backend,
            "variant": series.variant,
        },
        "metric": alert.metric,
        "direction": alert.direction,
        "ratio": alert.ratio,
        "ratio_ci": [alert.ratio_low, alert.ratio_high],
        "before": alert.before,
        "after": alert.after,
        "pvalue": alert.pvalue,
        "first_bad_night_id": alert.first_bad_night_id,
        "last_good_night_id": alert.last_good_night_id,
        "changes": alert.changes,
        "message": alert.message,
        "confirmation_status": (
            str(alert.confirmation_status) if alert.confirmation_status is not None else None
        ),
        "confirmation": alert.confirmation,
        "device_suspect": suspect,
        "canary": drift,
    }


NOTIFIED = (AlertKind.regression, AlertKind.accuracy, AlertKind.failure)


def alert_groups(night: Night, alerts: list[Alert]) -> list[tuple[str, dict[str, object]]]:
    """The notifications of a night's new alerts: one per group (same change, same cause), as
    (event key, payload). Improvements are recorded, not notified; so is a group whose
    alerts are all on suspect phones with nothing changed in their toolchain (the phone's
    drift is the only explanation: the phone's health says so, not a notification)."""
    groups: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        if alert.kind in NOTIFIED:
            groups[alert.group_key].append(alert)
    for key, members in list(groups.items()):
        if not members[0].changes and all(_suspect(a)[0] for a in members):
            del groups[key]
    return [
        (
            f"alerts:{key}:{night.id}",  # once per group and night: a later alert is news
            {
                "event": "alerts",
                "suite": night.suite.name,
                "night": {"id": night.id, "scheduled_for": night.scheduled_for.isoformat()},
                "group_key": key,
                "changes": members[0].changes,
                "alerts": [alert_payload(a) for a in members],
            },
        )
        for key, members in groups.items()
    ]
