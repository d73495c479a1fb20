"""``edgefarm token create/list/revoke`` as a user runs them, on a database of their own
(created here, schema by ``alembic upgrade head``), then the token used against the API."""

from __future__ import annotations

import os
import subprocess
import sys

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from harness.config import Settings
from harness.db import make_engine, make_session_factory
from harness.farm.tokens import verify_token


def edgefarm(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "token", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EDGEFARM_DATABASE_URL": url, "COLUMNS": "200"},
    )


def test_token_create_list_revoke(fresh_database: str, settings: Settings) -> None:
    created = edgefarm(fresh_database, "create", "ci-bot")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("ef_") and len(token) == 43
    assert "not shown again" in created.stderr

    again = edgefarm(fresh_database, "create", "ci-bot")
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr

    listed = edgefarm(fresh_database, "list")
    assert listed.returncode == 0 and "ci-bot" in listed.stdout
    assert token not in listed.stdout

    engine = make_engine(fresh_database)
    try:
        with make_session_factory(engine)() as session:
            row = verify_token(token, session=session)
            assert row is not None and row.name == "ci-bot"
            assert token not in row.token_sha256  # only the hash is stored
        app = create_app(settings.model_copy(update={"database_url": fresh_database}))
        with TestClient(app) as client:
            response = client.patch(
                "/api/v1/devices/1",
                json={"health": "good"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 404  # authorized, and the farm has no devices

            revoked = edgefarm(fresh_database, "revoke", "ci-bot")
            assert revoked.returncode == 0, revoked.stderr
            response = client.patch(
                "/api/v1/devices/1",
                json={"health": "good"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 401
        with Session(engine) as session:
            assert verify_token(token, session=session) is None
    finally:
        engine.dispose()

    twice = edgefarm(fresh_database, "revoke", "ci-bot")
    assert twice.returncode == 1 and "no live token" in twice.stderr
