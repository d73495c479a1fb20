"""Property-based tests of the API with schemathesis, over its own OpenAPI document, against
a real app on its own PostgreSQL database: every operation alone (valid and invalid input),
and sequences of them (the state machine follows links from responses to operations). No
answer may be a 5xx, and every answer must be one the document lists, in its schema.

Bounded: a few dozen examples per operation and a short stateful run, well under two
minutes on two cores. ``/healthz`` is in: its 503 (a farm with runs and no workers) is one
of its documented answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

from api.main import create_app
from harness.config import Settings
from harness.db import Device, DeviceHealth, Model, make_engine

import testmodels
import tflite_builder
from apidata import BROKER_URL, PG_ADMIN, add_result, alembic_config

TOKEN = "fuzz-token-0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 40
BACKENDS = ["tvm-cpu", "ort", "tvm-nnapi", "tvm-neuron"]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app on a database of its own (real commits), seeded with models, devices and a
    result so that small ids name real rows."""
    name = f"edgefarm_fuzz_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(url)
    try:
        command.upgrade(alembic_config(url), "head")
        home: Path = tmp_path_factory.mktemp("fuzz") / "home"
        app = create_app(
            Settings(
                home=home,
                database_url=url,
                broker_url=BROKER_URL,
                api_token=TOKEN,
                max_upload_mb=1,
            )
        )
        with TestClient(app) as client:  # runs the lifespan: the engine lives until the end
            for filename, data in (
                ("mlp.onnx", testmodels.mlp(seed=1).SerializeToString()),
                ("dyn.onnx", testmodels.dynamic_batch(seed=2).SerializeToString()),
                ("tiny.tflite", tflite_builder.mlp_tflite(seed=3)),
            ):
                response = client.post(
                    "/api/v1/models", files={"file": (filename, data)}, headers=AUTH
                )
                assert response.status_code == 201, response.text
            with Session(engine) as session:
                devices = [
                    Device(address=f"tcp:fuzz-{i}:5555", pool="fuzz", soc="MT6985", health=health)
                    for i, health in enumerate(
                        (DeviceHealth.good, DeviceHealth.good, DeviceHealth.bad)
                    )
                ]
                session.add_all(devices)
                session.commit()
                model = session.get_one(Model, 1)
                add_result(session, model=model, device=devices[0])
            yield app
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api_schema(fuzz_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


# The operations, read from the document itself (making the app connects to nothing).
OPERATIONS = [
    (method.upper(), path)
    for path, operations in create_app(Settings(api_token=None)).openapi()["paths"].items()
    for method in operations
]


# Every operation with valid input, and with invalid input where it takes any (/healthz takes
# nothing that could be made invalid).
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (path == "/healthz" and mode == GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p}-{g.value}" for m, p, g in CASES]
)
def test_every_operation(
    api_schema: Any, broker: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @FUZZ
    def run(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    run()


def test_benchmark_settings_on_real_models(fuzz_app: FastAPI, api_schema: Any, broker: Any) -> None:
    """Submissions that reach the settings' validation: a seeded model, the seeded pool and
    real backends, with the rest (settings: inputs, protocol, options) as generated."""
    operation = api_schema["/api/v1/benchmarks"]["POST"]
    # Phones of its own: the PATCH fuzzing may have moved or retired the seeded ones.
    pool = f"bench-{uuid.uuid4().hex[:8]}"
    with Session(fuzz_app.state.engine) as session:
        session.add_all(Device(address=f"tcp:{pool}-{i}:5555", pool=pool) for i in range(2))
        session.commit()

    @given(
        case=operation.as_strategy(),
        model_id=st.sampled_from([1, 2, 3]),  # mlp.onnx, dyn.onnx, tiny.tflite
        backends=st.lists(st.sampled_from(BACKENDS), min_size=1, max_size=2, unique=True),
    )
    @FUZZ
    def run(case: Any, model_id: int, backends: list[str]) -> None:
        generated = case.body if isinstance(case.body, dict) else {}
        case.body = {
            "model_id": model_id,
            "devices": {"pool": pool},
            "backends": backends,
            "settings": generated.get("settings", {}),
        }
        response = case.call_and_validate(headers=AUTH, checks=CHECKS)
        assert response.status_code in (201, 422), response.text

    run()


def test_sequences_of_operations(api_schema: Any, broker: Any) -> None:
    base = api_schema.as_state_machine()

    class Farm(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": AUTH}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=AUTH)

    Farm.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
