"""POST /api/v1/tunings: one tuning per device class, committed, then a message on the real
broker's ``tuning`` queue; reading, listing and cancelling tunings; every bad request named."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.db import Tuning, TuningStatus
from harness.tuning import DEFAULT_POPULATION

import testmodels
from apidata import CLOSED_PORT_BROKER, ClientFactory, post_json, upload_model

URL = "/api/v1/tunings"


@pytest.fixture
def model(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    return upload_model(client, auth, testmodels.mobilenet_like(seed=23), "mnet.onnx")


def submit(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    return post_json(client, auth, URL, body)


def test_a_submission_makes_one_tuning_per_device_class_and_sends_each(
    client: TestClient,
    auth: dict[str, str],
    model: dict[str, Any],
    farm: dict[str, Any],
    broker: redis.Redis,
    session: Session,
) -> None:
    tag = farm["tag"]
    status, body = submit(
        client,
        auth,
        {
            "model_id": model["id"],
            "devices": {"pool": f"pool-{tag}"},
            "batch": 8,
            "threads": 2,
            "population": 32,
        },
    )
    assert status == 201, body
    assert body["enqueued"] is True
    tunings = body["data"]
    # Two good phones of the pool, of two models: two classes (the retired one is not taken).
    classes = sorted(t["device_class"] for t in tunings)
    assert len(classes) == 2
    assert f"Phone {tag} Lite" in classes[0] and f"Phone {tag} Ultra" in classes[1]
    for tuning in tunings:
        assert tuning["status"] == "queued" and tuning["model_id"] == model["id"]
        assert tuning["trials"] == 32 and tuning["minutes"] is None  # the default budget
        assert tuning["batch"] == 8 and tuning["backend"] == "tvm-cpu"
        assert tuning["target"] == "host" and tuning["attempts"] == 0
        assert tuning["threads"] == 2 and tuning["population"] == 32
        row = session.scalar(select(Tuning).where(Tuning.id == tuning["id"]))
        assert row is not None and row.status == TuningStatus.queued and row.pool == f"pool-{tag}"
        assert row.threads == 2 and row.population == 32
    assert broker.llen("tuning") == 2
    messages = [broker.lpop("tuning") for _ in range(2)]
    assert all(m is not None and b"edgefarm.tune" in m for m in messages)

    got = client.get(f"{URL}/{tunings[0]['id']}").json()
    assert got["id"] == tunings[0]["id"] and got["report"] == {}
    listed = client.get(URL, params={"model_id": model["id"], "status": "queued"}).json()
    assert sorted(t["id"] for t in listed["data"]) == sorted(t["id"] for t in tunings)
    assert listed["count"] == 2
    # Without a population, the search's default (the one every tuning before the field had).
    ids = [farm["devices"]["pixel"].id]
    status, body = submit(client, auth, {"model_id": model["id"], "devices": {"ids": ids}})
    assert status == 201, body
    assert [t["population"] for t in body["data"]] == [DEFAULT_POPULATION]


def test_cancel_stops_a_tuning_and_needs_a_token(
    client: TestClient, auth: dict[str, str], model: dict[str, Any], farm: dict[str, Any]
) -> None:
    ids = [farm["devices"]["pixel"].id]
    status, body = submit(
        client, auth, {"model_id": model["id"], "devices": {"ids": ids}, "minutes": 5}
    )
    assert status == 201, body
    (tuning,) = body["data"]
    assert tuning["minutes"] == 5 and tuning["trials"] is None
    assert client.post(f"{URL}/{tuning['id']}/cancel").status_code == 401
    cancelled = client.post(f"{URL}/{tuning['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]
    again = client.post(f"{URL}/{tuning['id']}/cancel", headers=auth).json()
    assert again["status"] == "cancelled"
    assert client.get(f"{URL}/999999").status_code == 404


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"trials": 8, "minutes": 2}, 422, "trials or minutes, not both"),
        ({"trials": 0}, 422, "greater than or equal to 1"),
        ({"minutes": 100000}, 422, "less than or equal to 1440"),
        ({"batch": 0}, 422, "greater than or equal to 1"),
        ({"threads": -1}, 422, "threads"),
        ({"threads": 257}, 422, "less than or equal to 256"),
        ({"population": 0}, 422, "greater than or equal to 1"),
        ({"population": 4097}, 422, "less than or equal to 4096"),
        ({"backend": "ort"}, 422, "backend 'ort' cannot be tuned"),
        ({"backend": "tflite"}, 422, "cannot be tuned; tunable: tvm-cpu, tvm-nnapi, tvm-neuron"),
        ({"inputs": ["nosuch:1x3x32x32"]}, 422, "nosuch"),
        ({"inputs": ["input:1xAx32"]}, 422, "input"),
        ({"devices": {"pool": "no-such-pool"}}, 409, "no good device"),
        ({"model_id": 99999999}, 404, "no model"),
        ({"surprise": 1}, 422, "surprise"),
    ],
)
def test_bad_submissions_are_named(
    client: TestClient,
    auth: dict[str, str],
    model: dict[str, Any],
    farm: dict[str, Any],
    broker: redis.Redis,
    change: dict[str, Any],
    code: int,
    words: str,
) -> None:
    body: dict[str, Any] = {"model_id": model["id"], "devices": {"pool": f"pool-{farm['tag']}"}}
    body.update(change)
    status, answer = submit(client, auth, body)
    assert status == code, answer
    assert words.lower() in str(answer).lower(), answer
    assert broker.llen("tuning") == 0  # nothing sent for a refused submission


def test_with_the_broker_down_the_tunings_stay_queued_for_the_reaper(
    make_client: ClientFactory,
    auth: dict[str, str],
    model: dict[str, Any],
    farm: dict[str, Any],
    session: Session,
) -> None:
    client = make_client(broker_url=CLOSED_PORT_BROKER)
    ids = [farm["devices"]["pixel"].id]
    status, body = submit(client, auth, {"model_id": model["id"], "devices": {"ids": ids}})
    assert status == 201, body
    assert body["enqueued"] is False
    row = session.scalar(select(Tuning).where(Tuning.id == body["data"][0]["id"]))
    assert row is not None and row.status == TuningStatus.queued and row.enqueued_at is not None
