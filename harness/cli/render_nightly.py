"""What ``edgefarm suite`` and ``edgefarm alerts`` print: tables of suites, nights, night
results, webhooks, deliveries and alerts. No command logic here (see :mod:`harness.cli.render`
for the rest of the command's output)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from harness.cli.render import fmt
from harness.tuning import DEFAULT_POPULATION

if TYPE_CHECKING:
    from harness.nightly_client import (
        AlertEventJson,
        AlertJson,
        DeliveryJson,
        NightJson,
        SuiteJson,
        WebhookJson,
    )


def when(text: str | None) -> str:
    """An API time as ``2026-12-03 02:00 UTC``; ``-`` for none."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _state(status: str) -> str:
    colour = {"done": "green", "delivered": "green", "failed": "red", "running": "yellow"}
    return f"[{colour[status]}]{status}[/]" if status in colour else escape(status)


def suites_table(suites: Sequence[SuiteJson]) -> Table:
    table = Table(title="edgefarm suites")
    for column in ("name", "version", "schedule", "state", "next night", "last night"):
        table.add_column(column)
    for suite in suites:
        last = suite["last_night"]
        table.add_row(
            escape(suite["name"]),
            str(suite["version"]),
            f"{suite['schedule']} ({suite['timezone']})",
            "enabled" if suite["enabled"] else "[yellow]paused[/]",
            when(suite["next_run_at"]),
            f"{last['id']} {_state(last['status'])} {when(last['scheduled_for'])}" if last else "-",
        )
    return table


def suite_lines(suite: SuiteJson) -> list[str]:
    """A suite's settings, one per line."""
    spec = suite["spec"]
    devices = spec.get("devices") or {}
    chosen = "all" if devices.get("all") else ", ".join(f"{k}={v}" for k, v in devices.items())
    matrix = spec.get("matrix") or {}
    settings = {k: v for k, v in (spec.get("settings") or {}).items() if v not in (None, [], {})}
    lines = [
        f"suite [bold]{escape(suite['name'])}[/] (id {suite['id']}), version {suite['version']}"
        + ("" if suite["enabled"] else ", [yellow]paused[/]"),
        f"  models:   {escape(', '.join(spec.get('models', [])))}",
        f"  backends: {escape(', '.join(spec.get('backends', [])))}",
        f"  devices:  {escape(chosen)}",
        f"  schedule: {suite['schedule']} ({suite['timezone']}); next night "
        f"{when(suite['next_run_at'])}",
    ]
    if matrix:
        swept = "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in matrix.items())
        lines.append(f"  matrix:   {escape(swept)}")
    if settings:
        lines.append(f"  settings: {escape(str(settings))}")
    tuning = spec.get("tuning")
    if tuning:
        # The defaults go without saying: threads=0 (the runtime's), the search's population.
        defaults = {("threads", 0), ("population", DEFAULT_POPULATION)}
        budget = ", ".join(
            f"{k}={v}" for k, v in tuning.items() if v is not None and (k, v) not in defaults
        )
        lines.append(f"  tuning:   tvm-cpu, {escape(budget)} each night")
    if suite["description"]:
        lines.append(f"  {escape(suite['description'])}")
    return lines


def nights_table(nights: Sequence[NightJson]) -> Table:
    table = Table(title="nights", title_justify="left")
    for column in ("night", "scheduled for", "trigger", "version", "status", "problems"):
        table.add_column(column)
    for night in nights:
        table.add_row(
            str(night["id"]),
            when(night["scheduled_for"]),
            night["trigger"],
            str(night["suite_version"]),
            _state(night["status"]),
            escape("; ".join(p.get("message", "") for p in night["problems"])) or "-",
        )
    return table


def night_results_table(title: str, rows: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    """One row per result document of a night, with the option combination (``variant``)
    it ran with."""
    table = Table(title=title)
    for column, justify in [
        ("model", "left"),
        ("device", "left"),
        ("backend", "left"),
        ("variant", "left"),
        ("status", "left"),
        ("median ms", "right"),
        ("95% CI ms", "right"),
        ("cv", "right"),
        ("RSS MB", "right"),
        ("load ms", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for variant, doc in rows:
        latency = doc.get("latency_ms") or {}
        ci = latency.get("ci95")
        rss = doc.get("peak_rss_kb")
        table.add_row(
            escape(str((doc.get("model") or {}).get("name"))),
            escape(str((doc.get("device") or {}).get("id"))),
            escape(str(doc.get("backend"))),
            escape(variant) or "-",
            "[green]ok[/]" if doc.get("status") == "ok" else "[red]failed[/]",
            fmt(latency.get("median")),
            f"{fmt(ci[0])}-{fmt(ci[1])}" if ci else "-",
            fmt(latency.get("cv"), 2),
            fmt(rss / 1024.0 if rss else None, 1),
            fmt(doc.get("load_ms"), 1),
        )
    return table


def webhooks_table(hooks: Sequence[WebhookJson]) -> Table:
    table = Table(title="webhooks", title_justify="left")
    for column in ("id", "url", "enabled", "created"):
        table.add_column(column)
    for hook in hooks:
        table.add_row(
            str(hook["id"]),
            escape(hook["url"]),
            "yes" if hook["enabled"] else "no",
            when(hook["created_at"]),
        )
    return table


def deliveries_table(deliveries: Sequence[DeliveryJson]) -> Table:
    table = Table(title="deliveries", title_justify="left")
    for column in ("id", "event", "status", "attempts", "answer", "error", "next attempt"):
        table.add_column(column)
    for d in deliveries:
        table.add_row(
            str(d["id"]),
            escape(d["event_key"]),
            _state(d["status"]),
            str(d["attempts"]),
            fmt(d["response_status"]),
            escape(d["error"] or "-"),
            when(d["next_attempt_at"]) if d["status"] == "pending" else "-",
        )
    return table


def change_text(alert: AlertJson) -> str:
    """``+8.0% [+5.0%, +11.0%]`` for a ratio with its interval; the values otherwise."""
    ratio = alert.get("ratio")
    if ratio is None:
        before, after = alert.get("before"), alert.get("after")
        return f"{fmt(before)} -> {fmt(after)}" if before is not None or after is not None else "-"
    low, high = alert.get("ratio_low"), alert.get("ratio_high")
    text = f"{(ratio - 1) * 100:+.1f}%"
    if low is not None and high is not None:
        text += f" [{(low - 1) * 100:+.1f}%, {(high - 1) * 100:+.1f}%]"
    return text


def alerts_table(alerts: Sequence[AlertJson], count: int) -> Table:
    shown = f"{len(alerts)} of {count}" if count > len(alerts) else str(count)
    table = Table(title=f"edgefarm alerts ({shown})")
    columns = ("id", "created", "suite", "series", "kind", "metric", "change", "A/B", "state")
    for column in columns:
        table.add_column(column)
    for alert in alerts:
        s = alert["series"]
        series = f"{s['model_name']} / device {s['device_id']} / {s['backend']}"
        if s["variant"]:
            series += f" / {s['variant']}"
        table.add_row(
            str(alert["id"]),
            when(alert["created_at"]),
            escape(s["suite"]),
            escape(series),
            alert["kind"],
            f"{alert['metric']} {alert['direction']}",
            escape(change_text(alert)),
            alert.get("confirmation_status") or "",
            alert["state"],
        )
    return table


def alert_lines(alert: AlertJson) -> list[str]:
    """One alert: what moved, where, between which nights, and what changed meanwhile."""
    s = alert["series"]
    lines = [
        f"alert [bold]{alert['id']}[/]: {alert['kind']} of {alert['metric']} "
        f"({alert['direction']}) {escape(change_text(alert))}, [bold]{alert['state']}[/]",
        f"  series {s['id']}: suite {escape(s['suite'])}, model {escape(s['model_name'])}, "
        f"device {s['device_id']}, {escape(s['backend'])}"
        + (f" ({escape(s['variant'])})" if s["variant"] else ""),
        f"  before {fmt(alert.get('before'))}, after {fmt(alert.get('after'))}, "
        f"p {fmt(alert.get('pvalue'))}; night {alert['night_id']} (last good night "
        f"{fmt(alert.get('last_good_night_id'))}, first bad night "
        f"{fmt(alert.get('first_bad_night_id'))})",
    ]
    if alert.get("message"):
        lines.append(f"  {escape(alert['message'])}")
    for change in alert.get("changes") or []:
        lines.append(f"  changed: {escape(str(change))}")
    status = alert.get("confirmation_status")
    if status is not None:
        lines.append(
            f"  A/B confirmation: [bold]{status}[/] (job {alert.get('confirmation_job_id')})"
        )
    for run in (alert.get("confirmation") or {}).get("experiments") or []:
        if "verdict" in run:
            lines.append(
                f"    device {run['device_id']}: ratio {run['ratio']:.3f} (95% CI "
                f"{run['ratio_low']:.3f}-{run['ratio_high']:.3f}), p {fmt(run['pvalue'])}, "
                f"{run['blocks']} block pairs: {run['verdict']}"
            )
        else:
            lines.append(f"    device {run['device_id']}: {escape(str(run.get('error')))}")
    return lines


def alert_events_table(events: Sequence[AlertEventJson]) -> Table:
    table = Table(title="history", title_justify="left")
    for column in ("at", "state", "by", "note"):
        table.add_column(column)
    for event in events:
        table.add_row(
            when(event["at"]), event["state"], escape(event["actor"]), escape(event["note"])
        )
    return table
