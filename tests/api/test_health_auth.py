"""/healthz against the real services; bearer tokens; errors without tracebacks."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from harness.config import Settings
from harness.db import Job, Model, Run, WorkerKind, WorkerStatus, utcnow
from harness.errors import EdgefarmError
from harness.farm.liveness import heartbeat, mark
from harness.farm.tokens import create_token, revoke_token

from apidata import CLOSED_PORT_BROKER, ClientFactory, uid

DOWN_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
WRITE = ("/api/v1/devices/1", {"health": "good"})


def test_healthz_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["broker"]) == ("ok", "ok", "ok")
    assert body["detail"] is None and body["problems"] == [] and body["starved_queues"] == []


def test_healthz_embedded_broker(make_client: ClientFactory) -> None:
    client = make_client(broker_url=None)  # kombu's SQLAlchemy transport under HOME
    assert client.get("/healthz").json()["broker"] == "ok"


def test_healthz_503_when_the_broker_is_down(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = make_client(broker_url=CLOSED_PORT_BROKER)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok" and body["broker"] == "down"
    # Anonymous callers learn what is down, not the service's own error text.
    assert body["detail"] == "broker down" and "127.0.0.1:1" not in response.text
    detailed = client.get("/healthz", headers=auth).json()
    assert "broker" in detailed["detail"] and "127.0.0.1:1" in detailed["detail"]


def test_healthz_503_and_500_when_the_database_is_down(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"database_url": DOWN_DATABASE}))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["database"] == "down" and response.json()["broker"] == "ok"
        assert response.json()["detail"] == "database down"
        assert "127.0.0.1" not in response.text and "postgres" not in response.text
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


def test_healthz_reports_workers_beat_and_starved_queues(
    client: TestClient, session: Session, farm: dict[str, Any]
) -> None:
    """Runs wait on a phone's queue: 503 naming the queue until a live worker consumes it
    and beat ticks; then 200, with the worker and the beat's last tick reported."""
    phone = farm["devices"]["mtk-a"]
    model = Model(sha256=uid().ljust(64, "0")[:64], name="m", format="onnx", size_bytes=1)
    session.add(model)
    session.flush()
    job = Job(submitted_by="tests", model_id=model.id, settings={})
    job.runs.append(Run(device_id=phone.id, backend="tvm-cpu", enqueued_at=utcnow()))
    session.add(job)
    session.commit()

    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    starved = [q for q in body["starved_queues"] if q["device_id"] == phone.id]
    assert starved == [
        {
            "queue": f"device.{phone.id}",
            "waiting_runs": 1,
            "device_id": phone.id,
            "device_address": phone.address,
        }
    ]
    assert any(f"device.{phone.id}" in p for p in body["problems"])
    assert any("beat" in p and "never" in p for p in body["problems"])

    heartbeat(session, name="worker-x@test", kind=WorkerKind.worker, queues=[phone.queue], pid=1)
    heartbeat(session, name="beat@test", kind=WorkerKind.beat, pid=2)
    session.commit()
    body = client.get("/healthz").json()
    assert f"device.{phone.id}" in body["live_queues"]
    assert not [q for q in body["starved_queues"] if q["device_id"] == phone.id]
    assert body["beat"]["alive"] and body["beat"]["age_s"] < 5
    assert {"worker-x@test", "beat@test"} <= {w["name"] for w in body["workers"]}
    device = client.get(f"/api/v1/devices/{phone.id}").json()
    assert device["liveness"]["alive"] and device["liveness"]["worker"] == "worker-x@test"

    # The worker's supervisor gave up on it: reported down, with the reason, and the phone
    # is no longer offered to new jobs.
    mark(session, "worker-x@test", WorkerStatus.down, "killed by SIGKILL; given up")
    session.commit()
    device = client.get(f"/api/v1/devices/{phone.id}").json()
    assert not device["liveness"]["alive"] and not device["liveness"]["offered"]
    assert "given up" in device["liveness"]["reason"]
    response = client.get("/healthz")
    assert response.status_code == 503
    (worker,) = [w for w in response.json()["workers"] if w["name"] == "worker-x@test"]
    assert worker["status"] == "down" and not worker["alive"]
