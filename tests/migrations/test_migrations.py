"""Alembic migrations on empty PostgreSQL and SQLite databases, and drift against the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from harness.db import make_engine, metadata

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"edgefarm_mig_{uuid.uuid4().hex[:8]}"
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


def _drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


@pytest.mark.parametrize("db", ["postgres_url", "sqlite_url"])
def test_upgrade_head_matches_the_models(db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(db)
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
        assert "alembic_version" in tables
        assert _drift(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("db", ["postgres_url", "sqlite_url"])
def test_downgrade_and_upgrade_again(db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(db)
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(config, "head")


def test_drift_is_detected(sqlite_url: str) -> None:
    """The drift check can fail: a schema missing a column is reported."""
    command.upgrade(alembic_config(sqlite_url), "head")
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE results DROP COLUMN cosine")
        diffs = _drift(engine)
        assert any("cosine" in repr(d) for d in diffs)
    finally:
        engine.dispose()


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
