"""/healthz against the real services; bearer tokens; errors without tracebacks."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from harness.config import Settings
from harness.errors import EdgefarmError
from harness.farm.tokens import create_token, revoke_token

from apidata import CLOSED_PORT_BROKER, ClientFactory

DOWN_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
WRITE = ("/api/v1/devices/1", {"health": "good"})


def test_healthz_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok", "detail": None}


def test_healthz_embedded_broker(make_client: ClientFactory) -> None:
    client = make_client(broker_url=None)  # kombu's SQLAlchemy transport under HOME
    assert client.get("/healthz").json()["broker"] == "ok"


def test_healthz_503_when_the_broker_is_down(make_client: ClientFactory) -> None:
    response = make_client(broker_url=CLOSED_PORT_BROKER).get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok" and body["broker"] == "down"
    assert "broker" in body["detail"] and "127.0.0.1:1" in body["detail"]


def test_healthz_503_and_500_when_the_database_is_down(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"database_url": DOWN_DATABASE}))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["database"] == "down" and response.json()["broker"] == "ok"
        # Any other route: a one-line 500, never a traceback.
        response = client.get("/api/v1/models")
        assert response.status_code == 500
        assert response.json()["detail"].startswith("internal error (OperationalError)")
        assert "Traceback" not in response.text and "\n" not in response.json()["detail"]


def test_writes_need_a_live_token(client: TestClient, session: Session) -> None:
    path, body = WRITE
    for headers in (
        {},
        {"Authorization": "Bearer ef_not-a-real-token-at-all-0000000000000"},
        {"Authorization": "Bearer something-else"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = client.patch(path, json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    token = create_token("soon-revoked", session=session)
    session.commit()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.patch("/api/v1/devices/2147483647", json=body, headers=auth).status_code == 404
    revoke_token("soon-revoked", session=session)
    session.commit()
    response = client.patch(path, json=body, headers=auth)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_reads_are_open_unless_closed(make_client: ClientFactory, token: str) -> None:
    assert make_client().get("/api/v1/devices").status_code == 200
    closed = make_client(api_reads_need_token=True)
    assert closed.get("/api/v1/devices").status_code == 401
    ok = closed.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert closed.get("/healthz").status_code == 200  # probes need no token


def test_settings_token(make_client: ClientFactory) -> None:
    secret = "s3cret-from-the-environment-0123456789"
    client = make_client(api_token=secret)
    response = client.patch(
        "/api/v1/devices/2147483647", json=WRITE[1], headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 404  # authorized; the device does not exist


@pytest.mark.parametrize("placeholder", ["changethis", "changeme", "secret", "short-token"])
def test_placeholder_token_refused_at_start_up(settings: Settings, placeholder: str) -> None:
    with pytest.raises(EdgefarmError, match="EDGEFARM_API_TOKEN"):
        create_app(settings.model_copy(update={"api_token": placeholder}))


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/benchmarks" in spec["paths"] and "/healthz" in spec["paths"]
    upload = spec["paths"]["/api/v1/models"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    for path in spec["paths"].values():
        for operation in path.values():
            assert "\n" not in operation.get("description", ""), operation["operationId"]
    assert client.get("/docs").status_code == 200
