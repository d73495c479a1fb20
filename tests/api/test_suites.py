"""/api/v1/suites and /api/v1/nights: suites managed through the API (real PostgreSQL), runs
started on demand (a night, its jobs committed, their messages on the real broker), and every
bad input answered 422 naming its field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.db import Job, Model, Night, NightTrigger, Series, Suite, Tuning
from harness.farm.suites import get_suite, start_night

from apidata import add_model, uid

URL = "/api/v1/suites"


def suite_body(name: str, models: list[str], pool: str, **extra: Any) -> dict[str, Any]:
    spec = {"models": models, "backends": ["tvm-cpu"], "devices": {"pool": pool}}
    return {"name": name, "spec": {**spec, **extra.pop("spec", {})}, **extra}


@pytest.fixture
def names(session: Session) -> dict[str, str]:
    """Two uploaded models (names of their own) and a fresh suite name."""
    models = {"a": f"mlp-{uid()}", "b": f"cnn-{uid()}"}
    for name in models.values():
        add_model(session, name)
    session.commit()
    return {**models, "suite": f"suite-{uid()}"}


def create(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(URL, json=body, headers=auth)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_create_list_show_update_pause_resume_delete(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any], names: dict[str, str]
) -> None:
    pool = f"pool-{farm['tag']}"
    body = suite_body(
        names["suite"],
        [names["a"]],
        pool,
        schedule="30 3 * * 1-5",
        timezone="Europe/Paris",
        description="weekday nights",
    )
    suite = create(client, auth, body)
    assert suite["version"] == 1 and suite["enabled"] is True
    assert suite["schedule"] == "30 3 * * 1-5" and suite["timezone"] == "Europe/Paris"
    assert suite["created_by"].startswith("tester-")
    assert suite["spec"]["models"] == [names["a"]]
    assert suite["last_night"] is None
    # 03:30 in Paris is 01:30 or 02:30 UTC, on a weekday, in the future.
    upcoming = datetime.fromisoformat(suite["next_run_at"])
    assert upcoming > datetime.now(UTC) and upcoming.minute == 30 and upcoming.weekday() < 5

    listed = client.get(URL, params={"limit": 1000}).json()
    assert names["suite"] in [s["name"] for s in listed["data"]]
    shown = client.get(f"{URL}/{names['suite']}").json()
    assert shown == suite
    assert client.get(f"{URL}/{suite['id']}").json()["name"] == names["suite"]  # by id too

    # A change of schedule or description is not a new version; a change of spec is.
    change = {"description": "nights", "schedule": "0 4 * * *"}
    changed = client.patch(f"{URL}/{names['suite']}", json=change, headers=auth)
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 1 and changed.json()["schedule"] == "0 4 * * *"
    spec = {**suite["spec"], "models": [names["a"], names["b"]]}
    changed = client.patch(f"{URL}/{names['suite']}", json={"spec": spec}, headers=auth)
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    assert changed.json()["spec"]["models"] == [names["a"], names["b"]]
    same = client.patch(f"{URL}/{names['suite']}", json={"spec": spec}, headers=auth)
    assert same.json()["version"] == 2  # the same spec again changes nothing

    paused = client.post(f"{URL}/{names['suite']}/pause", headers=auth)
    assert paused.status_code == 200, paused.text
    assert paused.json()["enabled"] is False and paused.json()["next_run_at"] is None
    only_paused = client.get(URL, params={"enabled": "false", "limit": 1000}).json()
    assert names["suite"] in [s["name"] for s in only_paused["data"]]
    resumed = client.post(f"{URL}/{names['suite']}/resume", headers=auth)
    assert resumed.json()["enabled"] is True and resumed.json()["next_run_at"] is not None

    deleted = client.delete(f"{URL}/{names['suite']}", headers=auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"{URL}/{names['suite']}").status_code == 404
    assert client.delete(f"{URL}/{names['suite']}", headers=auth).status_code == 404


def test_run_now_starts_a_night_with_its_jobs(
    client: TestClient,
    auth: dict[str, str],
    farm: dict[str, Any],
    names: dict[str, str],
    broker: redis.Redis,
    session: Session,
) -> None:
    pool = f"pool-{farm['tag']}"
    matrix = {"tvm-cpu.opt_level": [2, 3]}
    body = suite_body(names["suite"], [names["a"], names["b"]], pool, spec={"matrix": matrix})
    create(client, auth, body)
    response = client.post(f"{URL}/{names['suite']}/runs", headers=auth)
    assert response.status_code == 201, response.text
    night = response.json()
    assert night["enqueued"] is True
    assert night["status"] == "running" and night["trigger"] == "manual"
    assert night["suite"] == names["suite"] and night["suite_version"] == 1
    assert night["problems"] == []
    # Two models x one backend x two option combinations; each job on the pool's two phones.
    # (The night may also hold jobs of its own, such as the phones' canary.)
    models = {names["a"], names["b"]}
    mine = set(session.scalars(select(Model.id).where(Model.name.in_(models))))
    jobs = [j for j in night["jobs"] if j["model_id"] in mine]
    assert len(jobs) == 4
    assert sorted(j["variant"] for j in jobs) == [
        "opt_level=2",
        "opt_level=2",
        "opt_level=3",
        "opt_level=3",
    ]
    assert all(j["runs"] == {"queued": 2} and j["backends"] == ["tvm-cpu"] for j in jobs)
    # Every series has its toolchain; the jobs are committed and their messages sent.
    series = session.scalars(
        select(Series.id).where(Series.model_name.in_(models), Series.backend == "tvm-cpu")
    ).all()
    assert len(series) == 2 * 2 * 2
    assert {str(i) for i in series} <= set(night["toolchain"]["series"])
    stored = session.scalars(select(Job).where(Job.night_id == night["id"])).all()
    assert sorted(j.id for j in stored) == sorted(j["id"] for j in night["jobs"])
    assert broker.llen("compile") == len(night["jobs"])

    shown = client.get(f"/api/v1/nights/{night['id']}").json()
    assert {k: v for k, v in shown.items()} == {k: v for k, v in night.items() if k != "enqueued"}
    listed = client.get(f"{URL}/{names['suite']}/nights").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == night["id"]
    suite = client.get(f"{URL}/{names['suite']}").json()
    assert suite["last_night"]["id"] == night["id"]
    assert suite["last_night"]["status"] == "running"

    # Nights list newest first.
    second = client.post(f"{URL}/{names['suite']}/runs", headers=auth).json()
    listed = client.get(f"{URL}/{names['suite']}/nights", params={"limit": 1}).json()
    assert listed["count"] == 2 and [n["id"] for n in listed["data"]] == [second["id"]]
    assert listed["next"] is not None and "offset=1" in listed["next"]
    assert client.get(f"{URL}/{names['suite']}").json()["last_night"]["id"] == second["id"]


def test_a_suite_with_a_tuning_budget_tunes_each_model_per_class_after_its_jobs(
    client: TestClient,
    auth: dict[str, str],
    farm: dict[str, Any],
    names: dict[str, str],
    broker: redis.Redis,
    session: Session,
) -> None:
    pool = f"pool-{farm['tag']}"
    body = suite_body(
        names["suite"],
        [names["a"], names["b"]],
        pool,
        spec={"tuning": {"minutes": 10, "threads": 2, "population": 32}},
    )
    create(client, auth, body)
    night = client.post(f"{URL}/{names['suite']}/runs", headers=auth).json()
    assert night["enqueued"] is True and night["problems"] == []
    tunings = session.scalars(select(Tuning).where(Tuning.night_id == night["id"])).all()
    # Two models on the pool's two phones, of two models (device classes): four tunings.
    assert len(tunings) == 4
    assert {t.minutes for t in tunings} == {10.0} and {t.trials for t in tunings} == {None}
    assert {t.submitted_by for t in tunings} == {f"suite:{names['suite']}"}
    assert {t.threads for t in tunings} == {2}  # timed as the suite's runs ask
    assert {t.population for t in tunings} == {32}
    assert len({t.device_class for t in tunings}) == 2
    assert broker.llen("tuning") == 4
    assert broker.llen("compile") == len(night["jobs"])


def test_a_spec_stored_before_a_field_existed_is_the_same_spec(
    client: TestClient,
    auth: dict[str, str],
    farm: dict[str, Any],
    names: dict[str, str],
    session: Session,
) -> None:
    """A suite stored by an older edgefarm lacks fields added since (with their defaults):
    the same spec sent again is no new version."""
    body = suite_body(
        names["suite"], [names["a"]], f"pool-{farm['tag']}", spec={"tuning": {"trials": 8}}
    )
    suite = create(client, auth, body)
    row = session.scalar(select(Suite).where(Suite.name == names["suite"]))
    assert row is not None and row.spec["tuning"]["threads"] == 0
    assert row.spec["tuning"]["population"] == 64
    added = ("threads", "population")
    older = {**row.spec, "tuning": {k: v for k, v in row.spec["tuning"].items() if k not in added}}
    row.spec = older  # as stored before tunings took threads and a population
    session.commit()
    same = client.patch(f"{URL}/{names['suite']}", json={"spec": suite["spec"]}, headers=auth)
    assert same.status_code == 200, same.text
    assert same.json()["version"] == 1


def test_a_scheduled_time_starts_one_night_only(
    client: TestClient,
    auth: dict[str, str],
    farm: dict[str, Any],
    names: dict[str, str],
    session: Session,
) -> None:
    create(client, auth, suite_body(names["suite"], [names["a"]], f"pool-{farm['tag']}"))
    suite = get_suite(session, names["suite"])
    when = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    first = start_night(session, suite, scheduled_for=when, trigger=NightTrigger.schedule)
    assert first is not None and first.job_ids
    again = start_night(session, suite, scheduled_for=when, trigger=NightTrigger.schedule)
    assert again is None
    session.commit()
    nights = session.scalars(select(Night).where(Night.suite_id == suite.id)).all()
    assert len(nights) == 1
    assert session.scalars(select(Job).where(Job.night_id == nights[0].id)).all() != []


def test_a_night_whose_model_is_gone_fails_and_says_why(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any], names: dict[str, str]
) -> None:
    missing = f"gone-{uid()}"
    create(client, auth, suite_body(names["suite"], [missing], f"pool-{farm['tag']}"))
    night = client.post(f"{URL}/{names['suite']}/runs", headers=auth).json()
    assert night["status"] == "failed" and night["jobs"] == []
    assert missing in night["problems"][0]["message"]


def test_a_suite_named_with_digits_is_found_by_its_name(
    client: TestClient, auth: dict[str, str], farm: dict[str, Any], names: dict[str, str]
) -> None:
    digits = str(700_000_000 + int(uid()[:6], 16))
    created = create(client, auth, suite_body(digits, [names["a"]], f"pool-{farm['tag']}"))
    assert client.get(f"{URL}/{digits}").json()["id"] == created["id"]
    assert client.get(f"{URL}/99999999999").status_code == 404  # beyond any id: not a 500


BAD = [
    ({"schedule": "61 * * * *"}, ["body", "schedule"]),
    ({"schedule": "0 2 * *"}, ["body", "schedule"]),
    ({"timezone": "Mars/Olympus_Mons"}, ["body", "timezone"]),
    ({"spec": {"backends": ["tvm-gpu"]}}, ["body", "spec", "backends", 0]),
    ({"spec": {"backends": ["tvm-cpu", "tvm-cpu"]}}, ["body", "spec", "backends", 1]),
    (
        {"spec": {"settings": {"options": {"tvm-cpu": {"no_such_option": 1}}}}},
        ["body", "spec", "settings", "options", "tvm-cpu"],
    ),
    ({"spec": {"matrix": {"tvm-cpu.no_such_option": [1, 2]}}}, ["body", "spec", "matrix"]),
    ({"spec": {"matrix": {"ort.threads": [1, 2]}}}, ["body", "spec", "matrix", "ort.threads"]),
    (
        {"spec": {"matrix": {"tvm-cpu.opt_level": [2, 2]}}},
        ["body", "spec", "matrix", "tvm-cpu.opt_level"],
    ),
    (
        {"spec": {"matrix": {"tvm-cpu.opt_level": ["a\x00b"]}}},
        ["body", "spec", "matrix", "tvm-cpu.opt_level", 0],
    ),
    ({"spec": {"devices": {"pool": "a\x00b"}}}, ["body", "spec", "devices", "pool"]),
    ({"description": "a\x00b"}, ["body", "description"]),
    ({"spec": {"backends": ["ort"], "tuning": {"trials": 4}}}, ["body", "spec", "tuning"]),
    ({"spec": {"tuning": {"trials": 4, "minutes": 2}}}, ["body", "spec", "tuning"]),
    ({"spec": {"tuning": {"trials": 0}}}, ["body", "spec", "tuning", "trials"]),
    ({"name": "no spaces"}, ["body", "name"]),
]


@pytest.mark.parametrize(("change", "loc"), BAD, ids=[str(loc[1:]) for _, loc in BAD])
def test_bad_suites_are_422_naming_the_field(
    client: TestClient,
    auth: dict[str, str],
    names: dict[str, str],
    change: dict[str, Any],
    loc: list[Any],
) -> None:
    body = suite_body(names["suite"], [names["a"]], "any")
    body = {**body, **{k: v for k, v in change.items() if k != "spec"}}
    body["spec"] = {**body["spec"], **change.get("spec", {})}
    response = client.post(URL, json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc, response.text
    assert client.get(f"{URL}/{names['suite']}").status_code == 404  # nothing stored


def test_bad_changes_are_422_naming_the_field(
    client: TestClient, auth: dict[str, str], names: dict[str, str]
) -> None:
    create(client, auth, suite_body(names["suite"], [names["a"]], "any"))
    for change, loc in [
        ({"schedule": "* * * * * *"}, ["body", "schedule"]),
        ({"timezone": "Nowhere"}, ["body", "timezone"]),
        ({"spec": {"models": ["m"], "backends": ["nope"]}}, ["body", "spec", "backends", 0]),
        ({"enabled": "perhaps"}, ["body", "enabled"]),
    ]:
        response = client.patch(f"{URL}/{names['suite']}", json=change, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc, response.text
    assert client.get(f"{URL}/{names['suite']}").json()["version"] == 1


def test_a_taken_name_is_422(
    client: TestClient, auth: dict[str, str], names: dict[str, str]
) -> None:
    create(client, auth, suite_body(names["suite"], [names["a"]], "any"))
    response = client.post(URL, json=suite_body(names["suite"], [names["b"]], "any"), headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


def test_writes_need_a_token_and_unknown_suites_are_404(
    client: TestClient, auth: dict[str, str], names: dict[str, str], session: Session
) -> None:
    body = suite_body(names["suite"], [names["a"]], "any")
    assert client.post(URL, json=body).status_code == 401
    assert session.scalar(select(Suite).where(Suite.name == names["suite"])) is None
    create(client, auth, body)
    for method, path in [
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/pause"),
        ("POST", "/resume"),
        ("POST", "/runs"),
        ("POST", "/webhooks"),
    ]:
        kwargs: dict[str, Any] = (
            {"json": {"url": "http://example.org/h"}} if "webhooks" in path else {}
        )
        if method == "PATCH":
            kwargs = {"json": {"description": "x"}}
        assert client.request(method, f"{URL}/{names['suite']}{path}", **kwargs).status_code == 401
        unknown = client.request(method, f"{URL}/no-such-{uid()}{path}", headers=auth, **kwargs)
        assert unknown.status_code == 404, (method, path, unknown.text)
    assert client.get(f"{URL}/no-such-{uid()}/nights").status_code == 404
    assert client.get("/api/v1/nights/2147483647").status_code == 404
