"""``edgefarm suite`` and ``edgefarm alerts`` as a user runs them, against a real API server
(uvicorn, a database of its own, the real broker): create, list, show, update, pause, resume,
run (and ``--wait``, while the test finishes the night's runs as a worker would), webhooks,
alert triage, delete; every error one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from harness.db import (
    Alert,
    AlertKind,
    Job,
    JobStatus,
    Night,
    Result,
    RunStatus,
    Series,
    Suite,
    utcnow,
)

from apidata import edgefarm, one_error_line, uid


def result_document(job: Job, device_id: int, backend: str, median: float) -> dict[str, Any]:
    """A measurement's result document, as complete as a worker writes it."""
    model = job.model
    return {
        "model": {"name": model.name, "sha256": model.sha256, "format": model.format, "inputs": []},
        "device": {"id": f"device-{device_id}"},
        "backend": backend,
        "status": "ok",
        "error": None,
        "latency_ms": {
            "min": median - 0.1,
            "median": median,
            "mean": median,
            "std": 0.05,
            "p90": median + 0.05,
            "p99": median + 0.1,
            "cv": 0.03,
            "ci95": [median - 0.1, median + 0.1],
            "n": 30,
        },
        "load_ms": 5.0,
        "first_ms": median * 2,
        "peak_rss_kb": 20_480,
        "accuracy": None,
        "samples_ms": [median] * 30,
        "provenance": {"edgefarm_version": "0.1.0", "tvm_version": "0.27.0"},
    }


def finish_nights_as_a_worker(factory: sessionmaker[Session], stop: threading.Event) -> None:
    """Until ``stop``: every run of a night's job that is not done gets a result, as a worker
    records one, and its job ends."""
    while not stop.is_set():
        with factory() as session:
            jobs = session.scalars(
                select(Job).where(Job.night_id.is_not(None), Job.status != JobStatus.done)
            ).all()
            for job in jobs:
                for run in job.runs:
                    run.status = RunStatus.done
                    run.attempts = 1
                    run.finished_at = utcnow()
                    median = 2.0 if job.variant.endswith("2") else 1.5
                    session.add(
                        Result(
                            run_id=run.id,
                            job_id=job.id,
                            model_id=job.model_id,
                            device_id=run.device_id,
                            backend=run.backend,
                            status="ok",
                            median_ms=median,
                            peak_rss_kb=20_480,
                            document=result_document(job, run.device_id, run.backend, median),
                        )
                    )
                job.status = JobStatus.done
                job.finished_at = utcnow()
            session.commit()
        stop.wait(0.3)


def test_suite_commands(farm_api: dict[str, Any], tmp_path: Path) -> None:
    farm = farm_api
    name = f"nightly-{uid()}"
    mlp, cnn = farm["models"]
    created = edgefarm(
        farm, "suite", "create", name, "--model", mlp, "--model", cnn, "--backend", "tvm-cpu",
        "--devices", f"pool={farm['pool']}", "--matrix", "tvm-cpu.opt_level=2,3",
        "--schedule", "0 3 * * *", "--timezone", "Europe/Paris", "--min-seconds", "0.5",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert f"suite {name} created (version 1); next night" in created.stdout

    again = edgefarm(farm, "suite", "create", name, "--model", mlp, "--backend", "tvm-cpu")
    assert again.returncode == 1 and "exists" in one_error_line(again)
    bad_cron = edgefarm(
        farm, "suite", "create", f"x-{uid()}", "-m", mlp, "-b", "tvm-cpu",
        "--schedule", "61 * * * *",
    )  # fmt: skip
    assert bad_cron.returncode == 1 and "body.schedule" in one_error_line(bad_cron)
    bad_backend = edgefarm(farm, "suite", "create", f"x-{uid()}", "-m", mlp, "-b", "tvm-gpu")
    assert "body.spec.backends.0" in one_error_line(bad_backend)
    bad_matrix = edgefarm(
        farm, "suite", "create", f"x-{uid()}", "-m", mlp, "-b", "tvm-cpu", "--matrix", "opt=2"
    )
    assert bad_matrix.returncode == 2 and "--matrix" in one_error_line(bad_matrix)
    no_model = edgefarm(farm, "suite", "create", f"x-{uid()}", "-b", "tvm-cpu")
    assert no_model.returncode == 2 and "--model" in one_error_line(no_model)

    listed = edgefarm(farm, "suite", "list")
    assert listed.returncode == 0 and name in listed.stdout and "Europe/Paris" in listed.stdout

    shown_path = tmp_path / "suite.json"
    shown = edgefarm(farm, "suite", "show", name, "--json", str(shown_path))
    assert shown.returncode == 0, shown.stderr
    assert mlp in shown.stdout and "tvm-cpu.opt_level = 2, 3" in shown.stdout
    suite = json.loads(shown_path.read_text())
    assert suite["spec"]["matrix"] == {"tvm-cpu.opt_level": [2, 3]}
    assert suite["spec"]["settings"]["min_seconds"] == 0.5
    assert suite["spec"]["devices"]["pool"] == farm["pool"]

    # A nightly tuning budget: shown, and part of what the suite measures (a version).
    budget = "minutes=15,batch=8,threads=2,population=32"
    tuned = edgefarm(farm, "suite", "update", name, "--tuning", budget)
    assert tuned.returncode == 0 and "version 2" in tuned.stdout, tuned.stderr
    shown = edgefarm(farm, "suite", "show", name)
    tuning_line = "tuning:   tvm-cpu, minutes=15.0, batch=8, threads=2, population=32 each night"
    assert tuning_line in shown.stdout
    bad_tuning = edgefarm(farm, "suite", "update", name, "--tuning", "hours=2")
    assert bad_tuning.returncode == 2 and "--tuning" in one_error_line(bad_tuning)
    both = edgefarm(farm, "suite", "update", name, "--tuning", "trials=4,minutes=2")
    assert both.returncode == 1 and "body.spec.tuning" in one_error_line(both)
    untuned = edgefarm(farm, "suite", "update", name, "--no-tuning")
    assert untuned.returncode == 0 and "version 3" in untuned.stdout, untuned.stderr

    # What it measures changes the version; when it runs does not.
    updated = edgefarm(farm, "suite", "update", name, "--model", mlp)
    assert updated.returncode == 0 and "version 4" in updated.stdout, updated.stderr
    updated = edgefarm(farm, "suite", "update", name, "--schedule", "0 4 * * *")
    assert updated.returncode == 0 and "version 4" in updated.stdout, updated.stderr
    nothing = edgefarm(farm, "suite", "update", name)
    assert nothing.returncode == 2 and "nothing to change" in one_error_line(nothing)

    paused = edgefarm(farm, "suite", "pause", name)
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert "paused" in edgefarm(farm, "suite", "list").stdout
    resumed = edgefarm(farm, "suite", "resume", name)
    assert resumed.returncode == 0 and "next night" in resumed.stdout

    run = edgefarm(farm, "suite", "run", name)
    assert run.returncode == 0, run.stderr
    assert f"of suite {name}: " in run.stdout and "job(s) queued" in run.stdout

    stop = threading.Event()
    worker = threading.Thread(target=finish_nights_as_a_worker, args=(farm["factory"], stop))
    worker.start()
    try:
        results_path = tmp_path / "night.json"
        waited = edgefarm(farm, "suite", "run", name, "--wait", "--json", str(results_path))
    finally:
        stop.set()
        worker.join()
    assert waited.returncode == 0, waited.stderr + waited.stdout
    assert "opt_level=2" in waited.stdout and "opt_level=3" in waited.stdout
    night = json.loads(results_path.read_text())
    # One model at two option levels, each on the pool's two phones (and perhaps the night's
    # own jobs, such as the phones' canary).
    measured = [r for r in night["results"] if r["variant"].startswith("opt_level=")]
    assert sorted(r["variant"] for r in measured) == ["opt_level=2"] * 2 + ["opt_level=3"] * 2
    assert all(r["document"]["status"] == "ok" for r in night["results"])
    shown = edgefarm(farm, "suite", "show", name)
    assert shown.stdout.count("manual") == 2  # both nights listed

    missing = edgefarm(farm, "suite", "show", f"none-{uid()}")
    assert missing.returncode == 1 and "HTTP 404: no suite with name" in one_error_line(missing)
    down = subprocess.run(
        [sys.executable, "-m", "harness.cli", "suite", "list", "--url", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "EDGEFARM_HOME": str(farm["home"]), "COLUMNS": "200"},
    )  # fmt: skip
    assert down.returncode == 1 and "cannot reach the farm" in one_error_line(down)

    # Webhooks.
    added = edgefarm(farm, "suite", "webhook", "add", name, "http://127.0.0.1:9/hook")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert len(secret) == 64 and "not shown again" in added.stderr
    hooks = edgefarm(farm, "suite", "webhook", "list", name)
    assert "http://127.0.0.1:9/hook" in hooks.stdout and secret not in hooks.stdout
    hook_id = added.stderr.split()[1]
    log = edgefarm(farm, "suite", "webhook", "deliveries", hook_id)
    assert log.returncode == 0 and "deliveries" in log.stdout
    bad_url = edgefarm(farm, "suite", "webhook", "add", name, "ftp://example.org/")
    assert bad_url.returncode == 1 and "body.url" in one_error_line(bad_url)
    removed = edgefarm(farm, "suite", "webhook", "remove", hook_id)
    assert removed.returncode == 0 and f"webhook {hook_id} removed" in removed.stdout
    twice = edgefarm(farm, "suite", "webhook", "remove", hook_id)
    assert twice.returncode == 1 and f"no webhook with id {hook_id}" in one_error_line(twice)

    deleted = edgefarm(farm, "suite", "delete", name, "--yes")
    assert deleted.returncode == 0 and f"suite {name} deleted" in deleted.stdout
    assert edgefarm(farm, "suite", "show", name).returncode == 1


def test_alerts_commands(farm_api: dict[str, Any]) -> None:
    farm = farm_api
    name = f"alerting-{uid()}"
    mlp = farm["models"][0]
    created = edgefarm(
        farm, "suite", "create", name, "-m", mlp, "-b", "tvm-cpu", "-s", f"pool={farm['pool']}"
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert edgefarm(farm, "suite", "run", name).returncode == 0
    with farm["factory"]() as session:
        suite = session.scalars(select(Suite).where(Suite.name == name)).one()
        night = session.scalars(select(Night).where(Night.suite_id == suite.id)).one()
        series = session.scalars(
            select(Series).where(Series.suite_id == suite.id, Series.model_name == mlp)
        ).all()
        alerts = [
            Alert(
                series_id=s.id,
                night_id=night.id,
                kind=AlertKind.regression,
                metric="median_ms",
                direction="up",
                ratio=1.2,
                ratio_low=1.15,
                ratio_high=1.25,
                before=10.0,
                after=12.0,
                first_bad_night_id=night.id,
                changes=[{"what": "model version changed", "before": 1, "after": 2}],
                group_key="g1",
                message="median_ms up 20%",
            )
            for s in series
        ]
        session.add_all(alerts)
        session.commit()
        ids = [a.id for a in alerts]
    assert len(ids) == 2

    listed = edgefarm(farm, "alerts")
    assert listed.returncode == 0, listed.stderr
    assert all(str(i) in listed.stdout for i in ids) and "+20.0% [+15.0%, +25.0%]" in listed.stdout
    assert "untriaged" in edgefarm(farm, "alerts", "list", "--suite", name).stdout

    marked = edgefarm(farm, "alerts", "invalid", str(ids[0]), "--note", "a noisy phone")
    assert marked.returncode == 0 and f"alert {ids[0]}: invalid by ci-bot" in marked.stdout
    acked = edgefarm(farm, "alerts", "ack", str(ids[1]))
    assert acked.returncode == 0 and "acknowledged by ci-bot" in acked.stdout
    shown = edgefarm(farm, "alerts", "show", str(ids[0]))
    assert shown.returncode == 0, shown.stderr
    assert "model version changed" in shown.stdout and "a noisy phone" in shown.stdout
    assert "ci-bot" in shown.stdout
    invalid = edgefarm(farm, "alerts", "list", "--state", "invalid", "--suite", name)
    assert str(ids[0]) in invalid.stdout and f" {ids[1]} " not in invalid.stdout
    fixed = edgefarm(farm, "alerts", "fixed", str(ids[1]), "-n", "reverted")
    assert fixed.returncode == 0

    bad_state = edgefarm(farm, "alerts", "--state", "ignored")
    assert bad_state.returncode == 1 and "query.state" in one_error_line(bad_state)
    unknown = edgefarm(farm, "alerts", "show", "2147483647")
    assert unknown.returncode == 1 and "no alert with id" in one_error_line(unknown)
