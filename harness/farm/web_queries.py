"""Reading the farm for the web pages: what the JSON routes read, shaped for a page, and
bounded whatever the history's length.

Every query here is bounded: a page lists at most a fixed number of rows, a history at most
:data:`MAX_POINTS` points per series (beyond that, one point per day — or per several days —
aggregating the runs of that span) and at most :data:`MAX_SERIES` series, found among its
newest :data:`SERIES_SCAN` results; a history naming no model holds only its newest
:data:`RECENT_RESULTS` results. Listings on the
pages are newest first over indexed columns and never count the whole table, so a page's
time does not grow with the number of stored results. Functions take ``session`` and never
commit.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Integer, Select, cast, extract, func, literal, select
from sqlalchemy.orm import Session

from harness.db import (
    Alert,
    AlertKind,
    Device,
    Job,
    Model,
    Result,
    Run,
    RunStatus,
    Series,
)
from harness.farm.queries import MAX_ID, model_ids

MAX_POINTS = 400  # per series; beyond, one point per day (or per k days)
MAX_SERIES = 12
# The newest results in view read to find its series (a series not measured among them is
# not listed: name it).
SERIES_SCAN = 5_000
# With no model named, a view holds only its newest results (at most one series' points).
RECENT_RESULTS = MAX_POINTS
RECENT_JOBS = 25
RECENT_RUNS = 50
UTILISATION_WINDOW = timedelta(hours=24)

TOOLCHAIN_KEYS = ("tvm_version", "edgefarm_version", "model_sha256", "fingerprint", "tuning")
# A tvm-cpu result's tuning records (their digest), or "" untuned: a series that becomes
# tuned, or whose records change, changes there. Its "" is a state of its own ("untuned").
UNTUNED = "untuned"


def as_id(value: str | int | None) -> int | None:
    """A row id given as text, or None when ``value`` is no id (unknown filter values make
    an empty view, not an error)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


# Jobs.


@dataclass(frozen=True)
class JobRow:
    """A job on the dashboard: its model's name and how many runs are in each status."""

    job: Job
    model_name: str
    runs: dict[str, int]


def recent_jobs(
    session: Session,
    *,
    limit: int = RECENT_JOBS,
    status: str | None = None,
    model: str | None = None,
) -> list[JobRow]:
    """The newest ``limit`` jobs (``ix_jobs_created_at`` backwards, no count of the table)."""
    query = select(Job, Model.name).join(Model, Job.model_id == Model.id)
    if status is not None:
        query = query.where(Job.status == status)
    if model is not None:
        ids = model_ids(model, session=session)
        if not ids:
            return []
        query = query.where(Job.model_id.in_(ids))
    rows = session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)).all()
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    job_ids = [job.id for job, _ in rows]
    if job_ids:
        for job_id, run_status, n in session.execute(
            select(Run.job_id, Run.status, func.count())
            .where(Run.job_id.in_(job_ids))
            .group_by(Run.job_id, Run.status)
        ):
            counts[job_id][str(run_status)] = int(n)
    return [JobRow(job, name, dict(counts[job.id])) for job, name in rows]


def recent_failures(session: Session, *, limit: int = 10) -> list[tuple[Run, str]]:
    """The newest failed runs and their model's name (the dashboard's alerts of last resort)."""
    rows = session.execute(
        select(Run, Model.name)
        .join(Job, Run.job_id == Job.id)
        .join(Model, Job.model_id == Model.id)
        .where(Run.status == RunStatus.failed)
        .order_by(Run.id.desc())
        .limit(limit)
    ).all()
    return [(run, name) for run, name in rows]


# Devices.


@dataclass(frozen=True)
class Utilisation:
    """How much of the window a device spent in runs (started to finished)."""

    busy_s: float
    runs: int
    window_s: float

    @property
    def share(self) -> float:
        return min(1.0, self.busy_s / self.window_s) if self.window_s else 0.0


def _clipped_seconds(session: Session, since: datetime, now: datetime) -> tuple[Any, Any]:
    """(seconds of a run inside [since, now], the SQL condition that there are some) for
    this session's database: a run still going counts up to ``now``."""
    when = Run.started_at.type
    start_bound, end_bound = literal(since, when), literal(now, when)
    ended = func.coalesce(Run.finished_at, end_bound)
    start: Any
    end: Any
    if session.get_bind().dialect.name == "sqlite":
        # SQLite keeps times as ISO text in UTC ("YYYY-MM-DD HH:MM:SS.ffffff"), so max and min
        # of two compare them; whole seconds from strftime, microseconds from the text (its
        # own arithmetic, julianday, keeps milliseconds at best).
        start, end = func.max(Run.started_at, start_bound), func.min(ended, end_bound)
        seconds = (_sqlite_epoch_us(end) - _sqlite_epoch_us(start)) / 1_000_000.0
    else:
        start, end = func.greatest(Run.started_at, start_bound), func.least(ended, end_bound)
        seconds = extract("epoch", end - start)
    return seconds, end > start


def _sqlite_epoch_us(moment: Any) -> Any:
    # Whole seconds of the text without its fraction: SQLite rounds a time to milliseconds
    # first, so .9996 s would count as the next second.
    whole = cast(func.strftime("%s", func.substr(moment, 1, 19)), Integer)
    return whole * 1_000_000 + cast(func.substr(moment, 21, 6), Integer)


def utilisation(
    session: Session,
    device_ids: Sequence[int],
    *,
    now: datetime | None = None,
    window: timedelta = UTILISATION_WINDOW,
) -> dict[int, Utilisation]:
    """Each device's share of the last ``window`` spent in runs: the sum of its runs'
    intervals clipped to the window (a run still going counts up to now), and how many runs
    that is. Summed by the database, so the page's time does not grow with the window's
    runs."""
    now = now or datetime.now(UTC)
    since = now - window
    seconds = window.total_seconds()
    out = {d: Utilisation(0.0, 0, seconds) for d in device_ids}
    if not device_ids:
        return out
    busy, inside = _clipped_seconds(session, since, now)
    # Runs that ended within the window or have not ended (ix_runs_finished_at, both arms of
    # the OR): the work grows with the window's runs, never with the whole table.
    rows = session.execute(
        select(Run.device_id, func.sum(busy), func.count())
        .where((Run.finished_at >= since) | Run.finished_at.is_(None))
        .where(Run.device_id.in_(device_ids), Run.started_at.is_not(None), inside)
        .group_by(Run.device_id)
    ).all()
    for device_id, busy_s, runs in rows:
        out[device_id] = Utilisation(float(busy_s or 0.0), int(runs), seconds)
    return out


@dataclass(frozen=True)
class RunRow:
    """A run with what the pages show beside it."""

    run: Run
    model_name: str
    device_label: str
    result: Result | None


# A run with its model's name, its device's model name and its result: what RunRow holds.
_RUN_ROWS = (
    select(Run, Model.name, Device.model_name, Result)
    .join(Job, Run.job_id == Job.id)
    .join(Model, Job.model_id == Model.id)
    .join(Device, Run.device_id == Device.id)
    .outerjoin(Result, Result.run_id == Run.id)
)


def _run_rows(session: Session, query: Select[Run, str, str, Result]) -> list[RunRow]:
    rows = session.execute(query).all()
    return [RunRow(run, name, label, result) for run, name, label, result in rows]


def device_runs(session: Session, device_id: int, *, limit: int = RECENT_RUNS) -> list[RunRow]:
    """The device's newest runs with their results."""
    return _run_rows(
        session,
        _RUN_ROWS.where(Run.device_id == device_id).order_by(Run.id.desc()).limit(limit),
    )


def run_row(session: Session, run_id: int) -> RunRow | None:
    """One run with its model's name, its device's and its result; None if there is none."""
    rows = _run_rows(
        session,
        _RUN_ROWS.where(Run.id == run_id),
    )
    return rows[0] if rows else None


def canary_history(
    session: Session, device_id: int, model_name: str, *, limit: int = 60
) -> list[tuple[datetime, float, int]]:
    """The device's last ``limit`` results of the canary model: (when, median, job id),
    oldest first."""
    # The model's ids first, so that ix_results_points (model, device, ...) bounds the read
    # by the canary's own results on this phone, whatever the length of the whole history.
    versions = model_versions(session, model_name)
    if not versions:
        return []
    rows = session.execute(
        select(Result.created_at, Result.median_ms, Result.job_id)
        .where(
            _one_of(Result.model_id, versions),
            Result.device_id == device_id,
            Result.status == "ok",
            Result.median_ms.is_not(None),
        )
        .order_by(Result.created_at.desc(), Result.id.desc())
        .limit(limit)
    ).all()
    return [(when, float(median or 0.0), job_id) for when, median, job_id in reversed(rows)]


# History.


@dataclass(frozen=True)
class HistoryFilter:
    """What the history shows. Each criterion lists the values it accepts (empty: any); every
    criterion must hold. Several values of one criterion overlay their series (the same model
    on several phones, or with several backends). A value that names nothing adds nothing; a
    criterion none of whose values names anything gives an empty history."""

    models: tuple[str, ...] = ()  # ids, sha256s or names: a name follows every version
    devices: tuple[str, ...] = ()  # device ids
    socs: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    status: str | None = None  # ok | failed; default: both
    since: datetime | None = None
    until: datetime | None = None
    regressions_only: bool = False


@dataclass
class Point:
    """One run of a series, or (``runs`` > 1) the runs of one span of days aggregated."""

    at: datetime
    median_ms: float | None
    low_ms: float | None  # p10 of the run's samples (aggregated: the span's lowest p10)
    high_ms: float | None  # p90 (aggregated: the span's highest p90)
    status: str
    runs: int = 1
    result_id: int | None = None
    run_id: int | None = None
    job_id: int | None = None
    night_id: int | None = None
    span_end: datetime | None = None  # aggregated: the span is [at, span_end)
    toolchain: dict[str, str] = field(default_factory=dict)
    alerts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ToolchainChange:
    """Between two adjacent points of a series, what of the toolchain changed."""

    at: datetime
    key: str
    before: str
    after: str


@dataclass
class HistorySeries:
    model_name: str
    device_id: int
    device_label: str
    backend: str
    total: int  # runs in view
    points: list[Point]
    changes: list[ToolchainChange]
    span_days: int  # 0: one point per run; k: one point per k days

    @property
    def label(self) -> str:
        return f"{self.model_name} · {self.device_label} #{self.device_id} · {self.backend}"


@dataclass(frozen=True)
class SeriesKey:
    model_name: str
    device_id: int
    backend: str


def _history_base(session: Session, filters: HistoryFilter) -> Select[Any] | None:
    query = (
        select(Result.id)
        .join(Model, Result.model_id == Model.id)
        .join(Device, Result.device_id == Device.id)
    )
    if filters.models:
        ids = [i for ref in filters.models for i in model_ids(ref, session=session)]
        if not ids:
            return None
        # A name follows the model across its versions (each upload is a new sha256).
        names = select(Model.name).where(Model.id.in_(ids)).distinct().scalar_subquery()
        versions = list(session.scalars(select(Model.id).where(Model.name.in_(names))))
        query = query.where(_one_of(Result.model_id, versions))
    if filters.devices:
        device_ids = sorted({i for ref in filters.devices if (i := as_id(ref)) is not None})
        if not device_ids:
            return None
        query = query.where(_one_of(Result.device_id, device_ids))
    if filters.socs:
        query = query.where(_one_of(Device.soc, sorted(set(filters.socs))))
    if filters.backends:
        query = query.where(_one_of(Result.backend, sorted(set(filters.backends))))
    if filters.status is not None:
        if filters.status not in ("ok", "failed"):
            return None
        query = query.where(Result.status == filters.status)
    if filters.since is not None:
        query = query.where(Result.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(Result.created_at < filters.until)
    return query


def _one_of(column: Any, values: Sequence[Any]) -> Any:
    # One value: an equality, so the planner walks ix_results_points from its leading column.
    return column == values[0] if len(values) == 1 else column.in_(values)


def model_versions(session: Session, name: str) -> list[int]:
    """The ids of every model called ``name`` (each upload of a new version is a new row)."""
    return list(session.scalars(select(Model.id).where(Model.name == name)))


def history_series_keys(
    session: Session, filters: HistoryFilter, *, scan: int = SERIES_SCAN
) -> tuple[list[SeriesKey], bool]:
    """The series in view, the most recently measured first, at most :data:`MAX_SERIES`:
    those measured among the newest ``scan`` results in view (whatever the table's length),
    and whether that many were read (then an older series may be missing)."""
    base = _history_base(session, filters)
    if base is None:
        return [], False
    recent = (
        base.with_only_columns(Result.model_id, Result.device_id, Result.backend, Result.created_at)
        .order_by(Result.created_at.desc(), Result.id.desc())
        .limit(scan)
        .subquery()
    )
    latest = func.max(recent.c.created_at)
    grouped = (
        select(Model.name, recent.c.device_id, recent.c.backend, latest, func.count())
        .join(Model, Model.id == recent.c.model_id)
        .group_by(Model.name, recent.c.device_id, recent.c.backend)
        .order_by(latest.desc(), Model.name, recent.c.device_id, recent.c.backend)
    )
    rows = session.execute(grouped).all()
    keys = [SeriesKey(name, device_id, backend) for name, device_id, backend, _, _ in rows]
    if filters.regressions_only:
        flagged = _series_with_regressions(session, keys)
        keys = [key for key in keys if key in flagged]
    return keys[:MAX_SERIES], sum(n for *_, n in rows) >= scan


def _series_with_regressions(session: Session, keys: Sequence[SeriesKey]) -> set[SeriesKey]:
    if not keys:
        return set()
    rows = session.execute(
        select(Series.model_name, Series.device_id, Series.backend)
        .join(Alert, Alert.series_id == Series.id)
        .where(Alert.kind == AlertKind.regression)
        .where(Series.device_id.in_({key.device_id for key in keys}))
        .distinct()
    ).all()
    return {SeriesKey(name, device_id, backend) for name, device_id, backend in rows}


def _band(samples: Any) -> tuple[float | None, float | None]:
    """The p10 and p90 of a run's raw samples (None, None without any)."""
    if not isinstance(samples, list) or not samples:
        return None, None
    values = np.asarray([s for s in samples if isinstance(s, int | float)], dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return None, None
    low, high = np.percentile(values, (10, 90))
    return float(low), float(high)


def _alert_nights(
    session: Session, keys: Sequence[SeriesKey]
) -> dict[SeriesKey, dict[int, list[int]]]:
    """Per series, the nights on which its alerts start: night id -> alert ids."""
    nights: dict[SeriesKey, dict[int, list[int]]] = {key: defaultdict(list) for key in keys}
    if not keys:
        return nights
    rows = session.execute(
        select(
            Series.model_name,
            Series.device_id,
            Series.backend,
            Alert.id,
            Alert.first_bad_night_id,
            Alert.night_id,
        )
        .join(Series, Alert.series_id == Series.id)
        .where(
            _one_of(Series.model_name, sorted({key.model_name for key in keys})),
            _one_of(Series.device_id, sorted({key.device_id for key in keys})),
        )
        .order_by(Alert.id)
    ).all()
    for name, device_id, backend, alert_id, first_bad, night in rows:
        key = SeriesKey(name, device_id, backend)
        if key in nights:
            nights[key][first_bad or night].append(alert_id)
    return nights


def _toolchain_columns() -> list[Any]:
    provenance = Result.document["provenance"]
    return [
        provenance["tvm_version"].as_string(),
        provenance["edgefarm_version"].as_string(),
        Model.sha256,
        Result.document["device"]["fingerprint"].as_string(),
        provenance["tuning"]["records"].as_string(),
    ]


def history_series(
    session: Session, filters: HistoryFilter, key: SeriesKey, *, max_points: int = MAX_POINTS
) -> HistorySeries:
    """One series in view: a point per run (oldest first), or — with more than
    ``max_points`` runs — a point per span of days; the toolchain changes along it and its
    alerts."""
    base = _history_base(session, filters)
    assert base is not None  # a key came from the same filters
    where = base.where(
        _one_of(Result.model_id, model_versions(session, key.model_name) or [0]),
        Result.device_id == key.device_id,
        Result.backend == key.backend,
    )
    total = session.scalar(where.with_only_columns(func.count())) or 0
    label = session.scalar(select(Device.model_name).where(Device.id == key.device_id)) or ""
    alert_nights = _alert_nights(session, [key])[key]
    span_days = 0
    if total > max_points:
        first, last = session.execute(
            where.with_only_columns(func.min(Result.created_at), func.max(Result.created_at))
        ).one()
        days = (last.date() - first.date()).days + 1
        span_days = max(1, math.ceil(days / max_points))
    if span_days:
        return _aggregated_series(session, where, key, label, total, alert_nights, span_days)
    ordered = (
        where.with_only_columns(*_point_columns())
        .join(Job, Result.job_id == Job.id)
        .order_by(Result.created_at, Result.id)
    )
    points = [_point(row, alert_nights) for row in session.execute(ordered)]
    return _series(key, label, total, points)


def _day_number(session: Session, moment: Any) -> Any:
    """The UTC day of a time column as days since 1970-01-01, in SQL."""
    if session.get_bind().dialect.name == "sqlite":
        # ISO text in UTC: the julian day of its date part is a whole day + .5.
        return cast(func.julianday(func.substr(moment, 1, 10)) - 2440587.5, Integer)
    return cast(func.floor(extract("epoch", moment) / 86400), Integer)


def _aggregated_series(
    session: Session,
    where: Select[Any],
    key: SeriesKey,
    label: str,
    total: int,
    alert_nights: dict[int, list[int]],
    span_days: int,
) -> HistorySeries:
    """A series of more than :data:`MAX_POINTS` runs, a point per span of ``span_days`` UTC
    days from its first run's day, grouped by the database from ``ix_results_points`` alone
    (no row of the table, no JSON document): per span its runs, the median of its runs'
    medians (PostgreSQL's percentile_cont; SQLite has none, so there its medians are read as
    (span, median) pairs), its lowest median, highest p90, and first and last result; and the
    runs of the alerts' nights. The toolchain, which lives in the results' documents, is read
    for each span's first and last result only (at most twice :data:`MAX_POINTS` documents,
    however long the series): a change shows in the span where it starts to hold, and one
    undone within a single span is not shown."""
    day = _day_number(session, Result.created_at)
    first_day = session.scalar(where.with_only_columns(func.min(day)))
    if first_day is None:
        return _series(key, label, total, [])
    first_day = int(first_day)
    origin = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=first_day)
    span_of = ((day - first_day) // span_days).label("span")
    in_sql = session.get_bind().dialect.name != "sqlite"
    median = func.percentile_cont(0.5).within_group(Result.median_ms) if in_sql else literal(None)
    grouped = session.execute(
        where.with_only_columns(
            span_of,
            func.count(),
            median,
            func.min(Result.median_ms),
            func.max(Result.p90_ms),
            func.min(Result.id),
            func.max(Result.id),
        )
        .group_by(span_of)
        .order_by(span_of)
    ).all()
    spans: dict[int, dict[str, Any]] = {
        int(index): {"runs": runs, "median": mid, "low": low, "high": high, "first": a, "last": b}
        for index, runs, mid, low, high, a, b in grouped
    }
    if not in_sql:
        span_medians: dict[int, list[float]] = defaultdict(list)
        for index, value in session.execute(
            where.with_only_columns(span_of, Result.median_ms).where(Result.median_ms.is_not(None))
        ):
            span_medians[int(index)].append(value)
        for index, values in span_medians.items():
            spans[index]["median"] = statistics.median(values)
    night_jobs: dict[int, int] = {}
    if alert_nights:
        rows = session.execute(
            select(Job.id, Job.night_id).where(Job.night_id.in_(sorted(alert_nights)))
        )
        night_jobs = {job_id: night for job_id, night in rows if night is not None}
    span_alerts: dict[int, set[int]] = defaultdict(set)
    if night_jobs:
        for index, job_id in session.execute(
            where.with_only_columns(span_of, Result.job_id).where(
                Result.job_id.in_(sorted(night_jobs))
            )
        ):
            span_alerts[int(index)].update(alert_nights[night_jobs[job_id]])
    ends = sorted({i for span in spans.values() for i in (span["first"], span["last"])})
    found = session.execute(
        select(Result.id, Result.created_at, *_toolchain_columns())
        .join(Model, Result.model_id == Model.id)
        .where(Result.id.in_(ends))
        .order_by(Result.created_at, Result.id)
    ).all()
    toolchain_of = {
        row[0]: {name: value or "" for name, value in zip(TOOLCHAIN_KEYS, row[2:], strict=True)}
        for row in found
    }
    changes = _changes(
        [
            Point(
                at=row[1],
                median_ms=None,
                low_ms=None,
                high_ms=None,
                status="",
                toolchain=toolchain_of[row[0]],
            )
            for row in found
        ]
    )
    points = []
    for index in sorted(spans):
        span = spans[index]
        start = origin + timedelta(days=index * span_days)
        ok = span["median"] is not None
        points.append(
            Point(
                at=start,
                median_ms=float(span["median"]) if ok else None,
                low_ms=span["low"],
                high_ms=span["high"],
                status="ok" if ok else "failed",
                runs=span["runs"],
                span_end=start + timedelta(days=span_days),
                toolchain=toolchain_of.get(span["last"], {}),
                alerts=sorted(span_alerts.get(index, set())),
            )
        )
    return HistorySeries(
        model_name=key.model_name,
        device_id=key.device_id,
        device_label=label,
        backend=key.backend,
        total=total,
        points=points,
        changes=changes,
        span_days=span_days,
    )


def _point_columns() -> list[Any]:
    """What a run's point is made of (:func:`_point`): the raw samples last."""
    return [
        Result.id,
        Result.run_id,
        Result.job_id,
        Result.created_at,
        Result.median_ms,
        Result.p90_ms,
        Result.status,
        Job.night_id,
        *_toolchain_columns(),
        Result.samples_ms,
    ]


def _point(row: Any, alert_nights: dict[int, list[int]]) -> Point:
    """A run's point from a row of :func:`_point_columns`."""
    result_id, run_id, job_id, at, median, _p90, status, night_id = row[:8]
    end = 8 + len(TOOLCHAIN_KEYS)
    toolchain = {name: value or "" for name, value in zip(TOOLCHAIN_KEYS, row[8:end], strict=True)}
    low, high = _band(row[end])
    return Point(
        at=at,
        median_ms=median,
        low_ms=low,
        high_ms=high,
        status=status,
        result_id=result_id,
        run_id=run_id,
        job_id=job_id,
        night_id=night_id,
        toolchain=toolchain,
        alerts=list(alert_nights.get(night_id, [])) if night_id is not None else [],
    )


def _series(key: SeriesKey, label: str, total: int, points: list[Point]) -> HistorySeries:
    """The series of a point per run (oldest first), with its toolchain changes."""
    return HistorySeries(
        model_name=key.model_name,
        device_id=key.device_id,
        device_label=label,
        backend=key.backend,
        total=total,
        points=points,
        changes=_changes(points),
        span_days=0,
    )


def _changes(points: Sequence[Point]) -> list[ToolchainChange]:
    changes: list[ToolchainChange] = []
    for before, after in itertools.pairwise(points):
        for name in TOOLCHAIN_KEYS:
            old, new = before.toolchain.get(name, ""), after.toolchain.get(name, "")
            if name != "tuning" and old and new and old != new:
                changes.append(ToolchainChange(after.at, name, old, new))
    # Untuned ("") is a value of the tuning, not a gap: it is compared between measurements
    # (points with a TVM version), across points without one (a run that failed early).
    measured = [p for p in points if p.toolchain.get("tvm_version")]
    for before, after in itertools.pairwise(measured):
        old, new = before.toolchain.get("tuning", ""), after.toolchain.get("tuning", "")
        if old != new:
            changes.append(ToolchainChange(after.at, "tuning", old or UNTUNED, new or UNTUNED))
    changes.sort(key=lambda c: c.at)
    return changes


@dataclass
class History:
    """What a history view shows, and how it was bounded."""

    series: list[HistorySeries]
    # No model named: the view was cut to its newest ``recent`` results, from this time on.
    recent_since: datetime | None = None
    recent: int = 0
    # The series were found among the newest ``scanned`` results in view (that many were read).
    scanned: int = 0


def history(
    session: Session,
    filters: HistoryFilter,
    *,
    recent: int = RECENT_RESULTS,
    scan: int = SERIES_SCAN,
) -> History:
    """Every series in view (at most :data:`MAX_SERIES`), each bounded in points, read by
    bounded queries whatever the history's length: the series from the newest ``scan``
    results in view; with no model named, only the newest ``recent`` results in view (each
    series' whole history is a view naming its model, device and backend)."""
    if not filters.models:
        return _newest(session, filters, recent)
    keys, full = history_series_keys(session, filters, scan=scan)
    series = [history_series(session, filters, key) for key in keys]
    return History(series, scanned=scan if full else 0)


def _newest(session: Session, filters: HistoryFilter, recent: int) -> History:
    """A view naming no model: its newest ``recent`` results (one query), each series' points
    among them (the newest-measured :data:`MAX_SERIES` series), a point per run."""
    base = _history_base(session, filters)
    if base is None:
        return History([])
    key_columns = [Model.name, Result.device_id, Result.backend]
    newest: Sequence[Any] = session.execute(
        base.with_only_columns(*key_columns, *_point_columns())
        .join(Job, Result.job_id == Job.id)
        .order_by(Result.created_at.desc(), Result.id.desc())
        .limit(recent)
    ).all()
    rows: dict[SeriesKey, list[Any]] = defaultdict(list)
    for row in newest:  # newest first: the series in the order of their newest result
        rows[SeriesKey(row[0], row[1], row[2])].append(row[3:])
    keys = list(rows)
    if filters.regressions_only:
        flagged = _series_with_regressions(session, keys)
        keys = [key for key in keys if key in flagged]
    keys = keys[:MAX_SERIES]
    labels = dict(
        session.execute(
            select(Device.id, Device.model_name).where(
                Device.id.in_({key.device_id for key in keys})
            )
        ).all()
    )
    alerts = _alert_nights(session, keys)
    series = [
        _series(
            key,
            labels.get(key.device_id) or "",
            len(rows[key]),
            [_point(row, alerts[key]) for row in reversed(rows[key])],
        )
        for key in keys
    ]
    cut = newest[-1].created_at if len(newest) >= recent else None  # the oldest read
    return History(series, recent_since=cut, recent=recent if cut else 0)


# Compare.


def toolchain_of(result: Result, model_sha256: str) -> dict[str, str]:
    """What a result was measured with: provenance, model version, the phone's build."""
    document = result.document or {}
    provenance = document.get("provenance") or {}
    device = document.get("device") or {}
    out: dict[str, str] = {"model_sha256": model_sha256}
    for name in sorted(provenance):
        value = provenance[name]
        if name in ("compile_ms", "cache_hit", "library_bytes"):
            continue  # how this build went, not what was built
        out[f"provenance.{name}"] = value if isinstance(value, str) else _plain(value)
    for name in ("fingerprint", "model", "soc", "android_release", "sdk_level"):
        if name in device:
            out[f"device.{name}"] = str(device[name])
    return out


def _plain(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def toolchain_diff(a: dict[str, str], b: dict[str, str]) -> list[tuple[str, str, str]]:
    """(key, a's value, b's value) for every key whose values differ."""
    return [
        (name, a.get(name, ""), b.get(name, ""))
        for name in sorted(set(a) | set(b))
        if a.get(name, "") != b.get(name, "")
    ]


@dataclass(frozen=True)
class Pair:
    """Two runs of the same (model name, device, backend), one from each job."""

    model_name: str
    device_id: int
    backend: str
    a: RunRow
    b: RunRow


def job_pairs(session: Session, job_a: int, job_b: int) -> list[Pair]:
    """Every (model name, device, backend) measured by both jobs, with the two runs."""

    def runs_of(job_id: int) -> dict[tuple[str, int, str], RunRow]:
        rows = _run_rows(
            session,
            _RUN_ROWS.where(Run.job_id == job_id).order_by(Run.id),
        )
        return {(r.model_name, r.run.device_id, r.run.backend): r for r in rows}

    a, b = runs_of(job_a), runs_of(job_b)
    return [Pair(k[0], k[1], k[2], a[k], b[k]) for k in a if k in b]
