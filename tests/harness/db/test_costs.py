"""The cost store's functions on databases made by the migrations (PostgreSQL and SQLite):
insert or replace, read by key, list, forget, and no commit of their own; edgefarm bench's
local store migrated, and the costs of an earlier version's costs.sqlite taken over once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.orm import Session, sessionmaker

from harness.db import OpCost, make_engine, make_session_factory, session_scope, utcnow
from harness.db.costs import (
    CostKey,
    Measured,
    forget_costs,
    list_costs,
    local_store,
    store_costs,
    stored_costs,
)
from harness.db.migrate import current_and_head, upgrade

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
KEY = CostKey("adb:Pixel 8 (Tensor G3)", "cpu/o3", "tvm 0.27 byoc 1")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"edgefarm_costs_{uuid.uuid4().hex[:8]}"
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


def test_stored_times_are_replaced_read_by_key_listed_and_forgotten(
    factory: sessionmaker[Session],
) -> None:
    other = CostKey(KEY.device_class, "neuron/fast_single_answer", KEY.software)
    elsewhere = CostKey("local:x86", KEY.variant, KEY.software)
    with session_scope(factory) as session:
        store_costs(
            KEY,
            {"a": Measured(1.0, 10, "conv"), "b": Measured(2.0, 10)},
            device="p1",
            session=session,
        )
        store_costs(other, {"a": Measured(0.5, 10)}, device="p1", session=session)
        store_costs(elsewhere, {"a": Measured(3.0, 10)}, device="local", session=session)
    # A second writer of the same keys replaces the times (no unique-constraint failure).
    with session_scope(factory) as session:
        store_costs(KEY, {"a": Measured(1.5, 20, "conv+relu")}, device="p2", session=session)
    with session_scope(factory) as session:
        found = stored_costs(KEY, ["a", "b", "c"], session=session)
        assert found == {"a": Measured(1.5, 20, "conv+relu"), "b": Measured(2.0, 10)}
        assert stored_costs(other, ["a", "b"], session=session) == {"a": Measured(0.5, 10)}
        rows = list_costs(KEY.device_class, session=session)
        assert [(r.variant, r.signature, r.device) for r in rows] == [
            ("cpu/o3", "a", "p2"),
            ("cpu/o3", "b", "p1"),
            ("neuron/fast_single_answer", "a", "p1"),
        ]
        assert len(list_costs(session=session)) == 4
    with session_scope(factory) as session:
        assert forget_costs(KEY.device_class, session=session) == 3
    with session_scope(factory) as session:
        assert [r.device_class for r in list_costs(session=session)] == ["local:x86"]


def test_the_functions_never_commit(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        store_costs(KEY, {"a": Measured(1.0, 10)}, device="p1", session=session)
        assert stored_costs(KEY, ["a"], session=session)
        session.rollback()
    with factory() as session:
        assert stored_costs(KEY, ["a"], session=session) == {}
        store_costs(KEY, {"a": Measured(1.0, 10)}, device="p1", session=session)
        session.commit()
    with factory() as session:
        assert forget_costs(session=session) == 1
        session.rollback()
    with factory() as session:
        assert len(list_costs(session=session)) == 1


def test_the_local_store_is_migrated_and_takes_over_an_earlier_costs_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFARM_HOME", str(tmp_path))
    # An earlier version's store: the op_costs table alone, made outside Alembic.
    legacy = create_engine(f"sqlite:///{tmp_path / 'costs.sqlite'}")
    OpCost.__table__.create(legacy)  # type: ignore[attr-defined]
    old = {"device_class": KEY.device_class, "variant": KEY.variant, "software": KEY.software}
    with legacy.begin() as conn:
        conn.execute(
            insert(OpCost.__table__),  # type: ignore[arg-type]
            [
                {
                    **old,
                    "signature": s,
                    "median_ms": ms,
                    "samples": 15,
                    "description": "",
                    "device": "old",
                    "measured_at": utcnow(),
                }
                for s, ms in (("a", 1.0), ("b", 2.0))
            ],
        )
    legacy.dispose()

    factory = local_store()
    url = f"sqlite:///{tmp_path / 'edgefarm.db'}"
    current, heads = current_and_head(url)
    assert current == heads  # the embedded farm's database, migrated
    assert not (tmp_path / "costs.sqlite").exists()
    assert (tmp_path / "costs.sqlite.imported").is_file()
    with session_scope(factory) as session:
        assert stored_costs(KEY, ["a", "b"], session=session) == {
            "a": Measured(1.0, 15),
            "b": Measured(2.0, 15),
        }
