"""GET/PATCH /api/v1/devices."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from harness.db import Device, DeviceHealth, DeviceState, Job, Run, RunStatus
from harness.devices.base import DeviceFacts

from apidata import add_model


def test_list_and_get(client: TestClient, farm: dict[str, Any], session: Session) -> None:
    devices: dict[str, Device] = farm["devices"]
    busy = devices["mtk-a"]
    model = add_model(session)
    job = Job(submitted_by="tests", model_id=model.id)
    session.add(job)
    session.flush()
    run = Run(job_id=job.id, device_id=busy.id, backend="tvm-cpu", status=RunStatus.running)
    session.add(run)
    session.flush()
    busy.state = DeviceState.running
    busy.current_run_id = run.id
    busy.worker = "host-1"
    session.commit()

    body = client.get("/api/v1/devices", params={"pool": busy.pool}).json()
    assert body["count"] == 3 and body["next"] is None
    assert [d["id"] for d in body["data"]] == sorted(
        devices[k].id for k in ("mtk-a", "mtk-b", "old")
    )
    one = client.get(f"/api/v1/devices/{busy.id}").json()
    assert one["state"] == "running" and one["health"] == "good" and one["worker"] == "host-1"
    assert one["current_run"] == {
        "id": run.id,
        "job_id": job.id,
        "backend": "tvm-cpu",
        "status": "running",
    }
    assert (
        one["facts"]
        == DeviceFacts(id=busy.address, kind="adb", model=busy.model_name, soc=busy.soc).dump()
    )
    retired = client.get("/api/v1/devices", params={"pool": busy.pool, "health": "retired"}).json()
    assert [d["id"] for d in retired["data"]] == [devices["old"].id]


def test_patch_pool_and_health(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any], session: Session
) -> None:
    model = add_model(session)
    session.commit()
    device = farm["devices"]["pixel"]
    url = f"/api/v1/devices/{device.id}"
    response = client.patch(
        url, json={"health": "maintenance", "health_reason": "battery swap"}, headers=auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["health"] == "maintenance"
    assert response.json()["health_reason"] == "battery swap"
    assert client.get(url).json()["health"] == "maintenance"

    # A device in maintenance is not picked.
    answer = client.post(
        "/api/v1/benchmarks",
        json={"model_id": model.id, "devices": {"ids": [device.id]}, "backends": ["tvm-cpu"]},
        headers=auth,
    )
    assert answer.status_code == 409
    assert answer.json()["devices"][0]["health"] in {"good", "maintenance", "retired", "bad"}

    back = client.patch(url, json={"health": "good", "pool": "bench"}, headers=auth).json()
    assert back["health"] == "good" and back["health_reason"] is None and back["pool"] == "bench"
    session.refresh(device)
    assert device.health == DeviceHealth.good and device.pool == "bench"

    for bad in ({"health": "sparkly"}, {"pool": ""}, {"state": "idle"}):
        response = client.patch(url, json=bad, headers=auth)
        assert response.status_code == 422, bad
