"""Engines and sessions. Harness functions take ``*, session: Session`` and never commit: the
caller (an API request, a Celery task, a CLI command) owns the transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, TypeAlias

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from harness.config import get_settings


def database_url() -> str:
    """The farm's database: EDGEFARM_DATABASE_URL, else the embedded farm's SQLite file."""
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    return embedded_database_url()


def embedded_database_url() -> str:
    """The embedded farm's SQLite file, ``$EDGEFARM_HOME/edgefarm.db``, whatever
    EDGEFARM_DATABASE_URL says (``edgefarm bench`` keeps its costs there)."""
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'edgefarm.db'}"


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: the settings'). SQLite gets WAL, a busy timeout and
    foreign keys, so that the API and a worker can share the file."""
    url = url or database_url()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


SessionScope: TypeAlias = Callable[[], AbstractContextManager[Session]]
"""Opens one unit of work: a session whose transaction commits when its block ends without
error (``scoped(factory)``). Given to code that decides *when* it needs a short transaction
while its caller decides *where* (which database, which engine)."""


def scoped(factory: sessionmaker[Session]) -> SessionScope:
    """A :data:`SessionScope` of :func:`session_scope` over ``factory``."""
    return partial(session_scope, factory)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
