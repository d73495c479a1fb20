"""The pages: dashboard, job, history, compare, devices, alerts (with triage), suites, and
signing in. One route per page; each page's tables come from :mod:`api.web.views`, which
reads through ``harness.farm``.

``?format=csv&table=NAME`` or ``?format=json`` on any page answers its tables instead of the
page. Unknown filter values give an empty view; an unknown id in a path is a 404 page.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep
from api.web import assets, views
from api.web.auth import (
    AnyoneDep,
    BadForm,
    SignInNeeded,
    Viewer,
    ViewerDep,
    anonymous,
    safe_next,
    sign_in,
    sign_out,
    token_name,
)
from api.web.tables import Table, export
from harness.config import Settings
from harness.db import AlertState
from harness.farm import InvalidRequest, NotFound
from harness.farm.alerts import get_alert, set_alert_state

HERE = Path(__file__).parent
STATIC = {
    "web.css": "text/css",
    "web.js": "text/javascript",
}
MAX_NOTE = 2000

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every name a user gave is text, never markup
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _page(
    name: str, context: dict[str, Any], viewer: Viewer | None, status_code: int = 200
) -> HTMLResponse:
    body = templates.get_template(name).render(viewer=viewer, **context)
    response = HTMLResponse(body, status_code=status_code)
    if viewer is not None:
        viewer.finish(response)
    return response


def _error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    return _page(
        "error.html",
        {"title": title, "message": message, "path": request.url.path},
        None,
        status_code,
    )


class PageRoute(APIRoute):
    """A page's route: the farm's errors become pages (sign in, not found, bad form), never
    a JSON body or a traceback."""

    def get_route_handler(self) -> Handler:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except SignInNeeded as exc:
                visitor = anonymous(request)
                back = request.url.path + _query(request) if request.method == "GET" else "/"
                return _page(
                    "signin.html",
                    {
                        "title": "sign in",
                        "reason": exc.reason,
                        "next": safe_next(back),
                        "csrf": visitor.csrf,
                    },
                    visitor,
                    401,
                )
            except NotFound as exc:
                return _error_page(request, 404, "not found", exc.message)
            except (BadForm, InvalidRequest) as exc:
                message = exc.reason if isinstance(exc, BadForm) else exc.message
                return _error_page(request, 400, "bad request", message)
            except RequestValidationError as exc:
                where = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                return _error_page(request, 400, "bad request", where)

        return handler


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


router = APIRouter(include_in_schema=False, route_class=PageRoute, tags=["pages"])

Format = Annotated[str | None, "csv | json: the page's tables instead of the page"]


@dataclass(frozen=True)
class PageRequest:
    """What every page's route takes: the request, the database, who is looking, and
    ``?format=csv|json&table=NAME`` (answer the page's tables instead of the page)."""

    request: Request
    session: Session
    viewer: Viewer
    format: str | None
    table: str | None

    def answer(self, template: str, built: tuple[dict[str, Any], list[Table]]) -> Response:
        """The page ``template`` rendered with a view's context and tables, or the tables."""
        context, tables = built
        if self.format in ("csv", "json"):
            return self.viewer.finish(export(tables, self.format, self.table))
        if self.format is not None:
            raise BadForm(f"format is csv or json, not {self.format!r}")
        request = self.request
        context.setdefault("tables", {t.name: t for t in tables})
        context["url"] = request.url.path + _query(request)
        context["export_base"] = views.export_base(request)
        context["chart_assets"] = _chart_assets(request)
        context["install_command"] = assets.INSTALL_COMMAND
        return _page(template, context, self.viewer)


def _page_request(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    format: str | None = None,
    table: str | None = None,
) -> PageRequest:
    return PageRequest(request, session, viewer, format, table)


PageDep = Annotated[PageRequest, Depends(_page_request)]


@dataclass(frozen=True)
class ChartAssets:
    """Where the page loads uPlot from (the farm itself); absent when it is not installed."""

    script: str
    css: str


def _home(request: Request) -> Path:
    return cast(Settings, request.app.state.settings).home


def _chart_assets(request: Request) -> ChartAssets | None:
    if assets.find(assets.UPLOT, _home(request)) is None:
        return None
    base = f"/static/vendor/{assets.UPLOT.directory}"
    return ChartAssets(script=f"{base}/uPlot.iife.min.js", css=f"{base}/uPlot.min.css")


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The pages' own CSS and JavaScript."""
    if name not in STATIC:
        return Response("no such file", status_code=404, media_type="text/plain")
    return FileResponse(
        HERE / "static" / name,
        media_type=STATIC[name],
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/static/vendor/{directory}/{name}")
def vendor(request: Request, directory: str, name: str) -> Response:
    """The charting library (uPlot), as the set-up installed it."""
    asset = assets.UPLOT
    if directory != asset.directory or name not in asset.files:
        return Response("no such file", status_code=404, media_type="text/plain")
    found = assets.find(asset, _home(request))
    if found is None:
        return Response(
            f"uPlot {asset.version} is not installed on this farm: run {assets.INSTALL_COMMAND}",
            status_code=404,
            media_type="text/plain",
        )
    return FileResponse(
        found / name,
        media_type=assets.media_type(name),
        # The path names the version: a new version is a new URL.
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.get("/", response_class=HTMLResponse)
def dashboard(page: PageDep) -> Response:
    """Recent jobs, active alerts and failures, the phones, each suite's last night."""
    return page.answer("dashboard.html", views.dashboard(page.session))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, page: PageDep) -> Response:
    """One job: its runs, their statistics, histograms, partition reports and provenance."""
    return page.answer("job.html", views.job(page.session, job_id))


@router.get("/history", response_class=HTMLResponse)
def history_page(page: PageDep) -> Response:
    """Medians over time with their p10–p90 bands, alerts and toolchain changes."""
    return page.answer(
        "history.html", views.history(page.session, page.request.query_params.multi_items())
    )


@router.get("/compare", response_class=HTMLResponse)
def compare_page(page: PageDep) -> Response:
    """Two runs (or two jobs) side by side: ratio, significance, toolchain diff."""
    return page.answer("compare.html", views.compare(page.session, dict(page.request.query_params)))


@router.get("/devices", response_class=HTMLResponse)
def devices_page(page: PageDep) -> Response:
    """The phones: health, state, lease, utilisation."""
    return page.answer("devices.html", views.devices(page.session, dict(page.request.query_params)))


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_page(device_id: str, page: PageDep) -> Response:
    """One phone: facts, health, recent runs, canary history."""
    return page.answer("device.html", views.device(page.session, device_id))


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(page: PageDep) -> Response:
    """Alerts with their triage."""
    return page.answer("alerts.html", views.alerts(page.session, dict(page.request.query_params)))


@router.post("/alerts/{alert_id}/triage")
def triage(
    alert_id: str,
    session: SessionDep,
    viewer: ViewerDep,
    state: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/alerts",
) -> Response:
    """Set an alert's state (signed in, with the form's CSRF token)."""
    viewer.check_form(csrf)
    if viewer.name is None:
        raise SignInNeeded("triage needs a signed-in token")
    if state not in AlertState.__members__:
        raise BadForm(f"state is one of {', '.join(AlertState)}, not {state!r}")
    if len(note) > MAX_NOTE or "\x00" in note:
        raise BadForm(f"a note is at most {MAX_NOTE} characters of text")
    number = views.as_id(alert_id)
    if number is None:
        raise NotFound("alert", "id", alert_id)
    alert = get_alert(session, number)
    set_alert_state(session, alert, AlertState(state), actor=viewer.name, note=note)
    return RedirectResponse(safe_next(next), status_code=303)


@router.get("/suites", response_class=HTMLResponse)
def suites_page(page: PageDep) -> Response:
    """Suites and their last nights."""
    return page.answer("suites.html", views.suites(page.session))


@router.get("/suites/{name}", response_class=HTMLResponse)
def suite_page(name: str, page: PageDep) -> Response:
    """One suite: its spec, schedule, nights, series and alerts."""
    return page.answer("suite.html", views.suite(page.session, name))


@router.get("/signin", response_class=HTMLResponse)
def signin_form(viewer: AnyoneDep, next: str = "/") -> Response:
    """The sign-in form."""
    context = {"title": "sign in", "reason": "", "next": safe_next(next), "csrf": viewer.csrf}
    return _page("signin.html", context, viewer)


@router.post("/signin")
def signin(
    settings: SettingsDep,
    session: SessionDep,
    viewer: AnyoneDep,
    token: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the token and start a session."""
    viewer.check_form(csrf)
    token = token.strip()
    if not token or token_name(token, settings, session) is None:
        context = {
            "title": "sign in",
            "reason": "that token is unknown or revoked",
            "next": safe_next(next),
            "csrf": viewer.csrf,
        }
        return _page("signin.html", context, viewer, 401)
    response = RedirectResponse(safe_next(next), status_code=303)
    sign_in(response, token, secure=viewer.secure)
    return response


@router.post("/signout")
def signout(viewer: AnyoneDep, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session."""
    viewer.check_form(csrf)
    response = RedirectResponse("/", status_code=303)
    sign_out(response)
    return response
