"""What the ``edgefarm`` command prints: the two consoles, the tables, the failure lines.

No command logic here: each function takes what a command already holds and returns a table
(or prints lines). Result documents print the same whether ``edgefarm bench`` measured them
here or a farm did.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, NotRequired

from pydantic import MISSING
from rich.console import Console
from rich.table import Table
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.devices.base import DeviceFacts
from harness.devices.records import HealthReport, StateSnapshot

if TYPE_CHECKING:
    from harness.client import DeviceJson, HealthJson, TuningJson
    from harness.db.models import OpCost
    from harness.farm.liveness import ProcessJson
    from harness.measure.document import ResultDocument


class DeviceListing(TypedDict):
    """One device as ``edgefarm devices`` lists it (``--json``: a list of these)."""

    id: str  # the address it was asked at
    facts: NotRequired[DeviceFacts]
    health: HealthReport
    state: NotRequired[StateSnapshot]


console = Console(stderr=True)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 170)


def fmt(value: float | int | None, digits: int = 3) -> str:
    """A number for a table cell: ``-`` for none, significant digits for the very small."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def results_table(documents: Sequence[ResultDocument]) -> Table:
    """The readable summary of result documents."""
    table = Table(title="edgefarm results", show_lines=False)
    for column, justify in [
        ("model", "left"),
        ("device", "left"),
        ("backend", "left"),
        ("threads", "right"),
        ("status", "left"),
        ("median ms", "right"),
        ("95% CI ms", "right"),
        ("p90 ms", "right"),
        ("cv", "right"),
        ("n", "right"),
        ("load ms", "right"),
        ("first ms", "right"),
        ("RSS MB", "right"),
        ("max err", "right"),
        ("cosine", "right"),
        ("top-1", "right"),
    ]:
        # The backend stays on one line ("tvm-cpu (tuned)"); other columns wrap first.
        table.add_column(
            column,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=column == "backend",
        )
    for doc in documents:
        lat, acc, rss = doc.latency_ms, doc.accuracy, doc.peak_rss_kb
        status = "[green]ok[/]" if doc.status == "ok" else "[red]failed[/]"
        table.add_row(
            doc.model.name,
            # Emulated execution is never to be read as a phone's speed.
            f"{doc.device.id} (ISA emulated)" if doc.isa_emulated is True else doc.device.id,
            # A tuned build says so: its figures are not the untuned pipeline's.
            f"{doc.backend} (tuned)" if doc.provenance.tuning is not MISSING else doc.backend,
            # What the run had (TVM's pool, onnxruntime's intra-op threads): defaults differ.
            str(doc.provenance.threads) if doc.provenance.threads is not MISSING else "-",
            status,
            fmt(lat.median if lat else None),
            f"{fmt(lat.ci95[0])}-{fmt(lat.ci95[1])}" if lat else "-",
            fmt(lat.p90 if lat else None),
            fmt(lat.cv if lat else None, 2),
            fmt(lat.n if lat else None),
            fmt(doc.load_ms, 1),
            fmt(doc.first_ms),
            fmt(rss / 1024.0 if rss else None, 1),
            fmt(_finite(acc.max_abs_err) if acc else None),
            fmt(_finite(acc.cosine) if acc else None, 6),
            fmt(acc.top1_agree if acc else None, 2),
        )
    return table


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def print_failures(documents: Sequence[ResultDocument]) -> None:
    """One line on stderr per failed measurement: where it failed and why."""
    for doc in documents:
        if doc.status != "ok" and doc.error is not None:
            err = doc.error
            console.print(
                f"[red]failed[/] {doc.model.name} / {doc.device.id} / "
                f"{doc.backend} at [bold]{err.stage}[/]: {err.message}",
                highlight=False,
                soft_wrap=True,
            )
            for line in divergence_lines(doc):
                console.print(f"  {line}", highlight=False, soft_wrap=True)


def divergence_lines(doc: ResultDocument) -> list[str]:
    """Where an offloading run's outputs first went wrong (``accuracy.first_divergence``),
    as lines: the verdict, and the subgraph's operators and operations."""
    found = doc.accuracy.first_divergence if doc.accuracy is not None else MISSING
    if found is MISSING:
        return []
    lines = [f"first divergence ({found.status}): {found.message}"]
    sub = found.subgraph
    if sub is not None:
        ops = ", ".join(f"{o.op} {'x'.join(map(str, o.shape))}" for o in sub.ops)
        lines.append(f"its operators: {ops}")
        lines.append(f"its operations: {', '.join(sub.operations)}")
    return lines


def partition_table(documents: Sequence[ResultDocument]) -> Table | None:
    """What each offloading measurement sent to the accelerator; None when there is none."""
    rows = [(d, d.partition) for d in documents if d.partition is not MISSING]
    if not rows:
        return None
    table = Table(title="partition")
    for column in (
        "device",
        "backend",
        "mode",
        "subgraphs",
        "ops offloaded",
        "MACs offloaded",
        "boundary KiB",
        "predicted ms",
        "measured ms",
    ):
        table.add_column(
            column, justify="left" if column in ("device", "backend", "mode") else "right"
        )
    for doc, p in rows:
        table.add_row(
            doc.device.id,
            doc.backend,
            p["mode"],
            str(p["subgraphs"]),
            f"{p['ops_offloaded']}/{p['ops_total']}",
            f"{100.0 * p['macs_offloaded_share']:.0f}%",
            fmt(p["boundary_bytes"] / 1024.0, 1),
            fmt(p.get("predicted_ms")),
            fmt(p.get("measured_ms")),
        )
    return table


def print_cpu_ops(documents: Sequence[ResultDocument]) -> None:
    """Operators left on the CPU by offloading backends, counted by (operator, reason)."""
    for doc in documents:
        cpu_ops = doc.partition["cpu_ops"] if doc.partition is not MISSING else []
        if not cpu_ops:
            continue
        counts: dict[tuple[str, str], int] = {}
        for entry in cpu_ops:
            key = (entry["op"], entry["reason"])
            counts[key] = counts.get(key, 0) + 1
        listed = ", ".join(f"{op} x{n} ({reason})" for (op, reason), n in sorted(counts.items()))
        out.print(
            f"{doc.backend} on {doc.device.id} kept on the CPU: {listed}",
            highlight=False,
            soft_wrap=True,
        )


def print_partitions(documents: Sequence[ResultDocument]) -> None:
    """The partition table and the operators kept on the CPU, when anything was offloaded."""
    parts = partition_table(documents)
    if parts is not None:
        out.print(parts)
        print_cpu_ops(documents)


def profile_table(doc: ResultDocument, limit: int = 20) -> Table:
    """The ``limit`` costliest operators of one profiled measurement."""
    table = Table(title=f"per-operator profile: {doc.backend} on {doc.device.id}")
    for column in ("operator", "calls", "total ms", "mean ms"):
        table.add_column(column, justify="left" if column == "operator" else "right")
    for entry in (doc.profile if doc.profile is not MISSING else [])[:limit]:
        table.add_row(entry.name, str(entry.calls), fmt(entry.total_ms), fmt(entry.mean_ms))
    return table


def health_line(code: int, health: HealthJson, url: str) -> str:
    """The first line of ``edgefarm status``: the farm's verdict and its services."""
    beat = health.get("beat")
    age_s = beat["age_s"] if beat else None
    colour = "green" if code == 200 else "red"
    return (
        f"[{colour}]{health.get('status', '?')}[/] at {url}: database "
        f"{health.get('database')}, broker {health.get('broker')}, beat "
        + (
            f"ticked {age_s:.0f} s ago" + ("" if beat and beat["alive"] else " (dead)")
            if age_s is not None
            else "never ticked"
        )
        + f", {health.get('runs_in_flight', 0)} run(s) in flight"
    )


def workers_table(workers: Sequence[ProcessJson]) -> Table:
    """The farm's workers as /healthz reports them."""
    table = Table(title="workers", title_justify="left")
    for column in ("name", "queues", "status", "alive", "heartbeat", "reason"):
        table.add_column(column)
    for w in workers:
        table.add_row(
            w["name"],
            ", ".join(w["queues"]),
            w["status"],
            "yes" if w["alive"] else "[red]no[/]",
            f"{w['heartbeat_age_s']:.0f} s ago",
            w["reason"] or "",
        )
    return table


def tunings_table(tunings: Sequence[TuningJson]) -> Table:
    """Farm tunings: per device class, status, trials measured now and found done before,
    records saved, time, the phones that measured."""
    table = Table(title="tunings", title_justify="left")
    for column in ("id", "device class", "status", "tasks", "measured", "before", "saved"):
        table.add_column(column, justify="right" if column != "device class" else "left")
    table.add_column("seconds", justify="right")
    table.add_column("phones")
    for t in tunings:
        report = t["report"] or {}
        tasks = report.get("tasks") or []
        status = (
            t["status"]
            if t["status"] in ("done", "running", "queued")
            else f"[red]{t['status']}[/]"
        )
        table.add_row(
            str(t["id"]),
            t["device_class"],
            status,
            str(len(tasks)),
            str(sum(int(x.get("measured", 0)) for x in tasks)),
            str(sum(int(x.get("before", 0)) for x in tasks)),
            str(report.get("saved", 0)),
            fmt(report.get("seconds"), 1) if report.get("seconds") is not None else "",
            ", ".join(str(p) for p in report.get("phones", [])),
        )
    return table


def farm_devices_table(devices: Sequence[DeviceJson]) -> Table:
    """The farm's devices as its API lists them, with their liveness."""
    table = Table(title="devices", title_justify="left")
    for column in ("id", "address", "model", "health", "state", "worker", "offered"):
        table.add_column(column)
    for d in devices:
        live = d["liveness"]
        table.add_row(
            str(d["id"]),
            d["address"],
            d["model_name"],
            d["health"] + (f" ({d['health_reason']})" if d["health_reason"] else ""),
            d["state"],
            "alive" if live["alive"] else f"[red]{live['reason'] or 'none'}[/]",
            "yes" if live["offered"] else "no",
        )
    return table


def devices_table(rows: Sequence[DeviceListing]) -> Table:
    """``edgefarm devices``: each device's facts, health and hottest sensor."""
    table = Table(title="edgefarm devices")
    for column in (
        "device",
        "model",
        "SoC",
        "ABI",
        "Android",
        "SDK",
        "NNAPI FL",
        "target",
        "health",
        "free GB",
        "max °C",
    ):
        table.add_column(column)
    for row in rows:
        health = row["health"]
        free = health["free_bytes"]
        state = row.get("state")
        facts = row.get("facts")
        known = (
            (
                facts.model,
                facts.soc,
                facts.abi,
                facts.android_release or "-",
                fmt(facts.sdk_level),
                fmt(facts.nnapi_feature_level),
                facts.target,
            )
            if facts is not None
            else ("-", "-", "-", "-", "-", "-", "-")
        )
        table.add_row(
            row["id"],
            *known,
            "[green]good[/]" if health["ok"] else f"[red]bad[/] {health['problem'] or ''}",
            fmt(free / 1e9 if free else None, 1),
            fmt(state["max_temp_c"] if state else None, 1),
        )
    return table


def tokens_table(rows: Sequence[tuple[str, datetime, datetime | None]]) -> Table:
    """API tokens by (name, created, revoked); never the tokens themselves."""
    table = Table(title="edgefarm API tokens")
    for column in ("name", "created", "revoked"):
        table.add_column(column)
    for name, created, revoked in rows:
        table.add_row(
            name,
            f"{created:%Y-%m-%d %H:%M:%S}",
            f"{revoked:%Y-%m-%d %H:%M:%S}" if revoked else "-",
        )
    return table


def costs_table(rows: Sequence[OpCost]) -> Table:
    """Stored calibration times, one row per (device class, variant, candidate)."""
    table = Table(title=f"edgefarm costs ({len(rows)})")
    for column in ("device class", "variant", "what", "median ms", "n", "device", "measured"):
        table.add_column(column, justify="right" if column in ("median ms", "n") else "left")
    for row in rows:
        table.add_row(
            row.device_class,
            row.variant,
            row.description or row.signature,
            fmt(row.median_ms),
            str(row.samples),
            row.device,
            f"{row.measured_at:%Y-%m-%d %H:%M}",
        )
    return table
