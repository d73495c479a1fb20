"""A tuning's confirmation (harness.tuning.confirm), for real: a model tuned on this machine's
kernel runner, its workload's best records built again and timed side by side; builds then
apply the fastest confirmed record. A record that no longer builds is dropped from the
running however fast its search measured it; nothing new, nothing timed; a stopped
confirmation saves nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from test_search import conv_relu

from harness.db import make_engine, make_session_factory, session_scope
from harness.db.migrate import upgrade
from harness.db.models import TuningRecord
from harness.devices import open_device
from harness.devices.base import Device

import testmodels


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def local() -> Iterator[Device]:
    device = open_device("local")
    yield device
    device.close()


def _confirmed(factory: sessionmaker[Session]) -> dict[int, float | None]:
    with session_scope(factory) as session:
        return dict(session.execute(select(TuningRecord.id, TuningRecord.confirmed_s)).all())


def _run_s(factory: sessionmaker[Session]) -> dict[int, float]:
    with session_scope(factory) as session:
        return dict(session.execute(select(TuningRecord.id, TuningRecord.run_s)).all())


@pytest.mark.timeout(600)
def test_a_tuning_confirms_its_best_records_and_builds_apply_the_fastest_confirmed(
    tmp_path: Path, factory: sessionmaker[Session], local: Device
) -> None:
    from harness.tuning.session import records_key_for, tune_model
    from harness.tuning.use import tuning_use

    model = testmodels.save(conv_relu(), tmp_path, "conv")
    report = tune_model(
        model, local, factory, trials=8, batch=4, population=32, seed=1, confirm=3, confirm_rounds=2
    )
    confirmation = report.confirmation
    assert confirmation is not None and not confirmation.stopped
    assert (confirmation.workloads, confirmation.records, confirmation.rounds) == (1, 3, 2)
    assert confirmation.failed == 0 and confirmation.changed in (0, 1)
    # The three fastest measured were timed again, and only they have a confirmed time.
    run_s, confirmed = _run_s(factory), _confirmed(factory)
    three = sorted(run_s, key=lambda rid: run_s[rid])[:3]
    assert {rid for rid, s in confirmed.items() if s is not None} == set(three)
    assert all(0 < confirmed[rid] < 0.1 for rid in three)  # type: ignore[operator]
    assert 0 < confirmation.applied_us <= confirmation.fastest_measured_us
    fastest = min(three, key=lambda rid: (run_s[rid], rid))
    assert confirmation.recorded_us == round(run_s[fastest] * 1e6, 3)
    assert report.dump()["confirmation"]["records"] == 3

    # A build applies the fastest confirmed record, alone.
    key = records_key_for(local.facts())
    use = tuning_use(
        key,
        "auto",
        workloads=lambda: [json.loads(line)[0] for line in _workload_lines(factory)],
        sessions=lambda: session_scope(factory),
        cache_dir=tmp_path / "cache",
    )
    assert use is not None and use.provenance["trials"] == 8
    lines = (use.work_dir / "database_tuning_record.json").read_text().splitlines()
    applied = min(three, key=lambda rid: (confirmed[rid], rid))
    assert [json.loads(line)[1] for line in lines] == [json.loads(_record(factory, applied))]

    # Nothing new since: a second tuning to the same budget times nothing again.
    again = tune_model(model, local, factory, trials=8, batch=4, population=32, seed=2, confirm=3)
    assert again.confirmation is not None
    assert (again.confirmation.workloads, again.confirmation.skipped) == (0, 1)
    assert _confirmed(factory) == confirmed


@pytest.mark.timeout(600)
def test_a_record_that_no_longer_builds_is_not_applied_and_a_stopped_one_saves_nothing(
    tmp_path: Path, factory: sessionmaker[Session], local: Device
) -> None:
    from harness.compile.targets import get_target
    from harness.tuning.confirm import confirm_records
    from harness.tuning.device import DeviceKernelTimer
    from harness.tuning.session import (
        device_cores,
        export_for,
        records_key_for,
        tune_model,
        tuning_target,
    )
    from harness.tuning.store import applied_record

    model = testmodels.save(conv_relu(), tmp_path, "conv")
    tune_model(model, local, factory, trials=4, batch=4, population=32, seed=3, confirm=0)
    assert set(_confirmed(factory).values()) == {None}  # --confirm 0: none
    run_s = _run_s(factory)
    slowest = max(run_s, key=lambda rid: run_s[rid])
    # The slowest record becomes the fastest measured, and its trace names a block that does
    # not exist: unconfirmed, a build would apply it.
    record = json.loads(_record(factory, slowest))
    record[0][0][0][2][0] = "no_such_block"  # the first instruction, GetBlock's name
    with session_scope(factory) as session:
        session.execute(
            update(TuningRecord)
            .where(TuningRecord.id == slowest)
            .values(record=json.dumps(record), run_s=1e-9)
        )
    with session_scope(factory) as session:
        assert applied_record(list(session.scalars(select(TuningRecord)))).id == slowest  # type: ignore[union-attr]

    facts = local.facts()
    key, spec = records_key_for(facts), get_target(facts.target)
    timer = DeviceKernelTimer(local, facts.target)
    common = {
        "factory": factory,
        "timer": timer,
        "target": tuning_target(spec, device_cores(local)),
        "export": export_for(spec),
        "top": 4,
        "rounds": 2,
    }
    hashes = [json.loads(line)[0] for line in _workload_lines(factory)]
    # Stopped before its first runner call: nothing timed, nothing saved.
    stopped = confirm_records(key, hashes, stop=lambda: True, **common)  # type: ignore[arg-type]
    assert stopped.stopped and stopped.workloads == 0 and timer.batches == 0
    assert set(_confirmed(factory).values()) == {None}

    report = confirm_records(key, hashes, **common)  # type: ignore[arg-type]
    assert not report.stopped and (report.workloads, report.records, report.failed) == (1, 3, 1)
    assert report.changed == 1  # the record measured fastest is not applied
    confirmed = _confirmed(factory)
    assert confirmed[slowest] is None and sum(s is not None for s in confirmed.values()) == 3
    with session_scope(factory) as session:
        chosen = applied_record(list(session.scalars(select(TuningRecord))))
    assert chosen is not None and chosen.id != slowest and chosen.confirmed_s is not None

    # A build applies the confirmed choice; tuning=unconfirmed the record measured fastest
    # (to measure what the confirmation buys), under another digest.
    from harness.tuning.use import tuning_use

    digests = set()
    for mode, expected in (("auto", chosen.id), ("unconfirmed", slowest)):
        use = tuning_use(
            key,
            mode,  # type: ignore[arg-type]
            workloads=lambda: hashes,
            sessions=lambda: session_scope(factory),
            cache_dir=tmp_path / "cache",
        )
        assert use is not None
        lines = (use.work_dir / "database_tuning_record.json").read_text().splitlines()
        assert [json.loads(line)[1] for line in lines] == [json.loads(_record(factory, expected))]
        digests.add(use.digest)
    assert len(digests) == 2


def _workload_lines(factory: sessionmaker[Session]) -> list[str]:
    from harness.db.models import TuningWorkload

    with session_scope(factory) as session:
        return list(session.scalars(select(TuningWorkload.workload)))


def _record(factory: sessionmaker[Session], record_id: int) -> str:
    with session_scope(factory) as session:
        text = session.scalar(select(TuningRecord.record).where(TuningRecord.id == record_id))
    assert text is not None
    return text
