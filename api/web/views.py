"""What each page shows: its context and its tables, read through ``harness.farm``.

Each function returns ``(context, tables)``; the template renders the tables and the exports
hold the same rows. Filters come as text from the URL and are read leniently: a value that
names nothing (an unknown model, a device id that is not a number, an unknown state) gives an
empty view, with a note of which filter matched nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.schemas_nightly import SuitePublic
from api.web import charts
from api.web.tables import Cell, Column, Table, iso, number, text
from harness.db import AlertKind, AlertState, Device, Job, Model, Night, Result, Run, Series
from harness.farm import NotFound, queries
from harness.farm import web_queries as wq
from harness.farm.alerts import AlertFilter, list_alerts, suite_names
from harness.farm.liveness import device_worker, liveness
from harness.farm.suite_queries import last_nights, list_nights, suites_page
from harness.farm.suites import get_suite
from harness.farm.web_queries import as_id
from harness.regression.canary import CANARY_NAME
from harness.regression.difference import Difference, sample_difference

Context = dict[str, Any]
PAGE_ALERTS = 200
PAGE_DEVICES = 1000
PAGE_POINTS = 100  # rows of the history's table on the page (its exports hold every point)

__all__ = ["as_id"]


def export_base(request: Request) -> str:
    """The page's URL without ``format``/``table``, ready for ``&format=...``."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("format", "table")]
    query = urlencode(kept)
    return request.url.path + "?" + (query + "&" if query else "")


def history_href(**filters: object) -> str:
    return "/history?" + urlencode({k: str(v) for k, v in filters.items() if v not in (None, "")})


def _runs_text(runs: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(runs.items())) or "no runs"


def _pct(share: float) -> Cell:
    return Cell(round(share, 6), f"{share * 100:.2f}%", css="num")


# Dashboard.


def dashboard(session: Session) -> tuple[Context, list[Table]]:
    jobs = Table(
        "jobs",
        "Recent jobs",
        [
            Column("id", "job"),
            Column("model", "model"),
            Column("status", "status"),
            Column("runs", "runs"),
            Column("submitted_by", "by"),
            Column("created_at", "created"),
        ],
        empty="no jobs yet",
    )
    for row in wq.recent_jobs(session):
        href = f"/jobs/{row.job.id}"
        jobs.add(
            id=text(row.job.id, href),
            model=text(row.model_name, href),
            status=Cell(str(row.job.status), str(row.job.status), css=f"st-{row.job.status}"),
            runs=text(_runs_text(row.runs)),
            submitted_by=text(row.job.submitted_by),
            created_at=text(row.job.created_at),
        )
    alerts = _alerts_table(session, AlertFilter(state=AlertState.untriaged), limit=10)
    alerts.title = "Active alerts (untriaged)"
    failures = Table(
        "failures",
        "Recent failures",
        [
            Column("run", "run"),
            Column("job", "job"),
            Column("model", "model"),
            Column("device", "device"),
            Column("backend", "backend"),
            Column("stage", "stage"),
            Column("message", "message"),
        ],
        empty="no failed runs",
    )
    for run, name in wq.recent_failures(session):
        failures.add(
            run=text(run.id, f"/jobs/{run.job_id}#run-{run.id}"),
            job=text(run.job_id, f"/jobs/{run.job_id}"),
            model=text(name),
            device=text(run.device_id, f"/devices/{run.device_id}"),
            backend=text(run.backend),
            stage=text(run.error_stage),
            message=text((run.error_message or "")[:200]),
        )
    devices = _devices_table(
        session, queries.list_devices(session=session, limit=PAGE_DEVICES).items
    )
    suites = _suites_table(session)
    return {"title": "dashboard"}, [jobs, alerts, failures, devices, suites]


# Devices.


def _devices_table(session: Session, rows: list[Device]) -> Table:
    table = Table(
        "devices",
        "Phones",
        [
            Column("id", "id"),
            Column("model", "model"),
            Column("soc", "SoC"),
            Column("pool", "pool"),
            Column("health", "health"),
            Column("health_reason", "reason"),
            Column("state", "state"),
            Column("current_run", "run"),
            Column("lease_expires_at", "lease until"),
            Column("worker_alive", "worker"),
            Column("last_seen_at", "last seen"),
            Column("utilisation_24h", "busy 24 h", numeric=True),
            Column("runs_24h", "runs 24 h", numeric=True),
        ],
        empty="no devices registered",
    )
    report = liveness(session)
    use = wq.utilisation(session, [d.id for d in rows])
    for d in rows:
        href = f"/devices/{d.id}"
        worker = device_worker(d, report)
        alive = "alive" if worker["alive"] else (worker["reason"] or "down")
        u = use[d.id]
        table.add(
            id=text(d.id, href),
            model=text(d.model_name or d.address, href),
            soc=text(d.soc),
            pool=text(d.pool),
            health=Cell(str(d.health), str(d.health), css=f"h-{d.health}"),
            health_reason=text(d.health_reason),
            state=text(str(d.state)),
            current_run=text(d.current_run_id),
            lease_expires_at=text(d.lease_expires_at),
            worker_alive=Cell(bool(worker["alive"]), alive),
            last_seen_at=text(d.last_seen_at),
            utilisation_24h=_pct(u.share),
            runs_24h=number(u.runs),
        )
    return table


def devices(session: Session, params: dict[str, str]) -> tuple[Context, list[Table]]:
    pool = params.get("pool") or None
    health = params.get("health") or None
    soc = params.get("soc") or None
    rows = queries.list_devices(session=session, limit=PAGE_DEVICES, pool=pool, health=health).items
    if soc is not None:
        rows = [d for d in rows if d.soc == soc]
    return {"title": "devices", "filters": {"pool": pool, "health": health, "soc": soc}}, [
        _devices_table(session, rows)
    ]


def device(session: Session, device_id: str) -> tuple[Context, list[Table]]:
    number_id = as_id(device_id)
    if number_id is None:
        raise NotFound("device", "id", device_id)
    row = queries.get_device(number_id, session=session)
    overview = _devices_table(session, [row])
    overview.name, overview.title = "device", "Device"
    facts = Table("facts", "Facts", [Column("key", "fact"), Column("value", "value")])
    for key, value in sorted((row.facts or {}).items()):
        facts.add(key=text(key), value=text(value if not isinstance(value, dict) else str(value)))
    runs = _run_table(wq.device_runs(session, number_id), "runs", "Recent runs")
    canary = wq.canary_history(session, number_id, CANARY_NAME)
    chart = None
    if canary:
        series = wq.HistorySeries(
            model_name=CANARY_NAME,
            device_id=number_id,
            device_label=row.model_name,
            backend="tvm-cpu",
            total=len(canary),
            points=[
                wq.Point(at=at, median_ms=m, low_ms=None, high_ms=None, status="ok", job_id=j)
                for at, m, j in canary
            ],
            changes=[],
            span_days=0,
        )
        chart = charts.history_data([series])
    context = {"title": f"device {row.id}", "device": row, "canary_chart": chart}
    return context, [overview, facts, runs]


def _run_table(rows: list[wq.RunRow], name: str, title: str) -> Table:
    table = Table(
        name,
        title,
        [
            Column("run", "run"),
            Column("job", "job"),
            Column("model", "model"),
            Column("backend", "backend"),
            Column("status", "status"),
            Column("median_ms", "median ms", numeric=True),
            Column("created_at", "created"),
            Column("error", "error"),
        ],
        empty="no runs",
    )
    for r in rows:
        table.add(
            run=text(r.run.id, f"/jobs/{r.run.job_id}#run-{r.run.id}"),
            job=text(r.run.job_id, f"/jobs/{r.run.job_id}"),
            model=text(r.model_name),
            backend=text(r.run.backend),
            status=Cell(str(r.run.status), str(r.run.status), css=f"st-{r.run.status}"),
            median_ms=number(r.result.median_ms if r.result else None),
            created_at=text(r.run.created_at),
            error=text(r.run.error_message[:200] if r.run.error_message else None),
        )
    return table


# Jobs.

STAT_COLUMNS = [
    ("median_ms", "median ms"),
    ("ci_low_ms", "CI low"),
    ("ci_high_ms", "CI high"),
    ("p90_ms", "p90"),
    ("p99_ms", "p99"),
    ("cv", "cv"),
    ("n", "n"),
    ("load_ms", "load ms"),
    ("first_ms", "first ms"),
    ("peak_rss_kb", "peak RSS KiB"),
]


def _stat_cells(result: Result | None) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    for key, _ in STAT_COLUMNS:
        value = getattr(result, key) if result is not None else None
        digits = 4 if key == "cv" else 3
        cells[key] = number(value, digits)
    return cells


def job(session: Session, job_id: str) -> tuple[Context, list[Table]]:
    number_id = as_id(job_id)
    if number_id is None:
        raise NotFound("job", "id", job_id)
    found = queries.get_job(number_id, session=session)
    model = session.get(Model, found.model_id)
    model_name = model.name if model is not None else ""
    versions = wq.model_versions(session, model_name) if model is not None else []
    devices_by_id = {
        d.id: d
        for d in session.scalars(
            select(Device).where(Device.id.in_({r.device_id for r in found.runs}))
        )
    }
    runs = Table(
        "runs",
        "Runs",
        [
            Column("run", "run"),
            Column("device", "device"),
            Column("backend", "backend"),
            Column("status", "status"),
            Column("stage", "stage"),
            Column("message", "message"),
            Column("attempts", "attempts", numeric=True),
            *[Column(k, label, numeric=True) for k, label in STAT_COLUMNS],
            Column("accuracy_passed", "accuracy"),
            Column("history", "history"),
            Column("compare", "compare"),
        ],
    )
    details: list[dict[str, Any]] = []
    tables: list[Table] = [runs]
    for run in found.runs:
        result = run.result
        device_row = devices_by_id.get(run.device_id)
        device_label = device_row.model_name if device_row is not None else str(run.device_id)
        hist = history_href(model=model_name, device=run.device_id, backend=run.backend)
        previous = _previous_run(session, found, run, versions) if result is not None else None
        compare = (
            text(f"vs run {previous}", f"/compare?a={previous}&b={run.id}")
            if previous is not None
            else text(None)
        )
        runs.add(
            run=text(run.id, f"#run-{run.id}"),
            device=text(f"{device_label} #{run.device_id}", f"/devices/{run.device_id}"),
            backend=text(run.backend),
            status=Cell(str(run.status), str(run.status), css=f"st-{run.status}"),
            stage=text(run.error_stage),
            message=text(run.error_message),
            attempts=number(run.attempts),
            **_stat_cells(result),
            accuracy_passed=text(result.accuracy_passed if result is not None else None),
            history=text("history", hist),
            compare=compare,
        )
        detail = _run_detail(run, result, tables)
        detail["device_label"] = device_label
        detail["history_href"] = hist
        details.append(detail)
    settings = Table("settings", "Settings", [Column("key", "setting"), Column("value", "value")])
    for key, value in sorted((found.settings or {}).items()):
        settings.add(
            key=text(key),
            value=text(value if isinstance(value, str | int | float | bool) else _json(value)),
        )
    tables.append(settings)
    context = {
        "title": f"job {found.id}",
        "job": found,
        "model_name": model_name,
        "model": model,
        "details": details,
    }
    return context, tables


def _json(value: object) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _previous_run(session: Session, job_row: Job, run: Run, versions: list[int]) -> int | None:
    """The run before ``run`` in its series (same model name, device, backend)."""
    result = run.result
    if result is None or not versions:
        return None
    model = Result.model_id == versions[0] if len(versions) == 1 else Result.model_id.in_(versions)
    return session.scalar(
        select(Result.run_id)
        .where(
            model,
            Result.device_id == run.device_id,
            Result.backend == run.backend,
            Result.created_at < result.created_at,
        )
        .order_by(Result.created_at.desc(), Result.id.desc())
        .limit(1)
    )


def _run_detail(run: Run, result: Result | None, tables: list[Table]) -> dict[str, Any]:
    document: dict[str, Any] = result.document if result is not None else {}
    detail: dict[str, Any] = {"run": run, "result": result, "document": document}
    detail["histogram"] = (
        charts.histogram_data(result.samples_ms or [], median=result.median_ms)
        if result is not None and result.samples_ms
        else None
    )
    provenance = Table(
        f"provenance_{run.id}", "Provenance", [Column("key", "key"), Column("value", "value")]
    )
    for key, value in (document.get("provenance") or {}).items():
        provenance.add(
            key=text(key),
            value=text(value if isinstance(value, str | int | float | bool) else _json(value)),
        )
    for key, value in (document.get("device") or {}).items():
        provenance.add(
            key=text(f"device.{key}"),
            value=text(value if isinstance(value, str | int | float | bool) else _json(value)),
        )
    tables.append(provenance)
    detail["provenance"] = provenance
    state = Table(
        f"state_{run.id}",
        "Device state",
        [Column("what", "what"), Column("before", "before"), Column("after", "after")],
    )
    before = document.get("state_before") or {}
    after = document.get("state_after") or {}
    state.add(
        what=text("hottest °C"),
        before=number(before.get("max_temp_c"), 1),
        after=number(after.get("max_temp_c"), 1),
    )
    for zone in sorted(set(before.get("thermal_c") or {}) | set(after.get("thermal_c") or {})):
        state.add(
            what=text(f"thermal {zone} °C"),
            before=number((before.get("thermal_c") or {}).get(zone), 1),
            after=number((after.get("thermal_c") or {}).get(zone), 1),
        )
    battery_b, battery_a = before.get("battery") or {}, after.get("battery") or {}
    if battery_b or battery_a:
        state.add(
            what=text("battery %"),
            before=number(battery_b.get("level_pct")),
            after=number(battery_a.get("level_pct")),
        )
    cooldown = document.get("cooldown") or {}
    if cooldown:
        state.add(
            what=text("cooldown waited s"),
            before=number(cooldown.get("waited_s"), 2),
            after=text(
                f"cooled: {cooldown.get('cooled')}, threshold {cooldown.get('threshold_c')} °C"
            ),
        )
    tables.append(state)
    detail["state"] = state
    partition = document.get("partition")
    detail["partition"] = partition
    detail["cost"] = None
    if partition:
        by_type = Table(
            f"partition_{run.id}",
            "Offloaded by op type",
            [
                Column("op", "operator"),
                Column("offloaded", "offloaded", numeric=True),
                Column("total", "total", numeric=True),
                Column("share", "share", numeric=True),
            ],
        )
        for op, counts in sorted((partition.get("by_op_type") or {}).items()):
            total = counts.get("total") or 0
            share = (counts.get("offloaded") or 0) / total if total else 0.0
            by_type.add(
                op=text(op),
                offloaded=number(counts.get("offloaded")),
                total=number(total),
                share=_pct(share),
            )
        cpu_ops = Table(
            f"cpu_ops_{run.id}",
            "Operators kept on the CPU",
            [Column("op", "operator"), Column("reason", "reason"), Column("detail", "detail")],
            empty="every operator was offloaded",
        )
        for op in partition.get("cpu_ops") or []:
            cpu_ops.add(
                op=text(op.get("op")), reason=text(op.get("reason")), detail=text(op.get("detail"))
            )
        tables += [by_type, cpu_ops]
        detail["by_type"], detail["cpu_ops"] = by_type, cpu_ops
        cost = partition.get("cost")
        detail["cost"] = _cost_tables(run.id, partition, cost, result) if cost else None
        if detail["cost"]:
            tables += detail["cost"]
    profile = document.get("profile")
    detail["profile"] = None
    if profile:
        prof = Table(
            f"profile_{run.id}",
            "Per-operator profile (costliest first)",
            [
                Column("name", "operator"),
                Column("calls", "calls", numeric=True),
                Column("total_ms", "total ms", numeric=True),
                Column("mean_ms", "mean ms", numeric=True),
                Column("share", "share", numeric=True),
            ],
        )
        whole = sum(op.get("total_ms") or 0.0 for op in profile)
        for op in profile:
            total_ms = op.get("total_ms")
            prof.add(
                name=text(op.get("name")),
                calls=number(op.get("calls")),
                total_ms=number(total_ms),
                mean_ms=number(op.get("mean_ms"), 4),
                share=_pct((total_ms or 0.0) / whole) if whole else text(None),
            )
        tables.append(prof)
        detail["profile"] = prof
    return detail


def _cost_tables(
    run_id: int, partition: dict[str, Any], cost: dict[str, Any], result: Result | None
) -> list[Table]:
    """A cost-guided partition: what the cost model predicted against what the run measured,
    and each candidate's costs on the CPU and on the accelerator (offloaded or not)."""
    summary = Table(
        f"cost_{run_id}",
        f"Cost model ({cost.get('device_class', '?')}): predicted vs measured",
        [
            Column("what", "what"),
            Column("predicted_ms", "predicted ms", numeric=True),
            Column("measured_ms", "measured ms", numeric=True),
            Column("error", "measured / predicted", numeric=True),
        ],
    )
    measured = partition.get("measured_ms")
    if measured is None and result is not None:
        measured = result.median_ms
    predicted = partition.get("predicted_ms")
    summary.add(
        what=text("this partition (chosen)"),
        predicted_ms=number(predicted),
        measured_ms=number(measured),
        error=number(measured / predicted if measured and predicted else None, 3),
    )
    for key, label in (
        ("predicted_cpu_only_ms", "everything on the CPU"),
        ("predicted_all_ms", "every candidate offloaded"),
    ):
        summary.add(
            what=text(label),
            predicted_ms=number(cost.get(key)),
            measured_ms=text(None),
            error=text(None),
        )
    candidates = Table(
        f"candidates_{run_id}",
        "Offload candidates",
        [
            Column("index", "#", numeric=True),
            Column("ops", "operators"),
            Column("placement", "placed on"),
            Column("cpu_ms", "CPU ms", numeric=True),
            Column("accel_ms", "accelerator ms", numeric=True),
            Column("saving_ms", "saving ms", numeric=True),
        ],
        empty="no offload candidates",
    )
    for index, candidate in enumerate(cost.get("candidates") or [], start=1):
        cpu_ms, accel_ms = candidate.get("cpu_ms"), candidate.get("accel_ms")
        offloaded = bool(candidate.get("offloaded"))
        candidates.add(
            index=number(index),
            ops=text(" + ".join(str(op) for op in candidate.get("ops") or []) or None),
            placement=Cell(offloaded, "accelerator" if offloaded else "CPU"),
            cpu_ms=number(cpu_ms, 4),
            accel_ms=number(accel_ms, 4),
            saving_ms=number(
                cpu_ms - accel_ms
                if isinstance(cpu_ms, int | float) and isinstance(accel_ms, int | float)
                else None,
                4,
            ),
        )
    subgraphs = Table(
        f"subgraphs_{run_id}",
        "Offloaded subgraphs (predicted)",
        [
            Column("index", "#", numeric=True),
            Column("ops", "operators", numeric=True),
            Column("accel_ms", "accelerator ms", numeric=True),
            Column("boundary_bytes", "boundary bytes", numeric=True),
            Column("boundary_ms", "boundary ms", numeric=True),
        ],
        empty="nothing offloaded",
    )
    for index, sub in enumerate(cost.get("subgraphs") or [], start=1):
        subgraphs.add(
            index=number(index),
            ops=number(sub.get("ops")),
            accel_ms=number(sub.get("accel_ms"), 4),
            boundary_bytes=number(sub.get("boundary_bytes")),
            boundary_ms=number(sub.get("boundary_ms"), 4),
        )
    return [summary, candidates, subgraphs]


# History.


def _parse_time(value: str | None) -> tuple[datetime | None, bool]:
    """(the time, whether it was readable); a date alone is its midnight UTC."""
    if not value:
        return None, True
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None, False
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), True


HISTORY_KEYS = ("model", "device", "soc", "backend", "status", "since", "until", "regressions")
# Criteria that take several values (repeated, or comma-separated for ids and backends): their
# series are overlaid.
MULTI_KEYS = ("model", "device", "soc", "backend")
SPLIT_KEYS = ("device", "backend")  # a model's or SoC's name may hold a comma


def history_params(params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The history's criteria from the URL, in a canonical order: repeated values kept, comma
    lists split, blanks and unknown keys dropped, each value once."""
    out: list[tuple[str, str]] = []
    for key in HISTORY_KEYS:
        values = [v.strip() for k, v in params if k == key and v.strip()]
        if key in SPLIT_KEYS:
            values = [part.strip() for v in values for part in v.split(",") if part.strip()]
        if key not in MULTI_KEYS:
            values = values[-1:]
        for value in dict.fromkeys(values):
            out.append((key, value))
    return out


def history(session: Session, params: Sequence[tuple[str, str]]) -> tuple[Context, list[Table]]:
    given = history_params(params)
    values: dict[str, tuple[str, ...]] = {
        key: tuple(v for k, v in given if k == key) for key in HISTORY_KEYS
    }
    last = {key: found[-1] if (found := values[key]) else None for key in HISTORY_KEYS}
    since, since_ok = _parse_time(last["since"])
    until, until_ok = _parse_time(last["until"])
    filters = wq.HistoryFilter(
        models=values["model"],
        devices=values["device"],
        socs=values["soc"],
        backends=values["backend"],
        status=last["status"],
        since=since,
        until=until,
        regressions_only=last["regressions"] in ("1", "on", "true", "yes"),
    )
    view = wq.history(session, filters) if since_ok and until_ok else wq.History([])
    series = view.series
    notes = [] if since_ok and until_ok else ["since/until are ISO 8601 dates: nothing matches"]
    limits = []
    if view.recent_since is not None:
        limits.append(
            f"No model named: the newest {view.recent:,} results in view, since "
            f"{view.recent_since:%Y-%m-%d %H:%M} UTC. Name a model (or follow a series below) "
            "for its whole history."
        )
    if view.scanned:
        limits.append(
            f"Series measured among the newest {view.scanned:,} results in view; one not "
            "measured since is not listed: name it (model, device, backend)."
        )
    base = [(k, v) for k, v in given if k not in ("since", "until")]
    chart = charts.history_data(series)
    points = Table(
        "points",
        "Runs in view",
        [
            Column("series", "series"),
            Column("at", "when"),
            Column("runs", "runs", numeric=True),
            Column("run", "run"),
            Column("job", "job"),
            Column("median_ms", "median ms", numeric=True),
            Column("p10_ms", "p10 ms", numeric=True),
            Column("p90_ms", "p90 ms", numeric=True),
            Column("status", "status"),
            Column("tvm_version", "TVM"),
            Column("edgefarm_version", "edgefarm"),
            Column("alerts", "alerts"),
            Column("compare", "compare"),
        ],
        empty="no runs match these filters",
        page_rows=PAGE_POINTS,
    )
    legend = []
    changes = Table(
        "changes",
        "Toolchain changes",
        [
            Column("at", "when"),
            Column("series", "series"),
            Column("what", "what"),
            Column("before", "before"),
            Column("after", "after"),
        ],
        empty="no toolchain change in view",
    )
    for index, s in enumerate(series):
        one = history_href(model=s.model_name, device=s.device_id, backend=s.backend)
        legend.append(
            {
                "number": f"S{index + 1}",
                "label": s.label,
                "color": charts.color(index),
                "href": one,
                "total": s.total,
                "points": len(s.points),
                "span_days": s.span_days,
            }
        )
        # Each run's previous measured run in its series (for "compare with the previous").
        previous: list[int | None] = []
        last_ok: int | None = None
        for p in s.points:
            previous.append(last_ok if p.run_id is not None else None)
            if p.run_id is not None and p.median_ms is not None:
                last_ok = p.run_id
        for p, previous_run in zip(reversed(s.points), reversed(previous), strict=True):
            points.add(
                # The page shows the series' number (its legend names it); exports the name.
                series=Cell(s.label, f"S{index + 1}", one),
                at=Cell(iso(p.at), p.at.strftime("%Y-%m-%d %H:%M")),
                runs=number(p.runs),
                run=text(p.run_id, f"/jobs/{p.job_id}#run-{p.run_id}" if p.run_id else None),
                job=text(p.job_id, f"/jobs/{p.job_id}" if p.job_id else None),
                median_ms=number(p.median_ms),
                p10_ms=number(p.low_ms),
                p90_ms=number(p.high_ms),
                status=text(p.status),
                tvm_version=text(p.toolchain.get("tvm_version") or None),
                edgefarm_version=text(p.toolchain.get("edgefarm_version") or None),
                alerts=text(
                    " ".join(str(a) for a in p.alerts) or None,
                    f"/alerts#alert-{p.alerts[0]}" if p.alerts else None,
                ),
                compare=(
                    text(f"vs run {previous_run}", f"/compare?a={previous_run}&b={p.run_id}")
                    if previous_run is not None and p.median_ms is not None
                    else text(None)
                ),
            )
        for change in s.changes:
            changes.add(
                at=text(change.at),
                series=text(s.label, one),
                what=text(change.key),
                before=text(change.before),
                after=text(change.after),
            )
    zoom_out = None
    if since is not None and until is not None and until > since:
        width = until - since
        zoom_out = charts.zoom_href(base, since - width / 2, until + width / 2)
    context = {
        "title": "history",
        "chart_data": chart,
        "legend": legend,
        "given": {key: ", ".join(found) for key, found in values.items() if found},
        "notes": notes,
        "limits": limits,
        "zoom_out": zoom_out,
        "reset": "/history?" + urlencode(base),
        "max_points": wq.MAX_POINTS,
        "max_series": wq.MAX_SERIES,
    }
    return context, [points, changes]


# Compare.


def _run_side(session: Session, value: str | None) -> wq.RunRow | None:
    run_id = as_id(value)
    return wq.run_row(session, run_id) if run_id is not None else None


COMPARED = [
    ("median_ms", "median ms", 3),
    ("ci_low_ms", "median CI low", 3),
    ("ci_high_ms", "median CI high", 3),
    ("p90_ms", "p90 ms", 3),
    ("p99_ms", "p99 ms", 3),
    ("cv", "cv", 4),
    ("n", "n", 0),
    ("load_ms", "load ms", 3),
    ("first_ms", "first inference ms", 3),
    ("peak_rss_kb", "peak RSS KiB", 0),
    ("max_abs_err", "max abs error", 6),
    ("cosine", "cosine", 6),
]


def compare(session: Session, params: dict[str, str]) -> tuple[Context, list[Table]]:
    context: Context = {"title": "compare", "a": None, "b": None, "difference": None, "notes": []}
    if params.get("job_a") or params.get("job_b"):
        return _compare_jobs(session, params, context)
    side_a = _run_side(session, params.get("a"))
    side_b = _run_side(session, params.get("b"))
    metrics = Table(
        "metrics",
        "Side by side",
        [
            Column("metric", "metric"),
            Column("a", "A", numeric=True),
            Column("b", "B", numeric=True),
            Column("ratio", "B / A", numeric=True),
        ],
        empty="name two runs: /compare?a=RUN&b=RUN",
    )
    diff_table = Table(
        "toolchain",
        "Toolchain diff",
        [Column("key", "what"), Column("a", "A"), Column("b", "B")],
        empty="same toolchain",
    )
    if side_a is None or side_b is None:
        missing = [k for k, s in (("a", side_a), ("b", side_b)) if s is None]
        context["notes"].append(f"no run {', '.join(repr(params.get(k, '')) for k in missing)}")
        return context, [metrics, diff_table]
    context["a"], context["b"] = side_a, side_b
    ra, rb = side_a.result, side_b.result
    for key, label, digits in COMPARED:
        va = getattr(ra, key) if ra is not None else None
        vb = getattr(rb, key) if rb is not None else None
        ratio = (
            vb / va if isinstance(va, int | float) and isinstance(vb, int | float) and va else None
        )
        metrics.add(
            metric=text(label),
            a=number(va, digits),
            b=number(vb, digits),
            ratio=number(ratio, 4),
        )
    metrics.add(
        metric=text("accuracy passed"),
        a=text(ra.accuracy_passed if ra else None),
        b=text(rb.accuracy_passed if rb else None),
        ratio=text(None),
    )
    difference: Difference | None = None
    if ra is not None and rb is not None and ra.samples_ms and rb.samples_ms:
        try:
            difference = sample_difference(ra.samples_ms, rb.samples_ms)
        except ValueError as exc:
            context["notes"].append(f"no significance test: {exc}")
    context["difference"] = difference
    stats = Table(
        "significance",
        "Significance (raw samples)",
        [Column("what", "what"), Column("value", "value", numeric=True)],
        empty="no raw samples on both sides",
    )
    if difference is not None:
        stats.add(what=text("ratio B/A (Hodges-Lehmann)"), value=number(difference.ratio, 4))
        stats.add(what=text("ratio 95% CI low"), value=number(difference.ratio_low, 4))
        stats.add(what=text("ratio 95% CI high"), value=number(difference.ratio_high, 4))
        stats.add(
            what=text("Mann-Whitney U p-value"),
            value=Cell(difference.pvalue, f"{difference.pvalue:.3g}", css="num"),
        )
        stats.add(what=text("effect size (rank-biserial)"), value=number(difference.effect_size, 3))
        stats.add(what=text("verdict"), value=text(difference.verdict))
    model_a = _model_sha(session, ra)
    model_b = _model_sha(session, rb)
    if ra is not None and rb is not None:
        for key, va, vb in wq.toolchain_diff(
            wq.toolchain_of(ra, model_a), wq.toolchain_of(rb, model_b)
        ):
            diff_table.add(key=text(key), a=text(va or None), b=text(vb or None))
    return context, [metrics, stats, diff_table]


def _model_sha(session: Session, result: Result | None) -> str:
    if result is None:
        return ""
    return session.scalar(select(Model.sha256).where(Model.id == result.model_id)) or ""


def _compare_jobs(
    session: Session, params: dict[str, str], context: Context
) -> tuple[Context, list[Table]]:
    job_a, job_b = as_id(params.get("job_a")), as_id(params.get("job_b"))
    pairs = Table(
        "pairs",
        "Matching runs",
        [
            Column("series", "model · device · backend"),
            Column("a", "A median ms", numeric=True),
            Column("b", "B median ms", numeric=True),
            Column("ratio", "B / A", numeric=True),
            Column("compare", "compare"),
        ],
        empty="no (model, device, backend) measured by both jobs",
    )
    context["jobs"] = (job_a, job_b)
    if job_a is None or job_b is None:
        context["notes"].append("name two jobs: /compare?job_a=JOB&job_b=JOB")
        return context, [pairs]
    for pair in wq.job_pairs(session, job_a, job_b):
        ma = pair.a.result.median_ms if pair.a.result else None
        mb = pair.b.result.median_ms if pair.b.result else None
        pairs.add(
            series=text(
                f"{pair.model_name} · {pair.a.device_label} #{pair.device_id} · {pair.backend}"
            ),
            a=number(ma),
            b=number(mb),
            ratio=number(mb / ma if ma and mb else None, 4),
            compare=text("compare", f"/compare?a={pair.a.run.id}&b={pair.b.run.id}"),
        )
    return context, [pairs]


# Alerts and suites.


def _alerts_table(
    session: Session, filters: AlertFilter | None, *, limit: int = PAGE_ALERTS
) -> Table:
    """The alerts ``filters`` select (None: a filter named nothing, so none)."""
    table = Table(
        "alerts",
        "Alerts",
        [
            Column("id", "alert"),
            Column("suite", "suite"),
            Column("series", "series"),
            Column("kind", "kind"),
            Column("metric", "metric"),
            Column("ratio", "ratio", numeric=True),
            Column("ratio_low", "low", numeric=True),
            Column("ratio_high", "high", numeric=True),
            Column("before", "before", numeric=True),
            Column("after", "after", numeric=True),
            Column("changes", "what changed"),
            Column("state", "state"),
            Column("created_at", "raised"),
        ],
        empty="no alerts",
    )
    if filters is None:
        table.empty = "no alerts match these filters"
        return table
    page = list_alerts(session, filters, limit=limit)
    names = suite_names(session, {a.series_id for a in page.items})
    labels = dict(
        session.execute(
            select(Device.id, Device.model_name).where(
                Device.id.in_({a.series.device_id for a in page.items})
            )
        ).all()
    )
    for alert in page.items:
        s = alert.series
        series_label = (
            f"{s.model_name} · {labels.get(s.device_id, '')} #{s.device_id} · {s.backend}"
        )
        if s.variant:
            series_label += f" · {s.variant}"
        changes = "; ".join(_change_text(c) for c in alert.changes or [])
        table.add(
            id=text(alert.id, f"/alerts#alert-{alert.id}"),
            suite=text(names.get(alert.series_id)),
            series=text(
                series_label,
                history_href(model=s.model_name, device=s.device_id, backend=s.backend),
            ),
            kind=text(str(alert.kind)),
            metric=text(alert.metric),
            ratio=number(alert.ratio, 4),
            ratio_low=number(alert.ratio_low, 4),
            ratio_high=number(alert.ratio_high, 4),
            before=number(alert.before),
            after=number(alert.after),
            changes=text(changes or None),
            state=Cell(str(alert.state), str(alert.state), css=f"a-{alert.state}"),
            created_at=text(alert.created_at),
        )
    return table


def _change_text(change: object) -> str:
    if isinstance(change, dict):
        what = change.get("what") or change.get("key") or change.get("name") or ""
        return f"{what}: {change.get('before', '')} → {change.get('after', '')}"
    return str(change)


def alerts(session: Session, params: dict[str, str]) -> tuple[Context, list[Table]]:
    state = params.get("state") or None
    kind = params.get("kind") or None
    suite = params.get("suite") or None
    regressions = params.get("regressions") in ("1", "on", "true", "yes")
    if regressions:
        kind = kind or "regression"
    known = (state is None or state in AlertState.__members__) and (
        kind is None or kind in AlertKind.__members__
    )
    if regressions and kind != "regression":
        known = False
    filters = AlertFilter(
        state=AlertState(state) if known and state else None,
        kind=AlertKind(kind) if known and kind else None,
        suite=suite,
    )
    table = _alerts_table(session, filters if known else None)
    context = {
        "title": "alerts",
        "given": {
            "state": state or "",
            "kind": kind or "",
            "suite": suite or "",
            "regressions": regressions,
        },
        "states": list(AlertState),
        "kinds": list(AlertKind),
    }
    return context, [table]


def _suites_table(session: Session) -> Table:
    table = Table(
        "suites",
        "Suites",
        [
            Column("name", "suite"),
            Column("enabled", "enabled"),
            Column("schedule", "schedule"),
            Column("timezone", "zone"),
            Column("version", "version", numeric=True),
            Column("last_night", "last night"),
            Column("last_status", "status"),
            Column("last_scheduled_for", "scheduled for"),
            Column("next_run_at", "next"),
        ],
        empty="no suites",
    )
    page = suites_page(session, limit=queries.MAX_LIMIT)
    last = last_nights(session, [s.id for s in page.items])
    for suite in page.items:
        night: Night | None = last.get(suite.id)
        public = SuitePublic.of(suite, night)
        table.add(
            name=text(suite.name, f"/suites/{quote(suite.name, safe='')}"),
            enabled=text(suite.enabled),
            schedule=text(suite.schedule),
            timezone=text(suite.timezone),
            version=number(suite.version),
            last_night=text(night.id if night else None),
            last_status=text(str(night.status) if night else None),
            last_scheduled_for=text(night.scheduled_for if night else None),
            next_run_at=text(public.next_run_at),
        )
    return table


def suites(session: Session) -> tuple[Context, list[Table]]:
    return {"title": "suites"}, [_suites_table(session)]


PAGE_NIGHTS = 60
PAGE_SERIES = 500


def suite(session: Session, name: str) -> tuple[Context, list[Table]]:
    """One suite: its spec and schedule, its newest nights with their jobs, its series (each
    a link to its history) and its alerts."""
    found = get_suite(session, name)
    nights = list_nights(session, found, limit=PAGE_NIGHTS).items
    public = SuitePublic.of(found, nights[0] if nights else None)
    facts = Table("suite", "Suite", [Column("key", "what"), Column("value", "value")])
    for key, value in (
        ("name", found.name),
        ("description", found.description or None),
        ("schedule", found.schedule),
        ("timezone", found.timezone),
        ("enabled", found.enabled),
        ("version", found.version),
        ("next night", public.next_run_at),
        ("created by", found.created_by),
        ("updated", found.updated_at),
    ):
        facts.add(key=text(key), value=text(value))
    spec = Table("spec", "Spec", [Column("key", "field"), Column("value", "value")])
    for key, value in public.spec.model_dump(mode="json", exclude_none=True).items():
        spec.add(
            key=text(key),
            value=text(value if isinstance(value, str | int | float | bool) else _json(value)),
        )
    jobs: dict[int, list[int]] = {}
    if nights:
        for job_id, night_id in session.execute(
            select(Job.id, Job.night_id)
            .where(Job.night_id.in_([n.id for n in nights]))
            .order_by(Job.id)
        ):
            if night_id is not None:
                jobs.setdefault(night_id, []).append(job_id)
    night_table = Table(
        "nights",
        f"Nights (the newest {PAGE_NIGHTS})",
        [
            Column("id", "night"),
            Column("scheduled_for", "scheduled for"),
            Column("trigger", "trigger"),
            Column("status", "status"),
            Column("suite_version", "suite version", numeric=True),
            Column("jobs", "jobs"),
            Column("problems", "problems"),
            Column("finished_at", "finished"),
        ],
        empty="no nights yet",
    )
    for night in nights:
        ids = jobs.get(night.id, [])
        night_table.add(
            id=text(night.id),
            scheduled_for=text(night.scheduled_for),
            trigger=text(str(night.trigger)),
            status=Cell(str(night.status), str(night.status), css=f"st-{night.status}"),
            suite_version=number(night.suite_version),
            # The first job links; the export holds every id.
            jobs=Cell(
                " ".join(str(i) for i in ids) or None,
                " ".join(str(i) for i in ids) or "—",
                f"/jobs/{ids[0]}" if ids else None,
            ),
            problems=text("; ".join(str(p) for p in night.problems or []) or None),
            finished_at=text(night.finished_at),
        )
    series_rows = session.execute(
        select(Series, Device.model_name)
        .join(Device, Series.device_id == Device.id)
        .where(Series.suite_id == found.id)
        .order_by(Series.model_name, Series.device_id, Series.backend, Series.variant)
        .limit(PAGE_SERIES)
    ).all()
    series_table = Table(
        "series",
        "Series",
        [
            Column("id", "series"),
            Column("model", "model"),
            Column("device", "device"),
            Column("backend", "backend"),
            Column("variant", "variant"),
            Column("history", "history"),
        ],
        empty="no series yet (a night's results make them)",
    )
    for row, device_label in series_rows:
        series_table.add(
            id=text(row.id),
            model=text(row.model_name),
            device=text(f"{device_label or ''} #{row.device_id}", f"/devices/{row.device_id}"),
            backend=text(row.backend),
            variant=text(row.variant or None),
            history=text(
                "history",
                history_href(model=row.model_name, device=row.device_id, backend=row.backend),
            ),
        )
    alerts_table = _alerts_table(session, AlertFilter(suite=found.name))
    context = {
        "title": f"suite {found.name}",
        "suite": found,
        # Every series of the suite overlaid (models x devices x backends it measured).
        "overlay": "/history?"
        + urlencode(
            [("model", m) for m in dict.fromkeys(r.model_name for r, _ in series_rows)]
            + [("device", str(d)) for d in dict.fromkeys(r.device_id for r, _ in series_rows)]
            + [("backend", b) for b in dict.fromkeys(r.backend for r, _ in series_rows)]
        )
        if series_rows
        else None,
    }
    return context, [facts, spec, night_table, series_table, alerts_table]
