"""Every datetime the API returns carries its zone (UTC), on PostgreSQL and on the embedded
SQLite database, which keeps no zone itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from api.main import create_app
from harness.config import Settings
from harness.db import Device, make_engine

import testmodels
from apidata import add_model, add_result, alembic_config

TOKEN = "tz-test-token-0123456789abcdef"


def datetimes(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every ``*_at`` string in a JSON document, with where it is."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_at") and isinstance(item, str):
                yield f"{path}.{key}", item
            else:
                yield from datetimes(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from datetimes(item, f"{path}[{i}]")


def assert_zoned(document: Any) -> int:
    found = list(datetimes(document))
    for where, text in found:
        moment = datetime.fromisoformat(text)
        assert moment.utcoffset() == timedelta(0), f"{where} = {text!r} has no UTC zone"
    return len(found)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_sqlite_reads_back_aware_utc(sqlite_engine: Engine) -> None:
    two_hours_east = timezone(timedelta(hours=2))
    with Session(sqlite_engine) as session:
        device = Device(
            address="tcp:tz:5555",
            last_seen_at=datetime(2026, 1, 1, 12, 0, tzinfo=two_hours_east),
            lease_expires_at=datetime(2026, 1, 1, 12, 0),  # naive: taken as UTC
        )
        session.add(device)
        session.commit()
        device_id = device.id
    with Session(sqlite_engine) as session:
        device = session.get_one(Device, device_id)
        assert device.last_seen_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
        assert device.last_seen_at.tzinfo is UTC
        assert device.lease_expires_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert device.created_at.tzinfo is UTC
        # Comparisons are between instants: stored in UTC, an offset filter finds the row.
        found = session.scalars(
            select(Device.id).where(
                Device.last_seen_at >= datetime(2026, 1, 1, 11, 59, tzinfo=two_hours_east)
            )
        ).all()
        assert found == [device_id]


def test_api_on_sqlite_returns_zoned_datetimes(tmp_path: Path, sqlite_engine: Engine) -> None:
    settings = Settings(
        home=tmp_path / "home",
        database_url=str(sqlite_engine.url),
        broker_url="redis://127.0.0.1:1/0",
        api_token=TOKEN,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with Session(sqlite_engine) as session:
        device = Device(address="tcp:tz:5555", last_seen_at=datetime.now(UTC))
        session.add(device)
        session.commit()
        model = add_model(session)
        result = add_result(session, model=model, device=device)
        job_id, result_id = result.job_id, result.id
    with TestClient(create_app(settings)) as client:
        uploaded = client.post(
            "/api/v1/models",
            files={"file": ("mlp.onnx", testmodels.mlp(seed=5).SerializeToString())},
            headers=auth,
        )
        assert uploaded.status_code == 201, uploaded.text
        counted = 0
        for url in (
            "/api/v1/models",
            f"/api/v1/models/{uploaded.json()['id']}",
            "/api/v1/devices",
            "/api/v1/jobs",
            f"/api/v1/jobs/{job_id}",
            "/api/v1/results",
            f"/api/v1/results/{result_id}",
        ):
            response = client.get(url)
            assert response.status_code == 200, (url, response.text)
            counted += assert_zoned(response.json())
        assert counted >= 10  # the check saw the fields it is about


def test_api_on_postgres_returns_zoned_datetimes(
    client: TestClient, session: Session, farm: dict[str, Any]
) -> None:
    model = add_model(session)
    result = add_result(session, model=model, device=farm["devices"]["pixel"])
    for url in (f"/api/v1/jobs/{result.job_id}", f"/api/v1/results/{result.id}"):
        response = client.get(url)
        assert response.status_code == 200
        assert assert_zoned(response.json()) >= 1
