"""Who is looking at a page, and the CSRF token of its forms.

Signing in takes an API token (``edgefarm token create NAME``, or EDGEFARM_API_TOKEN); the
session cookie holds that token, HttpOnly and SameSite=Strict, and every request checks it
again, so revoking the token ends the session at once. Reads follow
EDGEFARM_API_READS_NEED_TOKEN as the API's do: with closed reads a page needs a session (or a
bearer header). Every form carries a CSRF token: a random per-browser cookie, and in the form
the HMAC of the session under that cookie (a signed double submit: a page elsewhere can
neither read the cookie nor compute the HMAC). No secret of the server's is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep
from harness.config import Settings
from harness.farm.tokens import verify_token

SESSION_COOKIE = "edgefarm_session"
CSRF_COOKIE = "edgefarm_csrf"
SETTINGS_NAME = "settings"  # the name of EDGEFARM_API_TOKEN's holder, as in the API


class SignInNeeded(Exception):
    """A page needs a signed-in token (closed reads, or a write)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadForm(Exception):
    """A form that cannot be accepted: its CSRF token is wrong, or a field is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Viewer:
    """The request's signed-in name (None: anonymous), its session token, and the CSRF
    cookie (``new_cookie``: one to set on the answer)."""

    name: str | None
    token: str | None
    csrf_cookie: str
    new_cookie: bool
    secure: bool

    @property
    def csrf(self) -> str:
        """The value every form of this page carries."""
        return form_token(self.csrf_cookie, self.token)

    def check_form(self, given: str | None) -> None:
        if not given or not hmac.compare_digest(given, self.csrf):
            raise BadForm("the form's CSRF token is missing or stale; reload the page and retry")

    def finish(self, response: Response) -> Response:
        """Set the CSRF cookie on ``response`` if this browser had none."""
        if self.new_cookie:
            response.set_cookie(
                CSRF_COOKIE,
                self.csrf_cookie,
                httponly=True,
                samesite="strict",
                secure=self.secure,
                path="/",
            )
        return response


def form_token(csrf_cookie: str, token: str | None) -> str:
    return hmac.new(
        csrf_cookie.encode(), f"edgefarm-form:{token or ''}".encode(), hashlib.sha256
    ).hexdigest()


def token_name(token: str, settings: Settings, session: Session) -> str | None:
    """The name of a live token, else None."""
    if settings.api_token and hmac.compare_digest(token.encode(), settings.api_token.encode()):
        return SETTINGS_NAME
    row = verify_token(token, session=session)
    return row.name if row is not None else None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def viewer(request: Request, settings: SettingsDep, session: SessionDep) -> Viewer:
    """Who is asking; SignInNeeded when reads need a token and there is none."""
    token = _bearer(request) or request.cookies.get(SESSION_COOKIE)
    name = token_name(token, settings, session) if token else None
    if name is None:
        token = None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    fresh = len(cookie) < 32
    if fresh:
        cookie = secrets.token_urlsafe(32)
    secure = request.url.scheme == "https"
    found = Viewer(name=name, token=token, csrf_cookie=cookie, new_cookie=fresh, secure=secure)
    if settings.api_reads_need_token and name is None:
        raise SignInNeeded("this farm's pages need a token (EDGEFARM_API_READS_NEED_TOKEN)")
    return found


def anonymous(request: Request) -> Viewer:
    """A viewer not signed in, with this browser's CSRF cookie (or a new one)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    fresh = len(cookie) < 32
    return Viewer(
        name=None,
        token=None,
        csrf_cookie=secrets.token_urlsafe(32) if fresh else cookie,
        new_cookie=fresh,
        secure=request.url.scheme == "https",
    )


def anyone(request: Request, settings: SettingsDep, session: SessionDep) -> Viewer:
    """Who is asking, even on a farm with closed reads (the sign-in page itself)."""
    try:
        return viewer(request, settings, session)
    except SignInNeeded:
        return anonymous(request)


ViewerDep = Annotated[Viewer, Depends(viewer)]
AnyoneDep = Annotated[Viewer, Depends(anyone)]


def sign_in(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
    )


def sign_out(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def safe_next(target: str | None) -> str:
    """Where to go after a form: a path of this site only (no scheme, no //host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
