"""GET /api/v1/jobs and /api/v1/results: filters, pagination, result documents."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from harness.db import Result
from harness.farm import queries

from apidata import add_model, add_result, hours_ago


@pytest.fixture
def history(session: Session, farm: dict[str, Any]) -> dict[str, Any]:
    """Two models; results on two devices and two backends over five hours."""
    devices = farm["devices"]
    a = add_model(session, name=f"net-{farm['tag']}")
    b = add_model(session)
    rows = {
        "a1": add_result(session, model=a, device=devices["mtk-a"], created_at=hours_ago(5)),
        "a2": add_result(session, model=a, device=devices["mtk-a"], created_at=hours_ago(4)),
        "a3": add_result(
            session, model=a, device=devices["mtk-a"], backend="ort", created_at=hours_ago(3)
        ),
        "a4": add_result(
            session, model=a, device=devices["pixel"], status="failed", created_at=hours_ago(2)
        ),
        "a5": add_result(session, model=a, device=devices["pixel"], created_at=hours_ago(1)),
        "b1": add_result(session, model=b, device=devices["mtk-a"], created_at=hours_ago(1.5)),
    }
    return {"a": a, "b": b, "rows": rows, "devices": devices}


def ids(body: dict[str, Any]) -> list[int]:
    return [r["id"] for r in body["data"]]


def test_results_filters(client: TestClient, history: dict[str, Any]) -> None:
    rows: dict[str, Result] = history["rows"]
    a = history["a"]

    def get(**params: Any) -> list[int]:
        response = client.get("/api/v1/results", params=params)
        assert response.status_code == 200, response.text
        return ids(response.json())

    newest_first = [rows[k].id for k in ("a5", "a4", "a3", "a2", "a1")]
    assert get(model=a.id) == newest_first
    assert get(model=a.sha256) == newest_first
    assert get(model=a.name) == newest_first
    assert get(model=a.sha256.upper()) == newest_first
    assert get(model=f"no-such-model-{a.id}") == []
    assert get(model=a.id, device=history["devices"]["pixel"].id) == [rows["a5"].id, rows["a4"].id]
    assert get(model=a.id, backend="ort") == [rows["a3"].id]
    assert get(model=a.id, status="failed") == [rows["a4"].id]
    since = hours_ago(3.5).isoformat()
    assert get(model=a.id, since=since) == [rows[k].id for k in ("a5", "a4", "a3")]
    # A time without zone is UTC.
    naive = hours_ago(2.5).replace(tzinfo=None).isoformat()
    assert get(model=a.id, since=naive) == [rows["a5"].id, rows["a4"].id]
    assert get(job=rows["b1"].job_id) == [rows["b1"].id]

    one = client.get(f"/api/v1/results/{rows['a3'].id}").json()
    assert one["backend"] == "ort" and one["model_id"] == a.id
    assert one["document"]["latency_ms"]["median"] == 1.0 and one["document"]["samples_ms"] == [1.0]
    assert {"id", "run_id", "job_id", "device_id", "status", "created_at"} <= set(one)


def test_results_pagination(client: TestClient, history: dict[str, Any]) -> None:
    a = history["a"]
    seen: list[int] = []
    url: str | None = f"/api/v1/results?model={a.id}&limit=2"
    pages = 0
    while url is not None:
        body = client.get(url).json()
        assert body["count"] == 5
        seen += ids(body)
        url = body["next"]
        pages += 1
    assert pages == 3
    assert seen == [history["rows"][k].id for k in ("a5", "a4", "a3", "a2", "a1")]
    last = client.get("/api/v1/results", params={"model": a.id, "limit": 2, "offset": 4}).json()
    assert last["next"] is None and len(last["data"]) == 1
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"status": "meh"}):
        response = client.get("/api/v1/results", params=bad)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][0] == "query"


def test_history_query_uses_the_index(session: Session, history: dict[str, Any]) -> None:
    filters = queries.ResultFilter(
        model=str(history["a"].id),
        device=history["devices"]["mtk-a"].id,
        backend="tvm-cpu",
        since=hours_ago(24),
    )
    query = queries.results_query(filters, session=session)
    assert query is not None
    sql = query.limit(100).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    # A tiny table, where any plan is cheap: rule out a sequential scan and a full sort, so
    # only an index that yields the rows in created_at order (ix_results_points, with its
    # equality prefix) remains the cheap plan, as it is with 100,000 rows (bench/farm.py).
    session.execute(text("SET LOCAL enable_seqscan = off"))
    session.execute(text("SET LOCAL enable_sort = off"))
    plan = "\n".join(row[0] for row in session.execute(text(f"EXPLAIN {sql}")))
    assert "ix_results_points" in plan, plan


def test_job_shows_runs_with_results_and_errors(
    client: TestClient, history: dict[str, Any], session: Session
) -> None:
    failed = history["rows"]["a4"]
    failed.run.error_stage = "run"
    failed.run.error_message = "device tcp:pixel went away"
    failed.run.attempts = 3
    session.commit()
    job = client.get(f"/api/v1/jobs/{failed.job_id}").json()
    assert job["status"] == "done"
    (run,) = job["runs"]
    assert run["status"] == "failed" and run["attempts"] == 3
    assert run["error"] == {"stage": "run", "message": "device tcp:pixel went away"}
    assert run["result"]["id"] == failed.id
    assert run["result"]["document"]["status"] == "failed"


def test_jobs_listing(client: TestClient, history: dict[str, Any]) -> None:
    a = history["a"]
    body = client.get("/api/v1/jobs", params={"model_id": a.id, "limit": 3}).json()
    assert body["count"] == 5 and len(body["data"]) == 3 and body["next"] is not None
    newest = body["data"][0]
    assert newest["id"] == history["rows"]["a5"].job_id
    assert newest["runs"] == {"done": 1}
    done = client.get("/api/v1/jobs", params={"model_id": a.id, "status": "done"}).json()
    assert done["count"] == 5
    assert client.get("/api/v1/jobs", params={"status": "exploded"}).status_code == 422
