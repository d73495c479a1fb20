"""The API against the real PostgreSQL (``test`` database) and Redis (db 3 as the broker).

The schema comes from ``alembic upgrade head`` once per session. Each test runs inside one
outer transaction that is rolled back at its end; the app's sessions and the test's own join
it with ``join_transaction_mode="create_savepoint"``, so the app's commits are savepoint
releases (SQLAlchemy's "joining a session into an external transaction" recipe).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.orm import Session, sessionmaker

from api.deps import get_session
from api.main import create_app
from harness.config import Settings
from harness.db import (
    Device,
    DeviceHealth,
    make_engine,
    make_session_factory,
    session_scope,
)
from harness.devices.base import DeviceFacts
from harness.farm.tokens import create_token

from apidata import (
    BROKER_DB,
    BROKER_URL,
    DATABASE,
    DATABASE_URL,
    PG_ADMIN,
    ClientFactory,
    add_model,
    alembic_config,
    served_api,
    uid,
)


def create_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    create_database(DATABASE)
    engine = make_engine(DATABASE_URL)
    config = alembic_config(DATABASE_URL)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables and "models" in tables:
        # Tables made by metadata.create_all (same models) without Alembic: adopt them.
        command.stamp(config, "head")
    command.upgrade(config, "head")
    yield engine
    engine.dispose()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A database of the test's own, migrated, dropped afterwards: for what must really
    commit (the CLI, the app's own session handling)."""
    name = f"edgefarm_api_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


def _factory(connection: Connection) -> sessionmaker[Session]:
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    with _factory(connection)() as session:
        yield session


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=DATABASE_URL,
        broker_url=BROKER_URL,
        max_upload_mb=1,
        api_token=None,
    )


# Apps made for earlier tests, by their settings but the test's own home. FastAPI builds each
# route's validation (pydantic adapters) per app: 0.3 s of every API test, measured here, for
# one request. The routes read the settings from app.state.settings (set to the test's own
# below); an app's structure and its lifespan's database depend on the rest.
_APPS: dict[str, FastAPI] = {}


def _app_for(settings: Settings) -> FastAPI:
    if not settings.database_url:  # the lifespan's database would be the first test's home
        return create_app(settings)
    key = settings.model_copy(update={"home": Path("/")}).model_dump_json()
    app = _APPS.get(key)
    if app is None:
        app = _APPS[key] = create_app(settings)
    app.state.settings = settings
    return app


@pytest.fixture
def make_client(connection: Connection, settings: Settings) -> Iterator[ClientFactory]:
    """A TestClient for an app with ``settings`` (changed by keyword), whose requests use
    the test's connection."""
    clients: list[TestClient] = []

    def override() -> Iterator[Session]:
        with session_scope(_factory(connection)) as session:
            yield session

    def make(*, raise_server_exceptions: bool = True, **changes: Any) -> TestClient:
        app = _app_for(settings.model_copy(update=changes))
        app.dependency_overrides[get_session] = override
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory, broker: redis.Redis) -> TestClient:
    return make_client()


@pytest.fixture
def token(session: Session) -> str:
    value = create_token(f"tester-{uuid.uuid4().hex[:8]}", session=session)
    session.commit()
    return value


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def farm(session: Session) -> dict[str, Any]:
    """Four devices of their own (unique pool, SoCs and model names, so that rows other
    tests committed never match): two MediaTek phones, a Pixel, a retired one."""
    tag = uid()
    specs = [
        ("mtk-a", f"pool-{tag}", f"MT{tag}", f"Phone {tag} Ultra", DeviceHealth.good),
        ("mtk-b", f"pool-{tag}", f"MT{tag}", f"Phone {tag} Lite", DeviceHealth.good),
        ("pixel", f"lab-{tag}", f"SD{tag}", f"Pixel {tag}", DeviceHealth.good),
        ("old", f"pool-{tag}", f"MT{tag}", f"Phone {tag} Old", DeviceHealth.retired),
    ]
    devices: dict[str, Device] = {}
    for key, pool, soc, model_name, health in specs:
        device = Device(
            address=f"tcp:{key}-{tag}:5555",
            pool=pool,
            soc=soc,
            model_name=model_name,
            health=health,
            facts=DeviceFacts(
                id=f"tcp:{key}-{tag}:5555", kind="adb", model=model_name, soc=soc
            ).dump(),
        )
        session.add(device)
        devices[key] = device
    session.commit()
    return {"tag": tag, "devices": devices}


@pytest.fixture
def farm_api(tmp_path: Path, fresh_database: str, broker: redis.Redis) -> Iterator[dict[str, Any]]:
    """The API served by uvicorn on a free port, a token named ci-bot, two uploaded models and
    two good devices in a pool."""
    engine = make_engine(fresh_database)
    factory = make_session_factory(engine)
    with factory() as session:
        token = create_token("ci-bot", session=session)
        models = [add_model(session, f"mlp-{uid()}").name, add_model(session, f"cnn-{uid()}").name]
        pool = f"pool-{uid()}"
        session.add_all(
            Device(address=f"tcp:{pool}-{i}:5555", pool=pool, model_name=f"Phone {i}")
            for i in range(2)
        )
        session.commit()
    env = {
        **os.environ,
        "EDGEFARM_HOME": str(tmp_path / "home"),
        "EDGEFARM_DATABASE_URL": fresh_database,
        "EDGEFARM_BROKER_URL": BROKER_URL,
    }
    env.pop("EDGEFARM_API_TOKEN", None)
    try:
        with served_api(env) as (url, _):
            yield {
                "url": url,
                "token": token,
                "models": models,
                "pool": pool,
                "factory": factory,
                "home": tmp_path / "cli-home",
            }
    finally:
        engine.dispose()
