"""Dependencies shared by the routes: settings, the request's session, authorization."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import MAX_ID
from harness.config import Settings
from harness.db import session_scope
from harness.farm import queries
from harness.farm.tokens import verify_token

# Row ids are PostgreSQL integers: a larger number names no row, and would not fit a query.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id")]
LimitQuery = Annotated[
    int, Query(ge=1, le=queries.MAX_LIMIT, description="how many to return at most")
]
OffsetQuery = Annotated[
    int, Query(ge=0, le=queries.MAX_OFFSET, description="how many to skip (see `next`)")
]


def get_app_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(request: Request) -> Iterator[Session]:
    """One session and one transaction per request: committed when the route returns,
    rolled back when it raises."""
    factory = cast(sessionmaker[Session], request.app.state.session_factory)
    with session_scope(factory) as session:
        yield session


# "function": the transaction ends before the response is sent, so a failing commit is
# the client's error response rather than a 2xx for data that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API token's name (``settings`` for EDGEFARM_API_TOKEN)."""

    name: str


SETTINGS_PRINCIPAL = "settings"

# A route that depends on this (through require_token) is marked in the OpenAPI document as
# needing the token; routes that do not are open.
bearer = HTTPBearer(
    auto_error=False,
    description="An API token (`edgefarm token create NAME`); needed for every write and for "
    "model bytes, and for reads too when EDGEFARM_API_READS_NEED_TOKEN is true.",
)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_token(
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """A live bearer token: EDGEFARM_API_TOKEN or a database token that is not revoked."""
    if credentials is None:
        raise _unauthorized("this needs a bearer token: Authorization: Bearer ef_...")
    token = credentials.credentials
    if settings.api_token and hmac.compare_digest(token.encode(), settings.api_token.encode()):
        return Principal(SETTINGS_PRINCIPAL)
    row = verify_token(token, session=session)
    if row is None:
        raise _unauthorized("the bearer token is unknown or revoked")
    return Principal(row.name)


# Writes and model bytes take this; the app adds it to every route under /api/v1 when
# EDGEFARM_API_READS_NEED_TOKEN is true (api.main).
TokenDep = Annotated[Principal, Depends(require_token)]
WriterDep = TokenDep


def next_url(request: Request, next_offset: int | None) -> str | None:
    """The URL of the following page (same query, the offset moved on), or None."""
    if next_offset is None:
        return None
    url = request.url.include_query_params(offset=next_offset)
    return f"{url.path}?{url.query}"
