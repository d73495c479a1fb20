"""The web pages in a real browser (Debian's Chromium driven by Playwright) against a farm whose
database was filled by real runs: a real worker process measuring on two emulated phones,
the real PostgreSQL (a database of this module's own) and Redis (db 9).

One farm for the module: three jobs of one model (named ``<script>alert(1)</script>``, so
that every page shows a name that must stay text) with ``tvm-cpu`` and ``tvm-nnapi`` on both
phones; the third job is a suite's night, with a regression alert on one series. A fourth job,
of another small model so as not to touch those series, runs ``tvm-nnapi`` with partition
``cost`` on the first phone: the worker calibrates the phone's device class for real (each
candidate on the CPU and through the NNAPI driver), then builds and measures the cost-guided
artifact. Two jobs of the device canary (the farm's own canary model, its fixed protocol) run
on the first phone, so that its page has a canary history. The farm's own app serves the pages
on a free port (uvicorn in a thread).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from alembic import command
from sqlalchemy import select, update

from api.main import create_app
from harness.config import Settings
from harness.db import (
    Alert,
    AlertKind,
    Device,
    Job,
    Night,
    NightStatus,
    NightTrigger,
    Series,
)
from harness.devices.emulator import EmulatedPhone
from harness.farm.suites import canary_model, create_suite
from harness.farm.tokens import create_token
from harness.regression.canary import CANARY_BACKEND, CANARY_SETTINGS
from harness.regression.suites import SuiteFields
from tests.workers.workerfarm import (
    PG_ADMIN,
    Farm,
    WorkerProcess,
    alembic_config,
    register,
    wait_for,
)

import testmodels
from webfarm import (
    ARTIFACTS,
    BACKENDS,
    CANARY_RUNS,
    CHROMIUM,
    COST_MODEL,
    JOBS,
    XSS,
    WebFarm,
    free_port,
)


@contextmanager
def _database() -> Iterator[str]:
    name = f"edgefarm_web_test_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    command.upgrade(alembic_config(url), "head")
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _suite_with_alert(farm: Farm, devices: list[int], night_job: int) -> tuple[int, str]:
    """A suite whose night is ``night_job`` (a real job), and a regression alert on its
    tvm-cpu series of the first phone starting that night."""
    with farm.sessions() as session:
        suite = create_suite(
            session,
            SuiteFields.model_validate(
                {
                    "name": f"web-{uuid.uuid4().hex[:8]}",
                    # A suite's model names are file-like; the series keeps the model's own.
                    "spec": {
                        "models": ["web-mlp"],
                        "backends": list(BACKENDS),
                        "devices": {"ids": devices},
                    },
                }
            ),
            created_by="tests",
        )
        night = Night(
            suite_id=suite.id,
            scheduled_for=datetime.now(UTC),
            suite_version=suite.version,
            trigger=NightTrigger.manual,
            status=NightStatus.done,
            toolchain={},
        )
        session.add(night)
        session.flush()
        session.execute(update(Job).where(Job.id == night_job).values(night_id=night.id))
        series = Series(suite_id=suite.id, model_name=XSS, device_id=devices[0], backend="tvm-cpu")
        session.add(series)
        session.flush()
        alert = Alert(
            series_id=series.id,
            night_id=night.id,
            first_bad_night_id=night.id,
            kind=AlertKind.regression,
            metric="median_ms",
            direction="up",
            ratio=1.31,
            ratio_low=1.2,
            ratio_high=1.4,
            before=1.0,
            after=1.31,
            changes=[{"what": "tvm_version", "before": "0.27", "after": "0.28"}],
            group_key=uuid.uuid4().hex,
            message=f"{XSS} is slower",
        )
        session.add(alert)
        session.commit()
        return alert.id, suite.name


@pytest.fixture(scope="module")
def web_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebFarm]:
    directory = tmp_path_factory.mktemp("webfarm")
    stack = ExitStack()
    url = stack.enter_context(_database())
    broker = "redis://127.0.0.1:6379/9"
    import redis

    redis.Redis.from_url(broker).flushdb()
    farm = Farm(url, broker)
    phones = [
        EmulatedPhone("dimensity-9200", thermal_time_constant_s=3600.0).start(),
        EmulatedPhone("snapdragon-8-gen-2", thermal_time_constant_s=3600.0).start(),
    ]
    worker: WorkerProcess | None = None
    server: uvicorn.Server | None = None
    try:
        devices = [register(farm, f"tcp:{phone.serial}") for phone in phones]
        args = [a for phone in phones for a in ("--device", f"tcp:{phone.serial}")]
        worker = WorkerProcess(
            env=farm.worker_env(), log_path=directory / "worker.log", args=args
        ).start()
        model_id = farm.add_model(testmodels.mlp(seed=7), XSS)
        # The first job also records a per-operator profile (the job page shows it).
        jobs = [
            farm.create_job(model_id, devices, list(BACKENDS), ["x:1x64"], profile=index == 0)
            for index in range(JOBS)
        ]
        # The last job is a suite's night (an alert starts on it); the rows before it is sent.
        alert_id, suite = _suite_with_alert(farm, devices, jobs[-1])
        # The device canary (the farm's own model, as a night stores it) twice on the first
        # phone, with its fixed protocol: that phone's page draws its canary history.
        with farm.sessions() as session:
            canary_id = canary_model(session).id
            session.commit()
        protocol = CANARY_SETTINGS.model_dump(exclude={"inputs"})
        canary_jobs = [
            farm.create_job(canary_id, devices[:1], [CANARY_BACKEND], [], **protocol)
            for _ in range(CANARY_RUNS)
        ]
        cost_model = farm.add_model(testmodels.mlp(seed=11), COST_MODEL)
        cost_job = farm.create_job(
            cost_model,
            devices[:1],
            ["tvm-nnapi"],
            ["x:1x64"],
            options={"tvm-nnapi": {"partition": "cost"}},
        )
        for job_id in [*jobs, cost_job, *canary_jobs]:
            farm.enqueue(job_id)  # all at once: the artifacts are built once, then reused
        for job_id in [*jobs, cost_job, *canary_jobs]:
            runs = farm.wait_done(job_id, timeout_s=240)
            assert all(r.status == "done" for r in runs), [
                (r.error_stage, r.error_message) for r in runs
            ]
        with farm.sessions() as session:
            token_name = f"web-{uuid.uuid4().hex[:6]}"
            token = create_token(token_name, session=session)
            session.commit()
            assert session.scalar(select(Device.id).where(Device.id == devices[0]))
        settings = Settings(
            home=directory / "home", database_url=url, broker_url=broker, api_token=None
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for("the web server", lambda: server is not None and server.started, 30)
        yield WebFarm(
            url=f"http://127.0.0.1:{port}",
            farm=farm,
            settings=settings,
            model_id=model_id,
            devices=devices,
            jobs=jobs,
            cost_job=cost_job,
            canary_jobs=canary_jobs,
            alert_id=alert_id,
            suite=suite,
            token=token,
            token_name=token_name,
        )
        server.should_exit = True
        thread.join(timeout=10)
    finally:
        if worker is not None:
            worker.stop()
            print(f"--- worker log ---\n{worker.log()[-8000:]}")
        for phone in phones:
            phone.stop()
        farm.close()
        stack.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/services does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, web_farm: WebFarm) -> Iterator[Any]:
    """A fresh browser page; any dialog (an executed alert()) or page error fails the test."""
    context = browser.new_context(base_url=web_farm.url, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    problems: list[str] = []

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield tab
    context.close()
    assert not problems, problems


@pytest.fixture
def shoot() -> Callable[[Any, str], Path]:
    """Save a full-page screenshot of ``page`` as ``NAME.png`` in the artifacts directory."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
