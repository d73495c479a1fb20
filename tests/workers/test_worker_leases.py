"""Device leases on both databases: PostgreSQL (SELECT ... FOR UPDATE) and SQLite (a
conditional UPDATE), including two takers at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from harness.db import Device, DeviceState, Job, Model, Result, Run, RunStatus, make_engine, utcnow
from harness.db.models import Tuning
from harness.devices.base import DeviceFacts
from harness.errors import InfrastructureError
from harness.farm.leases import (
    acquire_lease,
    expire_leases,
    mark_running,
    release_lease,
    renew_lease,
)
from harness.farm.tunings import (
    acquire_slice_lease,
    class_devices,
    class_of,
    idle_devices,
    release_slice_lease,
    renew_slice_lease,
    run_waits_for,
)
from workers.lifecycle import failed_run_document

from workerfarm import TABLES, alembic_config


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("database_url")
    else:
        url = f"sqlite:///{tmp_path / 'farm.db'}"
        command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    if request.param == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


def _farm(engine: Engine) -> tuple[sessionmaker[Session], int, list[int]]:
    """A device and two runs on it."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions() as session:
        device = Device(address="tcp:10.0.0.1:5555")
        model = Model(sha256="0" * 64, name="m", format="onnx", size_bytes=1)
        session.add_all([device, model])
        session.flush()
        job = Job(submitted_by="tests", model_id=model.id)
        job.runs += [Run(device_id=device.id, backend=b) for b in ("tvm-cpu", "ort")]
        session.add(job)
        session.commit()
        return sessions, device.id, [r.id for r in job.runs]


def _device(sessions: sessionmaker[Session], device_id: int) -> Device:
    with sessions() as session:
        device = session.get(Device, device_id)
        assert device is not None
        return device


def test_one_run_at_a_time(engine: Engine) -> None:
    sessions, device_id, (first, second) = _farm(engine)
    with sessions() as session:
        assert acquire_lease(session, device_id, first, 60.0, attempt=1)
        session.commit()
    device = _device(sessions, device_id)
    assert (device.state, device.current_run_id) == (DeviceState.leased, first)
    assert device.lease_expires_at is not None

    with sessions() as session:
        assert not acquire_lease(session, device_id, second, 60.0, attempt=1)  # busy
        # The holder's run may take it again (its previous attempt died).
        assert acquire_lease(session, device_id, first, 60.0, attempt=1)
        # Not the holder: nothing happens.
        assert not release_lease(session, device_id, second, attempt=1)
        session.commit()
    assert _device(sessions, device_id).current_run_id == first

    with sessions() as session:
        assert release_lease(session, device_id, first, attempt=1)
        session.commit()
    device = _device(sessions, device_id)
    assert (device.state, device.current_run_id) == (DeviceState.idle, None)
    with sessions() as session:
        assert acquire_lease(session, device_id, second, 60.0, attempt=1)
        session.commit()


def test_a_superseded_attempt_neither_keeps_nor_frees_the_lease(engine: Engine) -> None:
    """Attempt 1 of a run was thought dead and attempt 2 took the lease over: attempt 1, still
    alive after all, can renew, mark or release nothing; attempt 2 can."""
    sessions, device_id, (first, _second) = _farm(engine)
    with sessions() as session:
        assert acquire_lease(session, device_id, first, 60.0, attempt=1)
        assert acquire_lease(session, device_id, first, 60.0, attempt=2)  # the takeover
        session.commit()
    with sessions() as session:
        assert not renew_lease(session, device_id, first, 60.0, attempt=1)
        assert not mark_running(session, device_id, first, attempt=1)
        assert not release_lease(session, device_id, first, attempt=1)
        session.commit()
    device = _device(sessions, device_id)
    assert (device.state, device.current_run_id, device.lease_attempt) == (
        DeviceState.leased,
        first,
        2,
    )
    with sessions() as session:
        assert renew_lease(session, device_id, first, 60.0, attempt=2)
        assert mark_running(session, device_id, first, attempt=2)
        assert release_lease(session, device_id, first, attempt=2)
        session.commit()
    device = _device(sessions, device_id)
    assert (device.state, device.current_run_id, device.lease_attempt) == (
        DeviceState.idle,
        None,
        None,
    )


def test_expired_leases_are_released(engine: Engine) -> None:
    sessions, device_id, (first, _second) = _farm(engine)
    with sessions() as session:
        assert acquire_lease(session, device_id, first, 5.0, attempt=1)
        session.commit()
    with sessions() as session:
        assert expire_leases(session, utcnow()) == []  # not yet
        assert expire_leases(session, utcnow() + timedelta(seconds=6)) == [device_id]
        session.commit()
    assert _device(sessions, device_id).state == DeviceState.idle


def test_two_takers_at_once_one_wins(engine: Engine) -> None:
    """The first taker's transaction is still open when the second tries: PostgreSQL makes
    the second wait on the row lock, SQLite on its write lock; either way it then finds the
    device taken."""
    sessions, device_id, (first, second) = _farm(engine)
    outcome: dict[str, bool] = {}
    with sessions() as holder:
        assert acquire_lease(holder, device_id, first, 60.0, attempt=1)  # not committed yet

        def other() -> None:
            with sessions() as session:
                outcome["second"] = acquire_lease(session, device_id, second, 60.0, attempt=1)
                session.commit()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive()  # blocked behind the open transaction
        holder.commit()
    thread.join(timeout=30.0)
    assert outcome == {"second": False}
    assert _device(sessions, device_id).current_run_id == first


def test_a_superseded_attempt_cannot_end_the_run(engine: Engine) -> None:
    """Attempt 1 of a run, thought dead, comes back with a result after attempt 2 took the
    run over: recording it is refused (no result, the run and the lease still attempt 2's)."""
    from workers.tasks.runs import _record, _Superseded

    sessions, device_id, (run_id, _second) = _farm(engine)
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status, run.attempts, run.enqueued_at = RunStatus.running, 2, utcnow()
        assert acquire_lease(session, device_id, run_id, 60.0, attempt=2)
        session.commit()
        document = failed_run_document(run, InfrastructureError("late", stage="run"))
        document.error = None
        document.status = "ok"
    with sessions() as session, pytest.raises(_Superseded):
        _record(session, run_id, 1, document)
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None and run.status == RunStatus.running and run.attempts == 2
        assert session.scalar(select(Result).where(Result.run_id == run_id)) is None
    assert _device(sessions, device_id).lease_attempt == 2


def test_a_tuning_slice_and_a_run_never_hold_one_phone_at_once(engine: Engine) -> None:
    sessions, device_id, (run_id, _) = _farm(engine)
    with sessions() as session:
        assert acquire_slice_lease(session, device_id, 7, 60.0)
        session.commit()
    device = _device(sessions, device_id)
    assert (device.state, device.tuning_slice_id, device.current_run_id) == (
        DeviceState.running,
        7,
        None,
    )
    with sessions() as session:
        assert not acquire_lease(session, device_id, run_id, 60.0, attempt=1)  # a slice has it
        assert not acquire_slice_lease(session, device_id, 8, 60.0)  # and no other slice
        assert not release_slice_lease(session, device_id, 8)  # not the holder
        assert renew_slice_lease(session, device_id, 7, 60.0)
        assert release_slice_lease(session, device_id, 7)
        session.commit()
    device = _device(sessions, device_id)
    assert (device.state, device.tuning_slice_id) == (DeviceState.idle, None)

    # A run holds it: no slice takes it.
    with sessions() as session:
        assert acquire_lease(session, device_id, run_id, 60.0, attempt=1)
        assert not acquire_slice_lease(session, device_id, 9, 60.0)
        assert release_lease(session, device_id, run_id, attempt=1)
        session.commit()

    # A slice whose worker died: the reaper's expiry frees the phone and forgets the slice.
    with sessions() as session:
        assert acquire_slice_lease(session, device_id, 10, 1.0, now=utcnow() - timedelta(seconds=5))
        session.commit()
    with sessions() as session:
        assert expire_leases(session, utcnow()) == [device_id]
        session.commit()
    device = _device(sessions, device_id)
    assert (device.state, device.tuning_slice_id, device.lease_expires_at) == (
        DeviceState.idle,
        None,
        None,
    )


def test_a_tuning_takes_only_idle_phones_no_run_waits_for(engine: Engine) -> None:
    """Benchmarks first: a phone with a queued run (due, or waiting out a busy retry) is not
    offered to a tuning's slice, nor is a leased one or one of another class."""
    sessions, device_id, (run_id, _) = _farm(engine)
    with sessions() as session:
        device = session.get(Device, device_id)
        assert device is not None
        device.facts = DeviceFacts(id=device.address, kind="adb", model="Twin", soc="MT1").dump()
        other = Device(
            address="tcp:10.0.0.2:5555",
            facts=DeviceFacts(id="tcp:10.0.0.2:5555", kind="adb", model="Other", soc="X").dump(),
        )
        session.add(other)
        session.flush()
        model_id = session.scalar(select(Model.id))
        assert model_id is not None
        tuning = Tuning(model_id=model_id, device_class=class_of(device), target="host", report={})
        session.add(tuning)
        session.commit()
        members = class_devices(session, tuning)
        assert [d.id for d in members] == [device_id]  # the other class is not a member
        assert [d.id for d in idle_devices(session, tuning, members)] == [device_id]

        run = session.get(Run, run_id)
        assert run is not None
        run.status, run.enqueued_at = RunStatus.queued, utcnow() + timedelta(seconds=30)
        session.commit()
        assert run_waits_for(session, device_id)
        assert idle_devices(session, tuning, members) == []

        run.status = RunStatus.done
        session.commit()
        assert acquire_lease(session, device_id, run_id, 60.0, attempt=1)
        session.commit()
        assert idle_devices(session, tuning, members) == []  # leased
