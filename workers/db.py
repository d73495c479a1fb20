"""Database sessions for tasks: one engine per worker process, created after the fork.

A database that cannot be reached is the farm's failure, not the user's: it surfaces as an
InfrastructureError, which tasks retry with backoff.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from harness.db import make_engine, make_session_factory
from harness.errors import InfrastructureError, one_line

_state: dict[str, tuple[int, Engine, sessionmaker[Session]]] = {}


def session_factory() -> sessionmaker[Session]:
    """This process's session factory. A forked pool child never reuses its parent's
    connections: it gets an engine of its own."""
    current = _state.get("factory")
    if current is not None and current[0] == os.getpid():
        return current[2]
    if current is not None:
        current[1].dispose(close=False)  # the parent's connections stay the parent's
    engine = make_engine()
    factory = make_session_factory(engine)
    _state["factory"] = (os.getpid(), engine, factory)
    return factory


def engine() -> Engine:
    """This process's engine (see :func:`session_factory`)."""
    session_factory()
    return _state["factory"][1]


def dispose() -> None:
    """Close this process's connections (before forking a pool, or at exit)."""
    current = _state.pop("factory", None)
    if current is not None:
        current[1].dispose()


@contextmanager
def db_session() -> Iterator[Session]:
    """A session for one task; it commits where the task says so and rolls back whatever
    is left open. A lost database connection becomes an InfrastructureError."""
    session = session_factory()()
    try:
        yield session
    except (OperationalError, DBAPIError) as exc:
        with contextlib.suppress(DBAPIError):
            session.rollback()
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            raise InfrastructureError(f"database: {one_line(str(exc.orig))}") from exc
        raise
    finally:
        with contextlib.suppress(DBAPIError):
            session.close()  # rolls back whatever the task left uncommitted


def aware(moment: datetime | None) -> datetime | None:
    """``moment`` as an aware UTC datetime (SQLite hands back naive ones)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
