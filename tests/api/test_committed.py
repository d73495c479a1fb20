"""The app's own session handling, without the test override: a submission is really
committed (seen from another connection) before its message is on the broker."""

from __future__ import annotations

import json

import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from harness.config import Settings
from harness.db import Device, Job, Run, RunStatus, make_engine, make_session_factory
from harness.farm.tokens import create_token

import testmodels


def test_submission_is_committed_then_enqueued(
    fresh_database: str, settings: Settings, broker: redis.Redis
) -> None:
    engine = make_engine(fresh_database)
    factory = make_session_factory(engine)
    try:
        with factory.begin() as session:
            token = create_token("e2e", session=session)
            session.add(Device(address="tcp:e2e:5555", pool="e2e", soc="MT6985"))
        auth = {"Authorization": f"Bearer {token}"}
        app = create_app(settings.model_copy(update={"database_url": fresh_database}))
        with TestClient(app) as client:
            data = testmodels.mlp(seed=31).SerializeToString()
            model = client.post("/api/v1/models", files={"file": ("mlp.onnx", data)}, headers=auth)
            assert model.status_code == 201, model.text
            answer = client.post(
                "/api/v1/benchmarks",
                json={
                    "model_id": model.json()["id"],
                    "devices": {"pool": "e2e"},
                    "backends": ["tvm-cpu", "ort"],
                },
                headers=auth,
            )
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            # A failed request leaves nothing behind (its transaction rolled back).
            refused = client.post(
                "/api/v1/benchmarks",
                json={
                    "model_id": model.json()["id"],
                    "devices": {"pool": "e2e"},
                    "backends": ["tvm-cpu", "tvm-nope"],
                },
                headers=auth,
            )
            assert refused.status_code == 422
        with factory() as session:
            jobs = list(session.scalars(select(Job)))
            assert [j.id for j in jobs] == [job_id] and jobs[0].submitted_by == "e2e"
            runs = list(session.scalars(select(Run).where(Run.job_id == job_id)))
            assert sorted(r.backend for r in runs) == ["ort", "tvm-cpu"]
            assert all(r.status == RunStatus.queued for r in runs)
        (message,) = broker.lrange("compile", 0, -1)
        envelope = json.loads(message)
        assert envelope["headers"]["task"] == "edgefarm.start_job"
        assert envelope["headers"]["argsrepr"] == f"[{job_id}]"
    finally:
        engine.dispose()
