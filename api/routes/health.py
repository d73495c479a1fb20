"""Health: whether the database and the broker answer, and whether the farm can make progress
(live workers for the queues that have runs waiting, a beat that ticks)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SettingsDep
from api.queue import broker_problem
from api.schemas import BeatPublic, HealthPublic, ProcessPublic, StarvedQueuePublic
from harness.errors import one_line
from harness.farm.broker import broker_url
from harness.farm.liveness import FarmLiveness, liveness
from harness.farm.tokens import verify_token

router = APIRouter(prefix="", tags=["health"])


def _with_liveness(health: HealthPublic, report: FarmLiveness) -> HealthPublic:
    beat = report.beat
    return health.model_copy(
        update={
            "beat": BeatPublic(
                alive=beat is not None and beat.alive,
                last_tick_at=beat.heartbeat_at if beat else None,
                age_s=round(beat.heartbeat_age_s, 1) if beat else None,
            ),
            "workers": [ProcessPublic.model_validate(p.to_dict()) for p in report.processes],
            "live_queues": sorted(report.live_queues),
            "starved_queues": [
                StarvedQueuePublic(
                    queue=s.queue,
                    waiting_runs=s.waiting_runs,
                    device_id=s.device_id,
                    device_address=s.device_address,
                )
                for s in report.starved
            ],
            "runs_in_flight": report.runs_in_flight,
        }
    )


@router.get(
    "/healthz",
    responses={503: {"model": HealthPublic}},
    # The token is optional here (its holder reads the services' own error text).
    openapi_extra={"security": [{}, {"HTTPBearer": []}]},
)
async def healthz(
    request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> HealthPublic:
    """200 when the farm can make progress, else 503 saying what is wrong."""
    errors: list[str] = []
    report: FarmLiveness | None = None
    insider = False

    def check_database() -> None:
        nonlocal report, insider
        try:
            session.execute(text("SELECT 1"))
            report = liveness(session)
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token:
                known = settings.api_token is not None and hmac.compare_digest(
                    token.encode(), settings.api_token.encode()
                )
                insider = known or verify_token(token, session=session) is not None
        except Exception as exc:  # any driver error means: down
            session.rollback()
            errors.append(f"database: {one_line(str(exc), 200)}")

    await run_in_threadpool(check_database)
    database_ok = not errors
    broker = await run_in_threadpool(broker_problem, broker_url(settings))
    if broker is not None:
        errors.append(f"broker: {one_line(broker, 200)}")
    problems = report.problems() if report is not None else []
    down = [name for name, ok in (("database", database_ok), ("broker", broker is None)) if not ok]
    if down:
        # A database's or broker's own message can carry host names and user names: only a
        # caller with a token reads it.
        detail: str | None = "; ".join(errors) if insider else f"{' and '.join(down)} down"
    else:
        detail = "; ".join(problems) or None
    degraded = bool(down or problems)
    if degraded:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    health = HealthPublic(
        status="degraded" if degraded else "ok",
        database="ok" if database_ok else "down",
        broker="ok" if broker is None else "down",
        detail=detail,
        problems=[*(f"{d} down" for d in down), *problems],
    )
    return _with_liveness(health, report) if report is not None else health
