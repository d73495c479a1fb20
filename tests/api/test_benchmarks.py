"""POST /api/v1/benchmarks: a job and its runs committed, then a message on the real broker."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.db import Job, JobStatus, Run, RunStatus

import testmodels
from apidata import CLOSED_PORT_BROKER, ClientFactory, post_json, upload_model

URL = "/api/v1/benchmarks"


@pytest.fixture
def model(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    return upload_model(client, auth, testmodels.mobilenet_like(seed=21), "mnet.onnx")


@pytest.fixture
def dynamic_model(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    return upload_model(client, auth, testmodels.dynamic_batch(seed=22), "dyn.onnx")


def submit(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    return post_json(client, auth, URL, body)


def test_submit_creates_job_runs_and_a_message(
    client: TestClient,
    auth: dict[str, str],
    model: dict[str, Any],
    farm: dict[str, Any],
    broker: redis.Redis,
    session: Session,
) -> None:
    tag = farm["tag"]
    status, job = submit(
        client,
        auth,
        {
            "model_id": model["id"],
            "devices": {"pool": f"pool-{tag}"},
            "backends": ["tvm-cpu", "ort"],
            "settings": {
                "inputs": ["input:1x3x32x32"],
                "warmup": 2,
                "options": {"tvm-cpu": {"opt_level": 2}},
            },
        },
    )
    assert status == 201, job
    assert job["enqueued"] is True
    assert job["status"] == "queued" and job["model_id"] == model["id"]
    assert job["submitted_by"].startswith("tester-")
    devices = farm["devices"]
    pairs = {(r["device_id"], r["backend"]) for r in job["runs"]}
    assert pairs == {
        (devices[k].id, b) for k in ("mtk-a", "mtk-b") for b in ("tvm-cpu", "ort")
    }  # not the retired phone, not the other pool
    assert all(r["status"] == "queued" and r["attempts"] == 0 for r in job["runs"])
    settings = job["settings"]
    assert settings["inputs"] == ["input:1x3x32x32"] and settings["warmup"] == 2
    assert settings["min_iterations"] == 20  # the farm's default
    assert settings["options"] == {
        "tvm-cpu": {"opt_level": 2},
        "ort": {"threads": 0, "graph_optimization": "all"},
    }

    # Committed (in the test's transaction) before the message went out.
    row = session.scalar(select(Job).where(Job.id == job["id"]))
    assert row is not None and row.status == JobStatus.queued
    assert broker.llen("compile") == 1
    message = broker.lpop("compile")
    assert message is not None and b"edgefarm.start_job" in message

    got = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert [r["id"] for r in got["runs"]] == [r["id"] for r in job["runs"]]
    assert all(r["result"] is None and r["error"] is None for r in got["runs"])


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"pool": "pool-{tag}"}, {"mtk-a", "mtk-b"}),
        ({"soc": "mt{tag}"}, {"mtk-a", "mtk-b"}),  # case-insensitive
        ({"model": "pixel {tag}"}, {"pixel"}),  # case-insensitive substring
        ({"model": "{tag} ultra"}, {"mtk-a"}),
        ({"soc": "MT{tag}", "model": "lite"}, {"mtk-b"}),  # criteria combine
        ({"ids": ["pixel", "mtk-b"]}, {"pixel", "mtk-b"}),
        ({"all": True}, {"mtk-a", "mtk-b", "pixel"}),
    ],
)
def test_selectors(
    client: TestClient,
    auth: dict[str, str],
    model: dict[str, Any],
    farm: dict[str, Any],
    selector: dict[str, Any],
    expected: set[str],
) -> None:
    devices = farm["devices"]
    given: dict[str, Any] = {}
    for key, value in selector.items():
        if key == "ids":
            given[key] = [devices[name].id for name in value]
        elif isinstance(value, str):
            given[key] = value.format(tag=farm["tag"])
        else:
            given[key] = value
    status, job = submit(
        client,
        auth,
        {
            "model_sha256": model["sha256"],
            "devices": given,
            "backends": ["tvm-cpu"],
            "settings": {"inputs": []},
        },
    )
    assert status == 201, job
    chosen = {r["device_id"] for r in job["runs"]}
    mine = {devices[name].id for name in expected}
    if selector.get("all"):
        assert mine <= chosen and devices["old"].id not in chosen  # other tests' devices too
    else:
        assert chosen == mine


def test_no_device_matches_is_409_listing_devices(
    client: TestClient, auth: dict[str, str], model: dict[str, Any], farm: dict[str, Any]
) -> None:
    body = {"model_id": model["id"], "backends": ["tvm-cpu"]}
    for selector in (
        {"pool": f"nowhere-{farm['tag']}"},
        {"model": f"Phone {farm['tag']} Old"},  # exists but retired
        {"ids": [farm["devices"]["old"].id]},
        {"ids": [farm["devices"]["pixel"].id, 2**31 - 1]},  # one is unknown
    ):
        status, answer = submit(client, auth, {**body, "devices": selector})
        assert status == 409, answer
        listed = {d["id"]: d for d in answer["devices"]}
        old = farm["devices"]["old"]
        assert listed[old.id] == {
            "id": old.id,
            "address": old.address,
            "pool": old.pool,
            "soc": old.soc,
            "model": old.model_name,
            "health": "retired",
        }


@pytest.mark.parametrize(
    ("change", "loc", "words"),
    [
        ({"backends": ["tvm-cpu", "tvm-gpu"]}, ["body", "backends", 1], "known backends"),
        ({"backends": []}, ["body", "backends"], ""),
        ({"settings": {"inputs": ["input:1x3xbig"]}}, ["body", "settings", "inputs", 0], "spec"),
        ({"settings": {"inputs": ["nope:1x3x32x32"]}}, ["body", "settings", "inputs"], "nope"),
        ({"settings": {"inputs": ["input:1x3x16x16"]}}, ["body", "settings", "inputs"], "fixed"),
        ({"settings": {"options": {"tvm-cpu": {"speed": 9}}}}, None, "no option"),
        ({"settings": {"options": {"ort": {}}}}, None, "does not use"),
        ({"settings": {"warmup": -1}}, ["body", "settings", "warmup"], ""),
        ({"settings": {"min_seconds": 5, "max_seconds": 1}}, None, "below"),
        ({"settings": {"turbo": True}}, ["body", "settings", "turbo"], ""),
        ({"devices": {}}, ["body", "devices"], "which devices"),
        ({"devices": {"all": True, "pool": "x"}}, ["body", "devices"], "alone"),
        ({"model_sha256": "0" * 64}, ["body"], "one of them"),
        ({"colour": "red"}, ["body", "colour"], "Extra inputs"),
    ],
)
def test_invalid_submissions_are_422_naming_the_field(
    client: TestClient,
    auth: dict[str, str],
    model: dict[str, Any],
    farm: dict[str, Any],
    change: dict[str, Any],
    loc: list[Any] | None,
    words: str,
) -> None:
    body = {
        "model_id": model["id"],
        "devices": {"pool": f"pool-{farm['tag']}"},
        "backends": ["tvm-cpu"],
        **change,
    }
    status, answer = submit(client, auth, body)
    assert status == 422, answer
    detail = answer["detail"]
    assert isinstance(detail, list) and detail
    if loc is not None:
        assert detail[0]["loc"] == loc, detail
    assert words in " ".join(d["msg"] for d in detail)


def test_ort_refuses_tflite_models(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any]
) -> None:
    import tflite_builder

    data = tflite_builder.mlp_tflite(seed=8)
    created = client.post("/api/v1/models", files={"file": ("t.tflite", data)}, headers=auth)
    status, answer = submit(
        client,
        auth,
        {
            "model_id": created.json()["id"],
            "devices": {"pool": f"pool-{farm['tag']}"},
            "backends": ["ort"],
        },
    )
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "backends", 0]
    assert "tflite" in answer["detail"][0]["msg"]


def test_dynamic_model_needs_its_input_spec(
    client: TestClient, auth: dict[str, str], dynamic_model: dict[str, Any], farm: dict[str, Any]
) -> None:
    body = {
        "model_id": dynamic_model["id"],
        "devices": {"pool": f"pool-{farm['tag']}"},
        "backends": ["tvm-cpu"],
    }
    status, answer = submit(client, auth, body)
    assert status == 422
    assert "batch" in answer["detail"][0]["msg"] and "settings.inputs" in answer["detail"][0]["msg"]
    status, job = submit(client, auth, {**body, "settings": {"inputs": ["images:2x3x8x8"]}})
    assert status == 201, job
    assert job["settings"]["inputs"] == ["images:2x3x8x8"]


def test_unknown_model_is_404(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any]
) -> None:
    devices = {"pool": f"pool-{farm['tag']}"}
    status, answer = submit(
        client, auth, {"model_id": 2**31 - 1, "devices": devices, "backends": ["tvm-cpu"]}
    )
    assert status == 404 and answer["detail"] == f"no model with id {2**31 - 1}"
    status, answer = submit(
        client, auth, {"model_sha256": "ab" * 32, "devices": devices, "backends": ["tvm-cpu"]}
    )
    assert status == 404 and "ab" * 32 in answer["detail"]


def test_broker_down_still_201_with_runs_queued(
    make_client: ClientFactory,
    auth: dict[str, str],
    model: dict[str, Any],
    farm: dict[str, Any],
    session: Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(broker_url=CLOSED_PORT_BROKER)
    with caplog.at_level(logging.WARNING, logger="api.queue"):
        status, job = submit(
            client,
            auth,
            {
                "model_id": model["id"],
                "devices": {"pool": f"lab-{farm['tag']}"},
                "backends": ["ort"],
            },
        )
    assert status == 201, job
    assert job["enqueued"] is False
    assert f"job {job['id']} is committed but not enqueued" in caplog.text
    runs = list(session.scalars(select(Run).where(Run.job_id == job["id"])))
    assert len(runs) == 1 and runs[0].status == RunStatus.queued and runs[0].enqueued_at is None
