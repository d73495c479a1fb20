"""Shared contract tests for every route (Conbench's "enforcer" idea): an unknown id is 404,
an extra field is 422 naming it, a write without a token is 401. ``ROUTES`` must list every
route the app has: a new route fails here until it is added, and then gets the checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from harness.config import Settings

UNKNOWN_ID = 2**31 - 1
MULTIPART = "multipart"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "{id}" where the route takes a row id
    body: dict[str, Any] | str | None = None  # a valid body, or MULTIPART

    @property
    def writes(self) -> bool:
        return self.method in {"POST", "PUT", "PATCH", "DELETE"}

    @property
    def has_id(self) -> bool:
        return "{id}" in self.path

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/healthz"),
    Route("GET", "/api/v1/models"),
    Route("POST", "/api/v1/models", MULTIPART),
    Route("GET", "/api/v1/models/{id}"),
    Route("GET", "/api/v1/models/{id}/file"),
    Route(
        "POST",
        "/api/v1/benchmarks",
        {"model_id": UNKNOWN_ID, "devices": {"all": True}, "backends": ["tvm-cpu"]},
    ),
    Route("GET", "/api/v1/jobs"),
    Route("GET", "/api/v1/jobs/{id}"),
    Route("GET", "/api/v1/results"),
    Route("GET", "/api/v1/results/{id}"),
    Route("GET", "/api/v1/devices"),
    Route("GET", "/api/v1/devices/{id}"),
    Route("PATCH", "/api/v1/devices/{id}", {"health": "good"}),
]


def call(
    client: TestClient,
    route: Route,
    *,
    headers: dict[str, str] | None = None,
    extra: bool = False,
) -> httpx.Response:
    url = route.path.replace("{id}", str(UNKNOWN_ID))
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if route.body == MULTIPART:
        kwargs["files"] = {"file": ("m.onnx", b"\x08\x07")}
        if extra:
            kwargs["data"] = {"unexpected": "1"}
    elif route.body is not None:
        body = dict(route.body)
        if extra:
            body["unexpected"] = 1
        kwargs["json"] = body
    return client.request(route.method, url, **kwargs)


def test_routes_lists_every_route(settings: Settings) -> None:
    # The OpenAPI document lists every JSON route (FastAPI includes routers lazily).
    paths = create_app(settings).openapi()["paths"]
    served = {
        f"{method.upper()} {re.sub(r'{[^}]+}', '{id}', path)}"
        for path, operations in paths.items()
        for method in operations
    }
    assert served == {str(r) for r in ROUTES}


@pytest.mark.parametrize("route", [r for r in ROUTES if r.has_id], ids=str)
def test_unknown_id_is_404(client: TestClient, auth: dict[str, str], route: Route) -> None:
    response = call(client, route, headers=auth)
    assert response.status_code == 404, response.text
    assert str(UNKNOWN_ID) in response.json()["detail"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.body is not None], ids=str)
def test_extra_field_is_422(client: TestClient, auth: dict[str, str], route: Route) -> None:
    response = call(client, route, headers=auth, extra=True)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "unexpected"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.writes], ids=str)
def test_write_without_token_is_401(client: TestClient, route: Route) -> None:
    response = call(client, route)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", [r for r in ROUTES if r.path.startswith("/api/")], ids=str)
def test_closed_reads_need_a_token_too(make_client: Any, route: Route) -> None:
    response = call(make_client(api_reads_need_token=True), route)
    assert response.status_code == 401, response.text
