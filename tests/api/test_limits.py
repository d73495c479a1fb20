"""Requests that could take down a phone or the farm are refused at submission with a 422
naming the field: oversized input specs, unbounded or non-finite measurement settings,
offsets beyond any table, epoch-second ``since``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from harness.measure.protocol import MIN_ITERATIONS_MAX, SECONDS_MAX, WARMUP_MAX

import testmodels
from apidata import ClientFactory, add_model

URL = "/api/v1/benchmarks"
LISTS = ["/api/v1/models", "/api/v1/jobs", "/api/v1/results", "/api/v1/devices"]


def upload(client: TestClient, auth: dict[str, str], data: bytes, name: str) -> dict[str, Any]:
    response = client.post("/api/v1/models", files={"file": (name, data)}, headers=auth)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def dynamic_model(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    # images: batch x 3 x 8 x 8 float32 (768 bytes per batch entry)
    return upload(client, auth, testmodels.dynamic_batch(seed=41).SerializeToString(), "dyn.onnx")


def body_for(model: dict[str, Any], farm: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {
        "model_id": model["id"],
        "devices": {"pool": f"pool-{farm['tag']}"},
        "backends": ["tvm-cpu"],
        "settings": settings,
    }


def refused(response: Any, loc: list[Any], *words: str) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc, detail
    for word in words:
        assert word in detail[0]["msg"], detail


def test_huge_input_spec_is_422_naming_the_input_and_its_size(
    client: TestClient, auth: dict[str, str], dynamic_model: dict[str, Any], farm: dict[str, Any]
) -> None:
    # The request from the issue: 10^12 x 3 x 8 x 8 floats, 7.28 TiB... here rank 4.
    body = body_for(dynamic_model, farm, inputs=["images:1000000x3x8x8"])
    response = client.post(URL, json=body, headers=auth)
    refused(
        response,
        ["body", "settings", "inputs", 0],
        "'images'",
        "1000000x3x8x8",
        "192000000 elements",
        "732.422 MiB",
    )
    # Within the bound it is accepted.
    response = client.post(
        URL, json=body_for(dynamic_model, farm, inputs=["images:64x3x8x8"]), headers=auth
    )
    assert response.status_code == 201, response.text


def test_input_bounds_follow_the_settings(
    make_client: ClientFactory,
    broker: Any,
    auth: dict[str, str],
    dynamic_model: dict[str, Any],
    farm: dict[str, Any],
) -> None:
    # 1 MiB per input: 1366 x 768 bytes is just over, 1365 just under.
    client = make_client(max_input_mb=1)
    over = client.post(
        URL, json=body_for(dynamic_model, farm, inputs=["images:1366x3x8x8"]), headers=auth
    )
    refused(over, ["body", "settings", "inputs", 0], "EDGEFARM_MAX_INPUT_MB", "1 MiB")
    under = client.post(
        URL, json=body_for(dynamic_model, farm, inputs=["images:1365x3x8x8"]), headers=auth
    )
    assert under.status_code == 201, under.text
    client = make_client(max_input_elements=1000)
    over = client.post(
        URL, json=body_for(dynamic_model, farm, inputs=["images:6x3x8x8"]), headers=auth
    )
    refused(over, ["body", "settings", "inputs", 0], "1152 elements", "EDGEFARM_MAX_INPUT_ELEMENTS")


def test_all_inputs_together_are_bounded(
    make_client: ClientFactory,
    broker: Any,
    auth: dict[str, str],
    farm: dict[str, Any],
    session: Session,
) -> None:
    # Submission reads the model's stored inputs: two dynamic float32 inputs [n, 64].
    model = add_model(session)
    model.input_spec = [
        {"name": name, "shape": ["n", 64], "dtype": "float32"} for name in ("a", "b")
    ]
    session.commit()
    client = make_client(max_inputs_mb=1)
    given = {"id": model.id}
    # 2048 x 64 x 4 bytes = 512 KiB each: exactly 1 MiB together is allowed; one row more is not.
    ok = client.post(
        URL, json=body_for(given, farm, inputs=["a:2048x64", "b:2048x64"]), headers=auth
    )
    assert ok.status_code == 201, ok.text
    over = client.post(
        URL, json=body_for(given, farm, inputs=["a:2048x64", "b:2049x64"]), headers=auth
    )
    refused(over, ["body", "settings", "inputs"], "together", "EDGEFARM_MAX_INPUTS_MB")


def test_dimension_too_long_for_an_integer_is_422(
    client: TestClient, auth: dict[str, str], dynamic_model: dict[str, Any], farm: dict[str, Any]
) -> None:
    spec = "images:" + "9" * 900 + "x3x8x8"
    response = client.post(URL, json=body_for(dynamic_model, farm, inputs=[spec]), headers=auth)
    refused(response, ["body", "settings", "inputs", 0], "dimension over")
    response = client.post(
        URL, json=body_for(dynamic_model, farm, inputs=["images:" + "9" * 900]), headers=auth
    )
    refused(response, ["body", "settings", "inputs", 0], "dimension over")


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"warmup": 1e12}, "warmup"),
        ({"warmup": 2**70}, "warmup"),
        ({"warmup": WARMUP_MAX + 1}, "warmup"),
        ({"min_iterations": MIN_ITERATIONS_MAX + 1}, "min_iterations"),
        ({"min_seconds": 1e9, "max_seconds": 1e9}, "min_seconds"),
        ({"max_seconds": SECONDS_MAX * 2}, "max_seconds"),
        ({"min_seconds": 10, "max_seconds": 5}, "max_seconds"),
        ({"min_seconds": 120}, "max_seconds"),  # above the farm's default max_seconds (60)
        ({"seed": 2**64}, "seed"),
    ],
)
def test_measurement_settings_are_bounded(
    client: TestClient,
    auth: dict[str, str],
    dynamic_model: dict[str, Any],
    farm: dict[str, Any],
    given: dict[str, Any],
    field: str,
) -> None:
    body = body_for(dynamic_model, farm, inputs=["images:1x3x8x8"], **given)
    response = client.post(URL, json=body, headers=auth)
    refused(response, ["body", "settings", field])


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["min_seconds", "max_seconds", "warmup"])
def test_non_finite_numbers_are_422_not_500(
    make_client: ClientFactory,
    broker: Any,
    auth: dict[str, str],
    dynamic_model: dict[str, Any],
    farm: dict[str, Any],
    number: str,
    field: str,
) -> None:
    client = make_client(raise_server_exceptions=False)
    text = json.dumps(body_for(dynamic_model, farm, inputs=["images:1x3x8x8"]))
    text = text.replace('"settings": {', f'"settings": {{"{field}": {number}, ', 1)
    response = client.post(URL, content=text, headers={**auth, "Content-Type": "application/json"})
    refused(response, ["body", "settings", field])
    # The rejected value is echoed as text: JSON has no NaN.
    assert response.json()["detail"][0]["input"] == str(float(number))


@pytest.mark.parametrize("path", LISTS)
def test_offset_beyond_any_table_is_422(make_client: ClientFactory, broker: Any, path: str) -> None:
    client = make_client(raise_server_exceptions=False)
    for offset in (2**63, 2**63 - 1, 2**31):
        response = client.get(path, params={"offset": offset})
        refused(response, ["query", "offset"])
    response = client.get(path, params={"offset": 2**31 - 1})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == []


@pytest.mark.parametrize("since", ["-1.5", "1700000000", "0", "1e9"])
def test_since_is_a_date_not_epoch_seconds(client: TestClient, since: str) -> None:
    response = client.get("/api/v1/results", params={"since": since})
    refused(response, ["query", "since"], "ISO 8601")


def test_since_far_zones_are_422_or_answered(client: TestClient) -> None:
    response = client.get("/api/v1/results", params={"since": "0001-01-01T00:00:00+23:59"})
    refused(response, ["query", "since"], "out of range")
    response = client.get("/api/v1/results", params={"since": "9999-12-31T23:59:59-23:59"})
    refused(response, ["query", "since"], "out of range")
    response = client.get("/api/v1/results", params={"since": "2026-01-31"})
    assert response.status_code == 200, response.text
