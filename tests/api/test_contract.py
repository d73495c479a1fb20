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
    Route("POST", "/api/v1/tunings", {"model_id": UNKNOWN_ID, "devices": {"all": True}}),
    Route("GET", "/api/v1/tunings"),
    Route("GET", "/api/v1/tunings/{id}"),
    Route("POST", "/api/v1/tunings/{id}/cancel"),
    Route("GET", "/api/v1/jobs"),
    Route("GET", "/api/v1/jobs/{id}"),
    Route("GET", "/api/v1/results"),
    Route("GET", "/api/v1/results/{id}"),
    Route("GET", "/api/v1/devices"),
    Route("GET", "/api/v1/devices/{id}"),
    Route("PATCH", "/api/v1/devices/{id}", {"health": "good"}),
    Route("GET", "/api/v1/suites"),
    Route(
        "POST",
        "/api/v1/suites",
        {"name": "contract", "spec": {"models": ["m"], "backends": ["tvm-cpu"]}},
    ),
    Route("GET", "/api/v1/suites/{id}"),  # a suite's name, or its id
    Route("PATCH", "/api/v1/suites/{id}", {"description": "nightly"}),
    Route("DELETE", "/api/v1/suites/{id}"),
    Route("POST", "/api/v1/suites/{id}/pause"),
    Route("POST", "/api/v1/suites/{id}/resume"),
    Route("POST", "/api/v1/suites/{id}/runs"),
    Route("GET", "/api/v1/suites/{id}/nights"),
    Route("POST", "/api/v1/suites/{id}/webhooks", {"url": "http://127.0.0.1:9/hook"}),
    Route("GET", "/api/v1/suites/{id}/webhooks"),
    Route("GET", "/api/v1/nights/{id}"),
    Route("GET", "/api/v1/alerts"),
    Route("GET", "/api/v1/alerts/{id}"),
    Route("PATCH", "/api/v1/alerts/{id}", {"state": "acknowledged"}),
    Route("DELETE", "/api/v1/webhooks/{id}"),
    Route("GET", "/api/v1/webhooks/{id}/deliveries"),
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


def operation(spec: dict[str, Any], route: Route) -> dict[str, Any]:
    """The OpenAPI operation of ``route``."""
    for path, operations in spec["paths"].items():
        if re.sub(r"{[^}]+}", "{id}", path) == route.path:
            found: dict[str, Any] = operations[route.method.lower()]
            return found
    raise AssertionError(f"{route} is not in the OpenAPI document")


def assert_documented(client: TestClient, route: Route, response: httpx.Response) -> None:
    """The answer's status is among the route's documented responses, with a JSON schema."""
    documented = operation(client.get("/openapi.json").json(), route)["responses"]
    code = str(response.status_code)
    assert code in documented, f"{route} answered {code}, documented {sorted(documented)}"
    if response.status_code >= 400:
        schema = documented[code]["content"]["application/json"]["schema"]
        assert schema.get("$ref", "").startswith("#/components/schemas/"), (route, schema)


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
    assert_documented(client, route, response)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.body is not None], ids=str)
def test_extra_field_is_422(client: TestClient, auth: dict[str, str], route: Route) -> None:
    response = call(client, route, headers=auth, extra=True)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "unexpected"]
    assert_documented(client, route, response)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.writes], ids=str)
def test_write_without_token_is_401(client: TestClient, route: Route) -> None:
    response = call(client, route)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert_documented(client, route, response)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.path.startswith("/api/")], ids=str)
def test_closed_reads_need_a_token_too(make_client: Any, route: Route) -> None:
    client = make_client(api_reads_need_token=True)
    response = call(client, route)
    assert response.status_code == 401, response.text
    assert_documented(client, route, response)


@pytest.mark.parametrize("closed", [False, True], ids=["open-reads", "closed-reads"])
def test_openapi_security_is_what_the_routes_do(
    make_client: Any, broker: Any, closed: bool
) -> None:
    """A route is marked as needing the bearer token exactly when it answers 401 without
    one: writes, model bytes and webhooks (their URLs may be credentials) always, other reads
    only when EDGEFARM_API_READS_NEED_TOKEN."""
    client = make_client(api_reads_need_token=closed)
    spec = client.get("/openapi.json").json()
    needing = set()
    # /healthz takes an optional token (more detail for holders); health documents its own.
    for route in [r for r in ROUTES if r.path.startswith("/api/")]:
        answered = call(client, route).status_code
        marked = operation(spec, route).get("security")
        assert bool(marked) == (answered == 401), (str(route), answered, marked)
        if marked:
            assert marked == [{"HTTPBearer": []}]
            needing.add(str(route))
    # /healthz answers everyone; a token is optional (more detail for its holder).
    assert operation(spec, Route("GET", "/healthz")).get("security") == [{}, {"HTTPBearer": []}]
    secret = {
        "GET /api/v1/models/{id}/file",
        "GET /api/v1/suites/{id}/webhooks",
        "GET /api/v1/webhooks/{id}/deliveries",
    }
    opened = secret | {str(r) for r in ROUTES if r.writes}
    every = {str(r) for r in ROUTES if r.path.startswith("/api/")}
    assert needing == (every if closed else opened)
