"""Farm tunings: the search on the ``tuning`` queue, its candidates measured on the phones.

``edgefarm.tune`` (queue ``tuning``, a worker process of its own so that a tuning of hours never
holds up a job's compile) runs MetaSchedule's search for one model and device class
(:func:`harness.tuning.session.tune_prepared`). Its runner is a :class:`FarmKernelTimer`: each
batch of candidates, built here, is split over the class's phones that are idle at that moment
(:func:`harness.farm.tunings.idle_devices`), one ``tuning_slices`` row each carrying the
libraries, sent as ``edgefarm.measure_slice`` to each phone's own queue — the farm's version of
TVM's RPC tracker. The phone's worker takes the slice only if the phone is idle and no run
waits for it (benchmarks come first), under a lease of the slice's own, and writes the times
back. What a phone declined, or what a dead worker never measured, goes to the next idle phone.

Ownership is the database's, as for runs: a claim increments ``tunings.attempts`` and only
that attempt may end the tuning; a tuning whose worker died (its heartbeat stopped) is sent
again by the reaper, and the new attempt continues from the records saved after every batch.
A tuning whose worker is stopped (SIGTERM, :mod:`workers.shutdown`) ends the batch it is in,
goes back to ``queued`` and is sent again at once, for the next tuning worker to continue.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, update
from sqlalchemy.orm import Session

from harness.backends import cpu_part
from harness.compile.targets import get_target
from harness.config import get_settings
from harness.db import (
    Device,
    SliceStatus,
    Tuning,
    TuningSlice,
    TuningStatus,
    utcnow,
)
from harness.devices import open_device
from harness.devices.base import DeviceFacts
from harness.errors import EdgefarmError, InfrastructureError, JobError, one_line
from harness.farm.registry import check_device
from harness.farm.tunings import (
    acquire_slice_lease,
    class_devices,
    idle_devices,
    release_slice_lease,
    renew_slice_lease,
    run_waits_for,
)
from harness.tuning.device import DeviceKernelTimer, KernelTiming
from harness.tuning.session import (
    Budget,
    TuningReport,
    device_cores,
    records_software,
    threads_text,
    tune_prepared,
)
from harness.tuning.store import RecordsKey
from workers import settings as worker_settings
from workers.celery_app import task
from workers.db import db_session, session_factory
from workers.dispatch import send_slice, send_tune
from workers.heartbeat import Heartbeat
from workers.measurement import prepare_stored_model
from workers.shutdown import stop_request
from workers.tasks import retry_on_infrastructure

log = logging.getLogger(__name__)

SLICE_TRIES = 3  # a candidate no phone measured after this many slices counts as failed
POLL_S = 0.3
STOPPING = "stopped with its worker"  # the stop reason that sends a tuning back to the queue


class _Stop(Exception):
    """The tuning must stop: cancelled, taken over by another attempt, no phone left, or its
    worker is stopping."""


def _bundle(paths: list[Path]) -> bytes:
    """The candidates' libraries as one tar (``k<i>.so``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i, path in enumerate(paths):
            tar.add(path, arcname=f"k{i}.so")
    return buffer.getvalue()


def _unbundle(data: bytes, directory: Path, count: int) -> list[Path]:
    """The slice's libraries written under ``directory``; only the names we made are read."""
    wanted = {f"k{i}.so" for i in range(count)}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            if member.name not in wanted or not member.isfile():
                raise InfrastructureError(f"a tuning slice holds an unexpected {member.name!r}")
            source = tar.extractfile(member)
            assert source is not None
            (directory / member.name).write_bytes(source.read())
    return [directory / f"k{i}.so" for i in range(count)]


class FarmKernelTimer:
    """Times candidates on the idle phones of a tuning's class (see the module doc)."""

    def __init__(
        self, tuning_id: int, attempt: int, stopping: threading.Event | None = None
    ) -> None:
        settings = get_settings()
        self.tuning_id = tuning_id
        self.attempt = attempt
        self.stopping = stopping or threading.Event()  # set: the worker is being stopped
        self.lease_timeout_s = settings.lease_timeout_s
        # A slice its phone's worker has not started by then is given to another phone.
        self.start_timeout_s = max(30.0, settings.lease_timeout_s * 2)
        self.stop_reason: str | None = None
        self.phones: set[int] = set()
        self.pool_threads: set[int] = set()  # the threads TVM's pool had, as phones said

    # -- the tuning's own state -----------------------------------------------------------------

    def check(self, session: Session) -> None:
        """Raise _Stop when this attempt should no longer work (see :attr:`stop_reason`)."""
        if self.stop_reason is None and self.stopping.is_set():
            self.stop_reason = STOPPING
        if self.stop_reason is not None:
            raise _Stop(self.stop_reason)
        row = session.get(Tuning, self.tuning_id, populate_existing=True)
        if row is None or row.status == TuningStatus.cancelled:
            self.stop_reason = "cancelled"
        elif row.attempts != self.attempt or row.status != TuningStatus.running:
            self.stop_reason = "superseded"
        if self.stop_reason is not None:
            raise _Stop(self.stop_reason)

    def should_stop(self) -> bool:
        if self.stop_reason is not None or self.stopping.is_set():
            self.stop_reason = self.stop_reason or STOPPING
            return True
        with db_session() as session:
            try:
                self.check(session)
            except _Stop:
                return True
        return False

    # -- measuring ------------------------------------------------------------------------------

    def cores(self) -> int:
        """The CPU count of the class's phones (a slice with no candidate reports it): the
        search's target needs it before the first candidate is made."""
        probe = self._measure([], [])
        if probe.cores is None:
            raise JobError("run", "no phone of the class reported its CPU count")
        return probe.cores

    def time(self, candidates: list[tuple[Path, list[str]]]) -> list[KernelTiming]:
        if not candidates:
            return []
        try:
            result = self._measure([c[0] for c in candidates], [c[1] for c in candidates])
        except _Stop:
            return [KernelTiming.not_run(f"the tuning {self.stop_reason}")] * len(candidates)
        return result.timings

    def _measure(self, paths: list[Path], args: list[list[str]]) -> _Measured:
        """Each candidate timed on some idle phone of the class; with none, one phone's CPU
        count. A candidate whose slices were declined or failed :data:`SLICE_TRIES` times
        counts as failed (MetaSchedule records it so)."""
        timings: list[KernelTiming | None] = [None] * len(paths)
        tries = [0] * len(paths)
        probes = 0
        cores: int | None = None
        while True:
            pending = [i for i in range(len(paths)) if timings[i] is None]
            if paths and not pending:
                return _Measured([t for t in timings if t is not None], cores)
            if not paths:
                if cores is not None:
                    return _Measured([], cores)
                probes += 1
                if probes > SLICE_TRIES * 3:
                    raise JobError("run", "no phone of the class took a slice to report its CPUs")
            phones = self._wait_for_phones()
            parts = _split(pending, len(phones)) if paths else [[]]
            slices = self._send(phones, parts, paths, args)
            for slice_id, part in slices:
                ended = self._wait_for_slice(slice_id)
                if ended.status == SliceStatus.done:
                    cores = cores or ended.cores
                    for i, result in zip(part, ended.results, strict=False):
                        timings[i] = _timing(result)
                        if isinstance(result, dict) and isinstance(result.get("threads"), int):
                            self.pool_threads.add(result["threads"])
                    continue
                log.info(
                    "tuning %s: slice %s %s (%s); its candidates go to another phone",
                    self.tuning_id,
                    slice_id,
                    ended.status,
                    ended.error or "",
                )
                for i in part:
                    tries[i] += 1
                    if tries[i] >= SLICE_TRIES:
                        timings[i] = KernelTiming(
                            error=f"no phone measured it ({ended.error or ended.status})"
                        )

    def _send(
        self, phones: list[int], parts: list[list[int]], paths: list[Path], args: list[list[str]]
    ) -> list[tuple[int, list[int]]]:
        """One slice per (phone, part), committed, then sent to each phone's queue."""
        slices: list[tuple[int, list[int]]] = []
        with db_session() as session:
            for phone, part in zip(phones, parts, strict=False):
                row = TuningSlice(
                    tuning_id=self.tuning_id,
                    device_id=phone,
                    status=SliceStatus.pending,
                    plan=[args[i] for i in part],
                    bundle=_bundle([paths[i] for i in part]),
                    results=[],
                )
                session.add(row)
                session.flush()
                slices.append((row.id, part))
                self.phones.add(phone)
            session.commit()
        for (slice_id, _), phone in zip(slices, phones, strict=False):
            send_slice(slice_id, phone)
        return slices

    def _wait_for_phones(self) -> list[int]:
        """The ids of the class's phones a slice may take now, waiting while all are busy;
        _Stop when the class has no good phone left."""
        while True:
            with db_session() as session:
                self.check(session)
                tuning = session.get(Tuning, self.tuning_id)
                assert tuning is not None
                members = class_devices(session, tuning)
                if not members:
                    self.stop_reason = f"has no good phone of class {tuning.device_class} left"
                    raise _Stop(self.stop_reason)
                idle = idle_devices(session, tuning, members)
                if idle:
                    return [d.id for d in idle]
            time.sleep(1.0)

    def _wait_for_slice(self, slice_id: int) -> TuningSlice:
        """The slice once it ended; one never started in time is declined here, one whose
        worker went silent is failed here (conditional updates: the phone's worker and this
        side never both end it)."""
        while True:
            if self.stopping.is_set():
                self._withdraw()
                self.stop_reason = self.stop_reason or STOPPING
                raise _Stop(self.stop_reason)
            with db_session() as session:
                row = session.get(TuningSlice, slice_id, populate_existing=True)
                assert row is not None
                if row.status.ended:
                    session.expunge(row)
                    session.execute(delete(TuningSlice).where(TuningSlice.id == slice_id))
                    session.commit()
                    return row
                now = utcnow()
                if row.status == SliceStatus.pending and _older(
                    row.created_at, now, self.start_timeout_s
                ):
                    _end_slice(
                        session,
                        slice_id,
                        SliceStatus.pending,
                        SliceStatus.declined,
                        error=f"its phone's worker did not start it in {self.start_timeout_s:g} s",
                    )
                elif row.status == SliceStatus.running and _older(
                    row.heartbeat_at or row.created_at, now, self.lease_timeout_s
                ):
                    _end_slice(
                        session,
                        slice_id,
                        SliceStatus.running,
                        SliceStatus.failed,
                        error="its phone's worker went silent",
                    )
                session.commit()
            time.sleep(POLL_S)

    def _withdraw(self) -> None:
        """Decline the tuning's slices no phone started (their candidates are not run, so
        nothing is recorded of them); a started one ends on its phone and frees it."""
        with db_session() as session:
            session.execute(
                update(TuningSlice)
                .where(
                    TuningSlice.tuning_id == self.tuning_id,
                    TuningSlice.status == SliceStatus.pending,
                )
                .values(
                    status=SliceStatus.declined,
                    finished_at=utcnow(),
                    bundle=None,
                    error="its tuning's worker stopped",
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()


class _Measured:
    def __init__(self, timings: list[KernelTiming], cores: int | None) -> None:
        self.timings = timings
        self.cores = cores


def _split(indices: list[int], parts: int) -> list[list[int]]:
    """``indices`` in ``parts`` contiguous runs of near-equal length (none empty)."""
    parts = max(1, min(parts, len(indices)))
    size, extra = divmod(len(indices), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (1 if p < extra else 0)
        out.append(indices[start:end])
        start = end
    return out


def _timing(result: Any) -> KernelTiming:
    if isinstance(result, dict) and isinstance(result.get("costs_s"), list):
        return KernelTiming(costs_s=tuple(float(c) for c in result["costs_s"]))
    error = result.get("error") if isinstance(result, dict) else None
    return KernelTiming(error=str(error or "no time reported"))


def _older(moment: datetime | None, now: datetime, seconds: float) -> bool:
    return moment is None or moment < now - timedelta(seconds=seconds)


def _end_slice(
    session: Session, slice_id: int, before: SliceStatus, after: SliceStatus, **values: Any
) -> bool:
    changed = session.execute(
        update(TuningSlice)
        .where(TuningSlice.id == slice_id, TuningSlice.status == before)
        .values(status=after, finished_at=utcnow(), bundle=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


# -- the phone's side ---------------------------------------------------------------------------


@task(name="edgefarm.measure_slice", acks_late=True)
def measure_slice(slice_id: int) -> None:
    """Measure a tuning slice on this queue's phone, if the phone is idle and no run waits for
    it; otherwise decline it (the tuning gives it to another phone, or waits). A slice is
    seconds of the phone's time: a worker being stopped lets it end and free the phone."""
    with stop_request(f"tuning slice {slice_id}"):
        _measure_slice(slice_id)


def _measure_slice(slice_id: int) -> None:
    settings = get_settings()
    with db_session() as session:
        row = session.get(TuningSlice, slice_id)
        if row is None or row.status != SliceStatus.pending:
            return  # ended (given up by its tuning) or taken by a redelivered message
        device = session.get(Device, row.device_id)
        tuning = session.get(Tuning, row.tuning_id)
        if device is None or tuning is None:
            return
        if run_waits_for(session, device.id) or not acquire_slice_lease(
            session, device.id, slice_id, settings.lease_timeout_s
        ):
            _end_slice(
                session, slice_id, SliceStatus.pending, SliceStatus.declined, error="phone busy"
            )
            session.commit()
            return
        now = utcnow()
        if not _end_slice_start(session, slice_id, now):
            release_slice_lease(session, device.id, slice_id)
            session.commit()
            return
        session.commit()
        address, target, device_id = device.address, tuning.target, device.id
        threads = tuning.threads
        plan, bundle = list(row.plan), row.bundle or b""

    def beat(s: Session) -> None:
        s.execute(
            update(TuningSlice)
            .where(TuningSlice.id == slice_id, TuningSlice.status == SliceStatus.running)
            .values(heartbeat_at=utcnow())
        )
        renew_slice_lease(s, device_id, slice_id, settings.lease_timeout_s)

    results: list[dict[str, Any]] = []
    cores: int | None = None
    error: str | None = None
    with Heartbeat(
        f"tuning slice {slice_id}", beat, worker_settings.heartbeat_interval_s(settings)
    ):
        try:
            phone = open_device(address)
            try:
                cores = device_cores(phone)
                if plan:
                    with tempfile.TemporaryDirectory(prefix="edgefarm-slice-") as tmp:
                        paths = _unbundle(bundle, Path(tmp), len(plan))
                        timer = DeviceKernelTimer(phone, target, threads=threads)
                        timings = timer.time(list(zip(paths, plan, strict=True)))
                    said = {"threads": timer.pool_threads} if timer.pool_threads else {}
                    results = [
                        {"costs_s": list(t.costs_s), **said}
                        if t.error is None
                        else {"error": t.error}
                        for t in timings
                    ]
            finally:
                phone.close()
        except EdgefarmError as exc:
            error = one_line(exc.message, 400)
    with db_session() as session:
        if error is None:
            _end_slice(
                session,
                slice_id,
                SliceStatus.running,
                SliceStatus.done,
                results=results,
                cores=cores,
            )
        else:
            log.warning("tuning slice %s on device %s failed: %s", slice_id, device_id, error)
            _end_slice(session, slice_id, SliceStatus.running, SliceStatus.failed, error=error)
            found = session.get(Device, device_id)
            if found is not None:
                check_device(session, found)  # a phone that is gone is marked bad
        release_slice_lease(session, device_id, slice_id)
        session.commit()


def _end_slice_start(session: Session, slice_id: int, now: datetime) -> bool:
    changed = session.execute(
        update(TuningSlice)
        .where(TuningSlice.id == slice_id, TuningSlice.status == SliceStatus.pending)
        .values(status=SliceStatus.running, started_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


# -- the search's side --------------------------------------------------------------------------


def _claim(session: Session, tuning_id: int, now: datetime, stale_before: datetime) -> bool:
    """Start an attempt of the tuning if it is queued, or running but silent since
    ``stale_before`` (its worker died). One conditional UPDATE: of two claimants, one wins."""
    result = session.execute(
        update(Tuning)
        .where(
            Tuning.id == tuning_id,
            or_(
                Tuning.status == TuningStatus.queued,
                (Tuning.status == TuningStatus.running)
                & or_(Tuning.heartbeat_at.is_(None), Tuning.heartbeat_at < stale_before),
            ),
        )
        .values(
            status=TuningStatus.running,
            attempts=Tuning.attempts + 1,
            heartbeat_at=now,
            started_at=func.coalesce(Tuning.started_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _finish(
    tuning_id: int,
    attempt: int,
    status: TuningStatus,
    *,
    report: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """End the tuning with ``status`` if attempt ``attempt`` still owns it; a tuning cancelled
    meanwhile stays cancelled and gets the report of what it did."""
    values: dict[str, Any] = {"finished_at": utcnow()}
    if report is not None:
        values["report"] = report
    if error is not None:
        values["error_message"] = one_line(error, 2000)
    owned = (Tuning.id == tuning_id, Tuning.attempts == attempt)
    with db_session() as session:
        session.execute(
            update(Tuning)
            .where(*owned, Tuning.status == TuningStatus.running)
            .values(status=status, **values)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Tuning)
            .where(*owned, Tuning.status == TuningStatus.cancelled)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.commit()


def _requeue(tuning_id: int, attempt: int, report: dict[str, Any] | None) -> None:
    """Put the tuning back in the queue if attempt ``attempt`` still owns it (its worker is
    stopping), with the report of what it did, and send it again at once: the next tuning
    worker continues from its records. A send that fails is the reaper's (``queued``)."""
    values: dict[str, Any] = {"status": TuningStatus.queued, "enqueued_at": utcnow()}
    if report is not None:
        values["report"] = report
    with db_session() as session:
        changed = session.execute(
            update(Tuning)
            .where(
                Tuning.id == tuning_id,
                Tuning.attempts == attempt,
                Tuning.status == TuningStatus.running,
            )
            .values(heartbeat_at=None, **values)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    if changed.rowcount == 1:  # type: ignore[attr-defined]
        log.info("tuning %s: its worker is stopping; back in the queue", tuning_id)
        send_tune(tuning_id)


def _report_dump(
    report: TuningReport, earlier: dict[str, Any], timer: FarmKernelTimer
) -> dict[str, Any]:
    """The report to keep: this attempt's, with the time and the phones of the attempts before
    it added (what it cost, and where it was measured, in all), and the threads TVM's pool had
    on them (``pool_threads``, as the phones' runners said), and which attempt it is of."""
    dump = report.dump()
    dump["attempt"] = timer.attempt
    dump["seconds"] = round(float(earlier.get("seconds") or 0.0) + report.seconds, 3)
    dump["phones"] = sorted(set(earlier.get("phones") or []) | timer.phones)
    dump["pool_threads"] = sorted(set(earlier.get("pool_threads") or []) | timer.pool_threads)
    return dump


def _save_report(tuning_id: int, attempt: int, dump: dict[str, Any]) -> None:
    """Keep the row's report current after every saved batch (the web view and the API show
    progress and the phones measuring; a later attempt knows how much of a time budget was
    spent)."""
    with db_session() as session:
        session.execute(
            update(Tuning)
            .where(Tuning.id == tuning_id, Tuning.attempts == attempt)
            .values(report=dump)
            .execution_options(synchronize_session=False)
        )
        session.commit()


@task(bind=True, name="edgefarm.tune", **retry_on_infrastructure(), max_retries=5)
def tune(self: Any, tuning_id: int) -> None:
    """Run tuning ``tuning_id`` (see the module doc): claim it, search, end it."""
    settings = get_settings()
    now = utcnow()
    with db_session() as session:
        claimed = _claim(session, tuning_id, now, now - timedelta(seconds=settings.lease_timeout_s))
        session.commit()
        if not claimed:
            log.info("tuning %s: ended, or running elsewhere", tuning_id)
            return
        tuning = session.get(Tuning, tuning_id)
        assert tuning is not None
        attempt = tuning.attempts
        earlier = tuning.report or {}
        earlier_s = float(earlier.get("seconds") or 0.0)
        minutes = tuning.minutes
        if minutes is not None:  # a resumed tuning has what its earlier attempts left
            minutes = max(minutes - earlier_s / 60.0, 0.0)
        budget = Budget(
            trials=tuning.trials,
            minutes=minutes,
            batch=tuning.batch,
            population=tuning.population,
        )
        key = RecordsKey(tuning.device_class, get_target(tuning.target).label, records_software())
        spec_name, inputs, model = tuning.target, tuple(tuning.inputs), tuning.model
        backend, threads = tuning.backend, tuning.threads
        members = class_devices(session, tuning)
        facts = DeviceFacts.from_dict(members[0].facts if members else {"id": "?"})

    def beat(s: Session) -> None:
        s.execute(
            update(Tuning)
            .where(
                Tuning.id == tuning_id,
                Tuning.attempts == attempt,
                Tuning.status == TuningStatus.running,
            )
            .values(heartbeat_at=utcnow())
        )

    if minutes is not None and minutes <= 0:
        _finish(tuning_id, attempt, TuningStatus.done, report=earlier)
        return
    with (
        stop_request(f"tuning {tuning_id}") as stopping,
        Heartbeat(f"tuning {tuning_id}", beat, worker_settings.heartbeat_interval_s(settings)),
    ):
        timer = FarmKernelTimer(tuning_id, attempt, stopping=stopping)
        try:
            prepared = prepare_stored_model(model, inputs)
            # tvm-cpu: the whole model; a BYOC backend: what its partition leaves on the CPU,
            # partitioned as a phone of the class builds it (its NNAPI feature level).
            lower = cpu_part(backend, facts, None)
            cores = timer.cores()
            report = tune_prepared(
                prepared,
                key=key,
                spec=get_target(spec_name),
                cores=cores,
                timer=timer,
                measured_by=f"farm:{key.device_class}"[:128],
                measured_on=(
                    f"the farm's idle phones of {key.device_class} ({cores} cores, "
                    f"{threads_text(threads)})"
                ),
                factory=session_factory(),
                budget=budget,
                should_stop=timer.should_stop,
                on_saved=lambda r: _save_report(
                    tuning_id, attempt, _report_dump(r, earlier, timer)
                ),
                # The worker's log says how far it is (each batch: candidates, rate, time left).
                progress=lambda event, message: log.info(
                    "tuning %s: %s: %s", tuning_id, event, message
                ),
                lower=lower,
                threads=threads,
            )
        except _Stop:
            report = None
        except JobError as exc:
            _finish(tuning_id, attempt, TuningStatus.failed, error=f"{exc.stage}: {exc.message}")
            return
        except InfrastructureError:
            raise  # retried; a later attempt continues from the saved records
        except Exception as exc:
            _finish(
                tuning_id,
                attempt,
                TuningStatus.failed,
                error=f"internal error ({type(exc).__name__}): {exc}",
            )
            raise
    if timer.stop_reason == "superseded":
        return
    dump = None
    if report is not None:
        dump = _report_dump(report, earlier, timer)
    if timer.stop_reason == STOPPING:
        if dump is not None:
            dump["cancelled"] = False  # stopped by its worker, not by anyone's cancel
        _requeue(tuning_id, attempt, dump)
        return
    if timer.stop_reason is not None and timer.stop_reason != "cancelled":
        _finish(
            tuning_id,
            attempt,
            TuningStatus.failed,
            report=dump,
            error=f"the tuning {timer.stop_reason}",
        )
        return
    _finish(tuning_id, attempt, TuningStatus.done, report=dump)
