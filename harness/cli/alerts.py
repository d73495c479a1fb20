"""``edgefarm alerts``: the nightly suites' alerts on a farm, over its API — list (the
default), show, and triage: ``ack``, ``invalid`` (a false alarm), ``fixed``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harness.cli.render import out
from harness.cli.render_nightly import alert_events_table, alert_lines, alerts_table

if TYPE_CHECKING:
    from harness.nightly_client import NightlyClient

Url = Annotated[str | None, typer.Option(help="The farm (default: edgefarm up's).")]
Token = Annotated[str | None, typer.Option(help="API token (default: edgefarm up's).")]
AlertId = Annotated[int, typer.Argument(metavar="ID", help="The alert's id.")]
Note = Annotated[str, typer.Option("--note", "-n", help="Why; kept in the alert's history.")]
State = Annotated[
    str | None,
    typer.Option(help="untriaged | acknowledged | invalid | fixed"),
]
SuiteName = Annotated[str | None, typer.Option("--suite", help="A suite's name.")]
Series = Annotated[int | None, typer.Option(help="A series id.")]
Kind = Annotated[str | None, typer.Option(help="regression | improvement | accuracy | failure")]
Confirmation = Annotated[
    str | None,
    typer.Option(help="pending | confirmed | rejected | unavailable (its A/B confirmation)"),
]
Limit = Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")]


def register(app: typer.Typer) -> None:
    alerts_app = typer.Typer(
        help="Alerts of the nightly suites (newest first), and their triage.",
    )
    alerts_app.callback(invoke_without_command=True)(alerts_default)
    alerts_app.command("list")(alerts_list)
    alerts_app.command("show")(alerts_show)
    alerts_app.command("ack")(alerts_ack)
    alerts_app.command("invalid")(alerts_invalid)
    alerts_app.command("fixed")(alerts_fixed)
    app.add_typer(alerts_app, name="alerts")


def _client(url: str | None, token: str | None) -> NightlyClient:
    from harness.nightly_client import NightlyClient

    return NightlyClient(url, token)


def alerts_default(
    ctx: typer.Context,
    state: State = None,
    suite: SuiteName = None,
    series: Series = None,
    kind: Kind = None,
    confirmation: Confirmation = None,
    limit: Limit = 50,
    url: Url = None,
    token: Token = None,
) -> None:
    """Without a command: list alerts (as `edgefarm alerts list`)."""
    if ctx.invoked_subcommand is None:
        alerts_list(state, suite, series, kind, confirmation, limit, url, token)


def alerts_list(
    state: State = None,
    suite: SuiteName = None,
    series: Series = None,
    kind: Kind = None,
    confirmation: Confirmation = None,
    limit: Limit = 50,
    url: Url = None,
    token: Token = None,
) -> None:
    """List alerts, newest first."""
    client = _client(url, token)
    try:
        found, count = client.alerts(
            state=state,
            suite=suite,
            series=series,
            kind=kind,
            confirmation=confirmation,
            limit=limit,
        )
    finally:
        client.close()
    out.print(alerts_table(found, count))


def alerts_show(
    alert_id: AlertId,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the alert here.")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """One alert: what moved and by how much, what changed meanwhile, its history."""
    client = _client(url, token)
    try:
        alert = client.alert(alert_id)
    finally:
        client.close()
    for line in alert_lines(alert):
        out.print(line, highlight=False, soft_wrap=True)
    if alert.get("events"):
        out.print(alert_events_table(alert["events"]))
    if json_path is not None:
        json_path.write_text(json.dumps(alert, indent=2) + "\n")


def _triage(alert_id: int, state: str, note: str, url: str | None, token: str | None) -> None:
    client = _client(url, token)
    try:
        alert = client.set_alert_state(alert_id, state, note)
    finally:
        client.close()
    event = alert["events"][-1]
    out.print(f"alert {alert_id}: {event['state']} by {event['actor']}", highlight=False)


def alerts_ack(alert_id: AlertId, note: Note = "", url: Url = None, token: Token = None) -> None:
    """Acknowledge an alert: someone is looking at it."""
    _triage(alert_id, "acknowledged", note, url, token)


def alerts_invalid(
    alert_id: AlertId, note: Note = "", url: Url = None, token: Token = None
) -> None:
    """Mark an alert invalid: a false alarm (counted in the false-alarm rate)."""
    _triage(alert_id, "invalid", note, url, token)


def alerts_fixed(alert_id: AlertId, note: Note = "", url: Url = None, token: Token = None) -> None:
    """Mark an alert fixed."""
    _triage(alert_id, "fixed", note, url, token)
