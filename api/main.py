"""The FastAPI application. Nothing is created at import: serve it with
``uvicorn --factory api.main:create_app``.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

from fastapi import APIRouter, Depends, FastAPI

from api.deps import require_token
from api.errors import answers, install_error_handlers
from api.routes import (
    alerts,
    benchmarks,
    devices,
    health,
    jobs,
    models,
    nights,
    results,
    suites,
    tunings,
    webhooks,
)
from api.web.pages import router as web_router
from harness import __version__
from harness.config import Settings, get_settings
from harness.db import make_engine, make_session_factory
from harness.errors import EdgefarmError

API_PREFIX = "/api/v1"

# Values copied from examples and templates; a token equal to one of them is no secret.
PLACEHOLDER_TOKENS = frozenset(
    {
        "changethis",
        "changeme",
        "change-me",
        "secret",
        "token",
        "password",
        "placeholder",
        "default",
        "test",
        "xxx",
        "todo",
        "none",
        "null",
        "your-token-here",
    }
)
MIN_TOKEN_LENGTH = 20


def check_secrets(settings: Settings) -> None:
    """Refuse to start with a placeholder EDGEFARM_API_TOKEN (there is no default secret)."""
    token = settings.api_token
    if token is None:
        return
    if token.strip().lower() in PLACEHOLDER_TOKENS or len(token.strip()) < MIN_TOKEN_LENGTH:
        raise EdgefarmError(
            "EDGEFARM_API_TOKEN is a placeholder or shorter than "
            f"{MIN_TOKEN_LENGTH} characters; unset it, or set a real secret "
            "(`edgefarm token create NAME` makes database tokens)"
        )


def database_url_of(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.home / 'edgefarm.db'}"


@cache
def freeze_start_up() -> None:
    """Once per process: keep what start-up made (the imported modules, the app: about
    200,000 objects) out of the garbage collector's full passes, so that one falling during a
    request walks only what requests made. Unfrozen, such a pass took 100-400 ms of a history
    page here (its p99 in bench/pages.py); frozen, at most tens of ms. Reference counting
    still frees frozen objects."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment). The database engine lives
    from start-up to shutdown (the lifespan)."""
    settings = settings or get_settings()
    check_secrets(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(database_url_of(settings))
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        freeze_start_up()
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="edgefarm",
        version=__version__,
        summary="Benchmark ML models on a farm of phones: models, benchmarks, jobs, results.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Writes and model bytes always take a token (their routes say so); with closed reads,
    # every route under /api/v1 does, and the OpenAPI document says that too.
    closed = settings.api_reads_need_token
    api = APIRouter(
        prefix=API_PREFIX,
        dependencies=[Depends(require_token)] if closed else [],
        responses=answers(401) if closed else {},
    )
    for module in (
        models,
        benchmarks,
        tunings,
        jobs,
        results,
        devices,
        suites,
        nights,
        alerts,
        webhooks,
    ):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(web_router)  # the web pages (/, /jobs/ID, /history, ...)
    return app
