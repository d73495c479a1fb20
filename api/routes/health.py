"""Health: whether the database and the broker answer."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SettingsDep
from api.queue import broker_problem
from api.schemas import HealthPublic
from harness.errors import one_line
from harness.farm.broker import broker_url

router = APIRouter(prefix="", tags=["health"])


@router.get("/healthz", responses={503: {"model": HealthPublic}})
async def healthz(response: Response, session: SessionDep, settings: SettingsDep) -> HealthPublic:
    """200 when the database and the broker answer, else 503 naming what is down."""
    problems: list[str] = []

    def check_database() -> None:
        try:
            session.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means: down
            session.rollback()
            problems.append(f"database: {one_line(str(exc), 200)}")

    await run_in_threadpool(check_database)
    database_ok = not problems
    broker = await run_in_threadpool(broker_problem, broker_url(settings))
    if broker is not None:
        problems.append(f"broker: {one_line(broker, 200)}")
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(
        database="ok" if database_ok else "down",
        broker="ok" if broker is None else "down",
        detail="; ".join(problems) or None,
    )
