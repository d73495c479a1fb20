"""API tokens: ``ef_`` and 40 URL-safe characters, shown once; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.db import ApiToken, utcnow
from harness.errors import EdgefarmError

PREFIX = "ef_"


class TokenError(EdgefarmError):
    """A token name is taken or unknown."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(name: str, *, session: Session) -> str:
    """Create a token called ``name`` and return it; it cannot be shown again."""
    name = name.strip()
    if not name or len(name) > 128:
        raise TokenError("a token name is 1 to 128 characters")
    active = session.scalar(
        select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )
    if active is not None:
        raise TokenError(f"a token named {name!r} exists; revoke it first or pick another name")
    token = PREFIX + secrets.token_urlsafe(30)  # 30 bytes: 40 characters
    session.add(ApiToken(name=name, token_sha256=token_sha256(token)))
    session.flush()
    return token


def verify_token(token: str, *, session: Session) -> ApiToken | None:
    """The live (not revoked) token row for ``token``, else None."""
    if not token.startswith(PREFIX):
        return None
    return session.scalar(
        select(ApiToken).where(
            ApiToken.token_sha256 == token_sha256(token), ApiToken.revoked_at.is_(None)
        )
    )


def revoke_token(name: str, *, session: Session) -> int:
    """Revoke the live tokens called ``name``; return how many. None: :class:`TokenError`."""
    rows = list(
        session.scalars(
            select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        )
    )
    if not rows:
        raise TokenError(f"no live token named {name!r}")
    now = utcnow()
    for row in rows:
        row.revoked_at = now
    session.flush()
    return len(rows)


def list_tokens(*, session: Session) -> list[ApiToken]:
    """Every token, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
