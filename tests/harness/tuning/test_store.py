"""Tuning records through the farm's database (PostgreSQL and SQLite, made by the
migrations): a search's records saved under a device class, loaded into a fresh work
directory that a build applies and a second search continues from; other classes see none."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker
from test_search import conv_relu

from harness.compile.tuned import scheduled_functions
from harness.db import make_engine, make_session_factory, session_scope
from harness.db.migrate import upgrade
from harness.tuning.search import RECORDS_FILE, apply_records, search, tuning_prefix
from harness.tuning.store import RecordsKey, load_records, records_summary, save_records

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
KEY = RecordsKey("local:test-cpu", "host", "tvm 0.27.0.post1")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"edgefarm_tuning_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'farm.db'}"


@pytest.fixture(params=["postgres_url", "sqlite_url"])
def factory(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    url = request.getfixturevalue(request.param)
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    work = tmp_path_factory.mktemp("tuned")
    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    search(
        mod,
        tvm.target.Target({"kind": "llvm", "num-cores": 1}),
        work,
        trials=4,
        population=32,
        seed=3,
    )
    return work


def test_records_saved_loaded_applied_and_continued(
    factory: sessionmaker[Session], tuned: Path, tmp_path: Path
) -> None:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    with session_scope(factory) as session:
        assert save_records(tuned, KEY, device="emulator-1", session=session) == 4
    with session_scope(factory) as session:  # saving again adds nothing
        assert save_records(tuned, KEY, session=session) == 0
        summary = records_summary(KEY, session=session)
    assert (summary.records, summary.workloads) == (4, 1) and len(summary.digest) == 16

    loaded = tmp_path / "loaded"
    with session_scope(factory) as session:
        assert load_records(loaded, KEY, session=session) == summary
        other = RecordsKey("adb:Pixel 8 (Tensor G3)", "host", KEY.software)
        assert records_summary(other, session=session).records == 0

    def records(work: Path) -> list[object]:
        return sorted(
            (json.loads(line) for line in (work / RECORDS_FILE).read_text().splitlines()),
            key=json.dumps,
        )

    assert records(loaded) == records(tuned)

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    mod = from_onnx(conv_relu(), keep_params_in_input=False)
    # The loaded records schedule the conv: MetaSchedule marks the function it applied a
    # record to (which schedule won 4 trials depends on the machine's load: not asserted).
    assert scheduled_functions(tuning_prefix(mod, target)) == set()
    assert scheduled_functions(apply_records(mod, target, loaded)) == {"fused_conv2d_relu"}

    # A second tuning continues from the stored records: MetaSchedule measures new
    # candidates, the database gains them, and the digest changes.
    result = search(mod, target, loaded, trials=2, strategy="replay-trace", seed=4)
    assert result.records == 6
    with session_scope(factory) as session:
        assert save_records(loaded, KEY, session=session) == result.trials
        after = records_summary(KEY, session=session)
    assert after.records == 4 + result.trials and after.digest != summary.digest


def test_a_save_cursor_stores_only_what_was_appended_since(
    factory: sessionmaker[Session], tuned: Path, tmp_path: Path
) -> None:
    """A tuning saves after every batch; with a cursor each save reads only the records the
    search appended since the last (before, every save read them all: a long tuning's saves
    grew with the square of its records)."""
    import shutil

    from harness.tuning.store import SaveCursor

    work = tmp_path / "work"
    shutil.copytree(tuned, work)
    records_file = work / RECORDS_FILE
    lines = records_file.read_text().splitlines()
    records_file.write_text("".join(line + "\n" for line in lines[:2]))  # two batches of two
    cursor = SaveCursor()
    with session_scope(factory) as session:
        assert save_records(work, KEY, session=session, cursor=cursor) == 2
    assert cursor.records == 2 and len(cursor.workload_ids) == 1
    # The next batch is appended; the lines already saved are not read again (a broken one
    # there would be an error for a save without the cursor).
    records_file.write_text("not a record\n" + "".join(line + "\n" for line in lines[1:]))
    with session_scope(factory) as session:
        assert save_records(work, KEY, session=session, cursor=cursor) == 2
        assert records_summary(KEY, session=session).records == 4
    assert cursor.records == 4
    with session_scope(factory) as session:
        assert save_records(work, KEY, session=session, cursor=cursor) == 0  # nothing new
        with pytest.raises(json.JSONDecodeError):
            save_records(work, KEY, session=session)  # no cursor: every line read


def test_a_build_gets_one_record_per_workload_the_confirmed_fastest_first(
    factory: sessionmaker[Session], tuned: Path, tmp_path: Path
) -> None:
    """A build's work directory holds the record it applies of each workload: the fastest
    measured while none is confirmed, then the fastest confirmed, even if its search measured
    it slowest; a new confirmation replaces the earlier one; the digest follows the choice."""
    from sqlalchemy import select

    from harness.db.models import TuningRecord
    from harness.tuning.store import contenders, save_confirmation

    with session_scope(factory) as session:
        save_records(tuned, KEY, session=session)
        rows = session.scalars(select(TuningRecord).order_by(TuningRecord.run_s)).all()
        by_speed = [(r.id, r.workload_id, r.record) for r in rows]
        unconfirmed = records_summary(KEY, session=session)
    assert len(by_speed) == 4
    shash = json.loads((tuned / "database_workload.json").read_text().splitlines()[0])[0]

    def applied(name: str) -> list[str]:
        with session_scope(factory) as session:
            summary = load_records(tmp_path / name, KEY, applied=True, session=session)
        assert (summary.records, summary.workloads) == (4, 1)  # the summary counts them all
        lines = (tmp_path / name / RECORDS_FILE).read_text().splitlines()
        return [json.dumps(json.loads(line)[1], separators=(",", ":")) for line in lines]

    fastest, second, third, slowest = by_speed
    assert applied("unconfirmed") == [fastest[2]]
    workload = fastest[1]
    with session_scope(factory) as session:
        # The two fastest measured, fastest first; nothing confirmed yet.
        found = contenders(KEY, workloads=[str(shash)], top=2, session=session)
        assert [c.record_id for c in found[workload]] == [fastest[0], second[0]]
        save_confirmation(KEY, workload, {slowest[0]: 1e-5, fastest[0]: 2e-5}, session=session)
        confirmed = records_summary(KEY, session=session)
        # The confirmed records are contenders again, beside the two fastest.
        found = contenders(KEY, workloads=[str(shash)], top=2, session=session)
        assert [c.record_id for c in found[workload]] == [fastest[0], second[0], slowest[0]]
        assert {c.record_id: c.confirmed_s for c in found[workload]}[slowest[0]] == 1e-5
    assert applied("confirmed") == [slowest[2]]
    assert confirmed.digest != unconfirmed.digest
    with session_scope(factory) as session:
        save_confirmation(KEY, workload, {third[0]: 3e-5}, session=session)
        kept = dict(session.execute(select(TuningRecord.id, TuningRecord.confirmed_s)).all())
    assert kept == {fastest[0]: None, second[0]: None, third[0]: 3e-5, slowest[0]: None}
    assert applied("again") == [third[2]]
    # Another class's records are not touched by this class's confirmation.
    other = RecordsKey("adb:Pixel 8 (Tensor G3)", "host", KEY.software)
    with session_scope(factory) as session:
        save_records(tuned, other, session=session)
        save_confirmation(KEY, workload, {second[0]: 4e-5}, session=session)
        theirs = session.scalars(
            select(TuningRecord.confirmed_s).where(TuningRecord.device_class == other.device_class)
        ).all()
    assert theirs == [None] * 4
