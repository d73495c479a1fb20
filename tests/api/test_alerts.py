"""/api/v1/alerts: alerts (inserted here as the nightly analysis writes them) listed newest
first with filters, shown with their history, and triaged with who, when and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from harness.db import (
    Alert,
    AlertKind,
    AlertState,
    Night,
    NightStatus,
    NightTrigger,
    Series,
    Suite,
)

from apidata import uid

URL = "/api/v1/alerts"
T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)


@pytest.fixture
def alerts(session: Session, farm: dict[str, Any]) -> dict[str, Any]:
    """Two suites; three series; four alerts of different kinds and states, a minute apart
    (the newest last)."""
    device = farm["devices"]["mtk-a"]
    spec = {"models": ["m"], "backends": ["tvm-cpu"]}
    suites = [Suite(name=f"alerts-{uid()}", spec=spec) for _ in range(2)]
    session.add_all(suites)
    session.flush()
    nights = [
        Night(
            suite_id=suite.id,
            scheduled_for=T0,
            suite_version=1,
            trigger=NightTrigger.schedule,
            status=NightStatus.done,
        )
        for suite in suites
    ]
    session.add_all(nights)
    session.flush()
    series = [
        Series(suite_id=suites[0].id, model_name="mlp", device_id=device.id, backend="tvm-cpu"),
        Series(suite_id=suites[0].id, model_name="cnn", device_id=device.id, backend="tvm-cpu"),
        Series(suite_id=suites[1].id, model_name="mlp", device_id=device.id, backend="ort"),
    ]
    session.add_all(series)
    session.flush()
    rows = []
    for i, (s, night, kind, state) in enumerate(
        [
            (series[0], nights[0], AlertKind.regression, AlertState.untriaged),
            (series[1], nights[0], AlertKind.improvement, AlertState.untriaged),
            (series[0], nights[0], AlertKind.failure, AlertState.acknowledged),
            (series[2], nights[1], AlertKind.regression, AlertState.untriaged),
        ]
    ):
        alert = Alert(
            series_id=s.id,
            night_id=night.id,
            kind=kind,
            metric="median_ms",
            direction="up" if kind != AlertKind.improvement else "down",
            ratio=1.08,
            ratio_low=1.05,
            ratio_high=1.11,
            before=10.0,
            after=10.8,
            pvalue=1e-6,
            first_bad_night_id=night.id,
            changes=[{"what": "model version", "before": 1, "after": 2}],
            group_key=f"g-{uid()}",
            message="median_ms up 8%",
            state=state,
            created_at=T0 + timedelta(minutes=i),
            updated_at=T0 + timedelta(minutes=i),
        )
        session.add(alert)
        rows.append(alert)
    session.commit()
    return {"suites": suites, "series": series, "alerts": rows, "nights": nights}


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["data"]]


def test_list_newest_first_with_filters(client: TestClient, alerts: dict[str, Any]) -> None:
    rows, suites, series = alerts["alerts"], alerts["suites"], alerts["series"]
    mine = client.get(URL, params={"suite": suites[0].name})
    assert ids(mine) == [rows[2].id, rows[1].id, rows[0].id]
    assert mine.json()["count"] == 3
    first = mine.json()["data"][-1]
    assert first["series"] == {
        "id": series[0].id,
        "suite": suites[0].name,
        "model_name": "mlp",
        "device_id": series[0].device_id,
        "backend": "tvm-cpu",
        "variant": "",
    }
    assert first["ratio"] == 1.08 and first["ratio_low"] == 1.05 and first["pvalue"] == 1e-6
    assert first["changes"] == [{"what": "model version", "before": 1, "after": 2}]
    assert first["state"] == "untriaged" and "events" not in first

    suite = suites[0].name
    assert ids(client.get(URL, params={"suite": suite, "state": "untriaged"})) == [
        rows[1].id,
        rows[0].id,
    ]
    assert ids(client.get(URL, params={"suite": suite, "kind": "failure"})) == [rows[2].id]
    assert ids(client.get(URL, params={"series": series[0].id})) == [rows[2].id, rows[0].id]
    assert ids(client.get(URL, params={"series": series[2].id, "kind": "regression"})) == [
        rows[3].id
    ]
    assert ids(client.get(URL, params={"night": alerts["nights"][1].id})) == [rows[3].id]
    assert ids(client.get(URL, params={"suite": f"none-{uid()}"})) == []

    page = client.get(URL, params={"suite": suite, "limit": 2}).json()
    assert [a["id"] for a in page["data"]] == [rows[2].id, rows[1].id]
    assert page["next"] is not None
    rest = client.get(page["next"]).json()
    assert [a["id"] for a in rest["data"]] == [rows[0].id] and rest["next"] is None


def test_bad_filters_are_422(client: TestClient) -> None:
    for params, loc in [
        ({"state": "ignored"}, ["query", "state"]),
        ({"kind": "slowdown"}, ["query", "kind"]),
        ({"series": "0"}, ["query", "series"]),
        ({"suite": "a b"}, ["query", "suite"]),
        ({"limit": "0"}, ["query", "limit"]),
    ]:
        response = client.get(URL, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc


def test_triage_records_who_when_and_why(
    client: TestClient, auth: dict[str, str], alerts: dict[str, Any]
) -> None:
    alert = alerts["alerts"][0]
    shown = client.get(f"{URL}/{alert.id}").json()
    assert shown["events"] == [] and shown["state"] == "untriaged"

    before = datetime.now(UTC)
    response = client.patch(
        f"{URL}/{alert.id}",
        json={"state": "acknowledged", "note": "looking at it"},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    acked = response.json()
    assert acked["state"] == "acknowledged"
    [event] = acked["events"]
    assert event["state"] == "acknowledged" and event["note"] == "looking at it"
    assert event["actor"].startswith("tester-")
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(event["at"])
    assert datetime.fromisoformat(acked["updated_at"]) == datetime.fromisoformat(event["at"])

    invalid = client.patch(
        f"{URL}/{alert.id}", json={"state": "invalid", "note": "noisy phone"}, headers=auth
    ).json()
    assert invalid["state"] == "invalid"
    assert [(e["state"], e["note"]) for e in invalid["events"]] == [
        ("acknowledged", "looking at it"),
        ("invalid", "noisy phone"),
    ]
    # The history and the state are what the API shows from then on, and what the list
    # filters on (false alarms are counted from it).
    assert client.get(f"{URL}/{alert.id}").json() == invalid
    suite = alerts["suites"][0].name
    assert ids(client.get(URL, params={"suite": suite, "state": "invalid"})) == [alert.id]

    no_note = client.patch(f"{URL}/{alert.id}", json={"state": "fixed"}, headers=auth).json()
    assert no_note["events"][-1]["note"] == "" and no_note["state"] == "fixed"


def test_bad_triage_is_refused(
    client: TestClient, auth: dict[str, str], alerts: dict[str, Any]
) -> None:
    alert = alerts["alerts"][0]
    for body, loc in [
        ({"state": "ignored"}, ["body", "state"]),
        ({}, ["body", "state"]),
        ({"state": "fixed", "note": "x" * 4001}, ["body", "note"]),
        ({"state": "fixed", "note": "a\x00b"}, ["body", "note"]),
        ({"state": "fixed", "by": "me"}, ["body", "by"]),
    ]:
        response = client.patch(f"{URL}/{alert.id}", json=body, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
    assert client.patch(f"{URL}/{alert.id}", json={"state": "fixed"}).status_code == 401
    assert (
        client.patch(f"{URL}/2147483647", json={"state": "fixed"}, headers=auth).status_code == 404
    )
    assert client.get(f"{URL}/2147483647").status_code == 404
    shown = client.get(f"{URL}/{alert.id}").json()
    assert shown["state"] == "untriaged" and shown["events"] == []
