"""What schemathesis found (tests/api/test_fuzz.py), each probed again by a plain request."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from test_contract import ROUTES, assert_documented

import testmodels
from apidata import add_model


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/models", "name"),
        ("/api/v1/results", "model"),
        ("/api/v1/results", "backend"),
        ("/api/v1/devices", "pool"),
    ],
)
def test_nul_in_a_filter_is_422_not_500(client: TestClient, path: str, param: str) -> None:
    # PostgreSQL text cannot hold NUL: the query used to fail with DataError (500).
    response = client.get(path, params={param: "a\x00b"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", param]


def test_nul_in_a_device_update_is_422(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any]
) -> None:
    device = farm["devices"]["pixel"]
    for body, field in (({"pool": "\x00"}, "pool"), ({"health_reason": "x\x00"}, "health_reason")):
        response = client.patch(f"/api/v1/devices/{device.id}", json=body, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", field]


def test_nul_in_benchmark_settings_is_422_naming_where(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any], session: Session
) -> None:
    model = add_model(session)
    session.commit()
    body = {
        "model_id": model.id,
        "devices": {"pool": f"pool-{farm['tag']}"},
        "backends": ["tvm-cpu"],
        "settings": {"options": {"tvm-cpu": {"opt_level": "\x00"}}},
    }
    response = client.post("/api/v1/benchmarks", json=body, headers=auth)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "settings", "options", "tvm-cpu", "opt_level"]
    assert "NUL" in detail["msg"]
    response = client.post(
        "/api/v1/benchmarks", json={**body, "backends": ["tvm-cpu\x00"]}, headers=auth
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][:2] == [
        "body",
        "backends",
    ]


def test_nul_in_an_upload_name_is_dropped(client: TestClient, auth: dict[str, str]) -> None:
    data = testmodels.mlp(seed=77).SerializeToString()
    response = client.post(
        "/api/v1/models", files={"file": ("my\x00model.onnx", data)}, headers=auth
    )
    assert response.status_code in (200, 201), response.text
    assert "\x00" not in response.json()["name"]


@pytest.mark.parametrize(
    "route",
    [r for r in ROUTES if r.method in ("POST", "PATCH") and isinstance(r.body, dict)],
    ids=str,
)
def test_a_body_that_is_not_json_is_a_documented_400(
    client: TestClient, auth: dict[str, str], route: Any
) -> None:
    url = route.path.replace("{id}", "1")
    response = client.request(
        route.method,
        url,
        content=b"\xff\x10\xfe",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert_documented(client, route, response)
