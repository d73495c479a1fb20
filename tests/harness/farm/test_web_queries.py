"""The web pages' queries summed or bounded by the database, on both databases the farm runs
on (PostgreSQL and SQLite, each made by the migrations): a device's utilisation over a window
from runs with known times; a history naming no model holds its newest results only, and the
series of any history are found among its newest results."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from harness.db import (
    Device,
    Job,
    Model,
    Result,
    Run,
    RunStatus,
    make_engine,
    make_session_factory,
)
from harness.db.migrate import upgrade
from harness.farm.web_queries import (
    HistoryFilter,
    SeriesKey,
    history,
    history_series,
    utilisation,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    name = f"edgefarm_web_queries_{uuid.uuid4().hex[:8]}"
    if request.param == "postgresql":
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    else:
        url = f"sqlite:///{Path(tmp_path_factory.mktemp('farm')) / 'farm.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()
        if request.param == "postgresql":
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _device(session: Session) -> Device:
    device = Device(address=f"tcp:{uuid.uuid4().hex[:10]}:5555")
    session.add(device)
    session.flush()
    return device


def _job(session: Session, name: str = "m") -> Job:
    sha = uuid.uuid4().hex * 2
    model = Model(sha256=sha, name=name, format="onnx", size_bytes=1, input_spec=[])
    session.add(model)
    session.flush()
    job = Job(submitted_by="tests", model_id=model.id, settings={})
    session.add(job)
    session.flush()
    return job


def _run(
    session: Session,
    job: Job,
    device: Device,
    started: timedelta | None,
    finished: timedelta | None,
) -> None:
    """A run started and finished at these offsets from NOW (None: not yet)."""
    session.add(
        Run(
            job_id=job.id,
            device_id=device.id,
            backend=f"b{uuid.uuid4().hex[:8]}",  # one (job, device, backend) per run
            status=RunStatus.done if finished is not None else RunStatus.running,
            started_at=None if started is None else NOW + started,
            finished_at=None if finished is None else NOW + finished,
        )
    )


def test_utilisation_sums_each_runs_time_inside_the_window(
    factory: sessionmaker[Session],
) -> None:
    hour, minute = timedelta(hours=1), timedelta(minutes=1)
    with factory() as session:
        busy, other, idle, exact = (_device(session) for _ in range(4))
        job = _job(session)
        # Straddles the window's start (30 h to 20 h ago): its last 4 h count.
        _run(session, job, busy, -30 * hour, -20 * hour)
        _run(session, job, busy, -2 * hour, -hour)  # inside: 1 h
        _run(session, job, busy, -10 * minute, None)  # still running: 10 min, up to now
        # Finished "after now" (a clock ahead of the page's): counts up to now, 5 min.
        _run(session, job, busy, -5 * minute, 5 * minute)
        _run(session, job, busy, -48 * hour, -25 * hour)  # ended before the window
        _run(session, job, busy, None, None)  # queued, never started
        _run(session, job, busy, minute, None)  # starts after now
        # A run of exactly the window's start to its end fills another phone's day.
        _run(session, job, other, -DAY, timedelta(0))
        # Microseconds count (SQLite's own time arithmetic would round .9996 s up to a second).
        micro = timedelta(microseconds=1)
        _run(session, job, exact, -2 * hour + 999_600 * micro, -hour + 250 * micro)
        session.commit()
        found = utilisation(session, [busy.id, other.id, idle.id, exact.id], now=NOW)
    expected = (4 * hour + hour + 10 * minute + 5 * minute).total_seconds()
    assert found[busy.id].busy_s == pytest.approx(expected, abs=1e-6)
    assert found[busy.id].runs == 4
    assert found[busy.id].window_s == DAY.total_seconds()
    assert found[busy.id].share == pytest.approx(expected / DAY.total_seconds(), abs=1e-9)
    assert (found[other.id].busy_s, found[other.id].runs) == (pytest.approx(86400.0), 1)
    assert found[other.id].share == pytest.approx(1.0)
    assert (found[idle.id].busy_s, found[idle.id].runs, found[idle.id].share) == (0.0, 0, 0.0)
    assert found[exact.id].busy_s == pytest.approx(3599.00065, abs=1e-6)


def test_utilisation_of_a_shorter_window_and_of_no_devices(
    factory: sessionmaker[Session],
) -> None:
    hour = timedelta(hours=1)
    with factory() as session:
        device = _device(session)
        job = _job(session)
        _run(session, job, device, -3 * hour, -90 * timedelta(minutes=1))  # 30 min of 2 h
        _run(session, job, device, -30 * timedelta(seconds=1), None)  # 30 s
        session.commit()
        found = utilisation(session, [device.id], now=NOW, window=2 * hour)
        assert utilisation(session, [], now=NOW) == {}
    assert found[device.id].busy_s == pytest.approx(1830.0, abs=1e-6)
    assert found[device.id].runs == 2
    assert found[device.id].share == pytest.approx(1830.0 / 7200.0)


def _result(session: Session, job: Job, device: Device, backend: str, at: timedelta) -> None:
    """A run of ``job`` on ``device`` with ``backend`` and its result, measured at NOW + at."""
    run = Run(
        job_id=job.id,
        device_id=device.id,
        backend=backend,
        status=RunStatus.done,
        started_at=NOW + at,
        finished_at=NOW + at,
    )
    session.add(run)
    session.flush()
    median = 1.0 + at.total_seconds() / 1e6
    session.add(
        Result(
            run_id=run.id,
            job_id=job.id,
            model_id=job.model_id,
            device_id=device.id,
            backend=backend,
            status="ok",
            median_ms=median,
            p90_ms=median * 1.1,
            samples_ms=[median],
            created_at=NOW + at,
        )
    )


def test_a_history_naming_no_model_holds_its_newest_results_only(
    factory: sessionmaker[Session],
) -> None:
    hour, day = timedelta(hours=1), timedelta(days=1)
    old, new = f"old-{uuid.uuid4().hex[:6]}", f"new-{uuid.uuid4().hex[:6]}"
    with factory() as session:
        first, second = _device(session), _device(session)
        for k in range(6):  # an old series: days ago
            _result(session, _job(session, old), first, "tvm-cpu", -(10 - k) * day)
        newer = _job(session, new)
        for k in range(4):  # the newest results: two series of another model
            _result(session, newer, first, f"tvm-cpu-{k}", -(4 - k) * hour)
        for k in range(3):  # -5.5 h, -4.5 h, -3.5 h
            _result(session, _job(session, new), second, "tvm-cpu", -(5 - k) * hour - hour / 2)
        session.commit()
        devices = (str(first.id), str(second.id))
        # Naming no model (these two phones only, so other tests' rows stay out): the newest 5.
        view = history(session, HistoryFilter(devices=devices), recent=5)
        shown = sorted(p.at for s in view.series for p in s.points)
        assert len(shown) == 5
        assert view.recent == 5 and view.recent_since == NOW - 4 * hour
        assert shown == [NOW - h * hour for h in (4, 3.5, 3, 2, 1)]
        assert {s.model_name for s in view.series} == {new}
        assert len(view.series) == 5
        # Fewer results than the window: the whole view, no cut.
        whole = history(session, HistoryFilter(devices=devices), recent=100)
        assert whole.recent_since is None
        assert sum(len(s.points) for s in whole.series) == 13
        # A model named: its whole history, however old.
        named = history(session, HistoryFilter(models=(old,)), recent=5)
        assert named.recent_since is None
        assert [len(s.points) for s in named.series] == [6]
        assert named.series[0].points[0].at == NOW - 10 * day
        # Its series are those measured among its newest ``scan`` results.
        scanned = history(session, HistoryFilter(models=(new,)), scan=2)
        assert scanned.scanned == 2
        assert [SeriesKey(s.model_name, s.device_id, s.backend) for s in scanned.series] == [
            SeriesKey(new, first.id, "tvm-cpu-3"),
            SeriesKey(new, first.id, "tvm-cpu-2"),
        ]
        assert [len(s.points) for s in scanned.series] == [1, 1]  # each its whole history
        everything = history(session, HistoryFilter(models=(new,)))
        assert everything.scanned == 0 and len(everything.series) == 5


def test_a_long_series_is_a_point_per_span_with_its_toolchain_changes(
    factory: sessionmaker[Session],
) -> None:
    """Beyond ``max_points`` runs a series is a point per span of days, read without the
    runs' documents: the median of the span's medians, the band from its lowest median to
    its highest p90, its runs and alerts counted; the toolchain (here a new model version
    under the same name, from day 3 on) changes where it does."""
    name = f"long-{uuid.uuid4().hex[:6]}"
    day, hour = timedelta(days=1), timedelta(hours=1)
    with factory() as session:
        device = _device(session)
        versions = [_job(session, name).model_id, _job(session, name).model_id]
        for d in range(6):  # 6 days, 3 runs a day (02:00, 08:00, 14:00): days -10 .. -5
            for h in (2, 8, 14):
                job = Job(submitted_by="tests", model_id=versions[d >= 3], settings={})
                session.add(job)
                session.flush()
                _result(session, job, device, "tvm-cpu", (d - 10) * day + (h - 12) * hour)
        session.commit()
        key = SeriesKey(name, device.id, "tvm-cpu")
        filters = HistoryFilter(models=(name,))
        whole = history_series(session, filters, key)  # 18 runs: a point each
        assert whole.span_days == 0 and len(whole.points) == 18
        series = history_series(session, filters, key, max_points=4)  # 6 days / 4: 2-day spans
    assert series.span_days == 2 and series.total == 18
    assert [p.runs for p in series.points] == [6, 6, 6]
    day0 = (NOW - 10 * day).replace(hour=0, minute=0, second=0, microsecond=0)
    assert [p.at for p in series.points] == [day0, day0 + 2 * day, day0 + 4 * day]
    assert [p.span_end for p in series.points] == [day0 + 2 * day, day0 + 4 * day, day0 + 6 * day]
    thirds = (whole.points[:6], whole.points[6:12], whole.points[12:])
    for point, runs in zip(series.points, thirds, strict=True):
        medians = sorted(r.median_ms for r in runs if r.median_ms is not None)
        assert point.median_ms == pytest.approx((medians[2] + medians[3]) / 2)
        assert point.low_ms == min(medians)
        assert point.high_ms == pytest.approx(max(m * 1.1 for m in medians))
    # The same change as the point-per-run view finds, once, in the span where it starts.
    (change,) = [c for c in whole.changes if c.key == "model_sha256"]
    (aggregated,) = series.changes
    assert (aggregated.key, aggregated.before, aggregated.after) == (
        "model_sha256",
        change.before,
        change.after,
    )
    assert series.points[1].at <= aggregated.at < series.points[1].span_end  # type: ignore[operator]
    assert series.points[1].toolchain["model_sha256"] == change.after


def test_a_series_changes_where_it_becomes_tuned_and_where_its_records_change(
    factory: sessionmaker[Session],
) -> None:
    """Untuned is a state of its own in a series' toolchain: the history marks where a
    tvm-cpu series starts to apply tuning records and where their digest changes (a nightly
    tuning budget at work); a failed run without a document marks nothing."""
    name = f"tuned-{uuid.uuid4().hex[:6]}"
    hour = timedelta(hours=1)
    with factory() as session:
        device = _device(session)
        model_id = _job(session, name).model_id
        for k, records in enumerate(["", "", "aaaa1111", "aaaa1111", None, "bbbb2222"]):
            job = Job(submitted_by="tests", model_id=model_id, settings={})
            session.add(job)
            session.flush()
            _result(session, job, device, "tvm-cpu", (k - 10) * hour)
            result = session.scalars(select(Result).order_by(Result.id.desc()).limit(1)).one()
            if records is None:  # a failed run: no provenance
                continue
            provenance: dict[str, object] = {"tvm_version": "0.27", "edgefarm_version": "1"}
            if records:
                provenance["tuning"] = {"records": records, "trials": 8}
            result.document = {"provenance": provenance}
        session.commit()
        series = history_series(
            session, HistoryFilter(models=(name,)), SeriesKey(name, device.id, "tvm-cpu")
        )
    changes = [(c.key, c.before, c.after) for c in series.changes]
    assert changes == [
        ("tuning", "untuned", "aaaa1111"),
        ("tuning", "aaaa1111", "bbbb2222"),
    ]
    assert series.points[2].toolchain["tuning"] == "aaaa1111"
    assert series.points[0].toolchain["tuning"] == ""
