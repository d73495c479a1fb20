"""Server time of the web pages with a long history (issue 12).

On a fresh PostgreSQL database (``edgefarm_bench_pages``), it stores a nightly series of 1,000
nights (one result a day, 100 raw samples each, the TVM version changing twice), then fills the
results table with other results up to 10^4, 10^5 and 10^6 rows (each with its job and run,
written by SQL ``generate_series``) at a fixed daily rate, ``--per-day`` (1,000 results a day:
eight phones each busy with about 125 runs a day; one run in 50 fails). A farm grows by the
length of its history, not by its daily rate, so a bigger size is a longer history — 10 days,
100 days, 1,000 days back from now — and the last day, which the dashboard shows, holds the
same runs at every size: "flat from 10^4 to 10^6" then means what it says. At each size it
times, in process through the farm's own app (ASGI, no network), the dashboard, a job page
(four runs with raw samples, one with a partition report), a device page (its recent runs), the
history page of the 1,000-night series and its data endpoint (the same view as JSON), and
the history naming no model (``/history``: its newest results only) and the history of a
model measured all day on every phone (``model-3``: its series of up to ~26,000 runs each at
10^6, a point per day), and prints the median
and p99 of each (of ``--repeat`` requests: the p99 of 100 is the second slowest), its payload,
and the machine's load average (it may be shared).

A last measurement, reported apart, keeps the largest size and packs the last two days at
``--high-rate`` results a day (20,000: a big farm, or a burst): what the dashboard costs when
its window is full. ``--explain`` prints PostgreSQL's plan of every statement each page runs at
each size, with its time.

    python bench/pages.py [--repeat 100] [--sizes 10000,100000,1000000] [--per-day 1000]
                          [--high-rate 20000] [--explain]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import psycopg
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.main import create_app  # noqa: E402
from harness.config import Settings  # noqa: E402
from harness.db import Device, Job, JobStatus, Model, Result, Run, RunStatus, make_engine  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "edgefarm_bench_pages"
URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
NIGHTS = 1000
SERIES_MODEL = "nightly-resnet8"
PHONES = 8
FAIL_EVERY = 50  # one run in 50 fails (a result with status "failed", no statistics)


def fresh_database() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = URL
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def document(
    samples: list[float], tvm: str, fingerprint: str, partition: bool = False
) -> dict[str, Any]:
    values = np.asarray(samples)
    doc: dict[str, Any] = {
        "backend": "tvm-cpu",
        "status": "ok",
        "latency_ms": {
            "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)),
            "n": len(samples),
        },
        "samples_ms": samples,
        "provenance": {"tvm_version": tvm, "edgefarm_version": "0.1.0", "target": "host"},
        "device": {"id": "tcp:bench:5555", "kind": "adb", "fingerprint": fingerprint},
        "state_before": {"thermal_c": {"cpu": 38.0}, "cpu": {}, "max_temp_c": 38.0},
        "state_after": {"thermal_c": {"cpu": 41.0}, "cpu": {}, "max_temp_c": 41.0},
        "cooldown": {
            "waited_s": 0.0,
            "cooled": True,
            "start_temp_c": 38.0,
            "end_temp_c": 38.0,
            "threshold_c": 45.0,
        },
    }
    if partition:
        doc["partition"] = {
            "dialect": "nnapi",
            "feature_level": 7,
            "mode": "all",
            "subgraphs": 3,
            "ops_offloaded": 20,
            "ops_total": 24,
            "by_op_type": {"nn.conv2d": {"offloaded": 9, "total": 9}},
            "macs_offloaded_share": 0.97,
            "boundary_tensors": 4,
            "boundary_bytes": 65536,
            "cpu_ops": [{"op": "softmax", "reason": "unsupported operator", "detail": ""}],
        }
    return doc


def result_row(
    job: Job,
    run: Run,
    model: Model,
    device: Device,
    samples: list[float],
    doc: dict[str, Any],
    at: datetime,
) -> Result:
    values = np.asarray(samples)
    return Result(
        run_id=run.id,
        job_id=job.id,
        model_id=model.id,
        device_id=device.id,
        backend=run.backend,
        status="ok",
        median_ms=float(np.median(values)),
        p90_ms=float(np.percentile(values, 90)),
        p99_ms=float(np.percentile(values, 99)),
        min_ms=float(values.min()),
        mean_ms=float(values.mean()),
        n=len(samples),
        samples_ms=samples,
        document=doc,
        created_at=at,
    )


def seed(session: Session) -> tuple[int, int, int]:
    """Devices, models, the 1,000-night series and one job of four runs: (series model id,
    series device id, the job's id)."""
    devices = [
        Device(address=f"tcp:bench-{i}:5555", model_name=f"Bench phone {i}", soc=f"MT{i}")
        for i in range(PHONES)
    ]
    session.add_all(devices)
    models = [
        Model(sha256=f"{i:064x}", name=f"model-{i}", format="onnx", size_bytes=1, input_spec=[])
        for i in range(10)
    ]
    series_model = Model(
        sha256="f" * 64, name=SERIES_MODEL, format="onnx", size_bytes=1, input_spec=[]
    )
    session.add_all([*models, series_model])
    session.flush()
    rng = np.random.default_rng(0)
    first = datetime.now(UTC) - timedelta(days=NIGHTS + 5)
    for night in range(NIGHTS):
        at = first + timedelta(days=night, hours=2)
        tvm = "0.25.0" if night < 300 else ("0.26.0" if night < 700 else "0.27.0")
        samples = [round(float(v), 4) for v in rng.normal(5.0 + (night >= 700), 0.1, 100)]
        job = Job(
            submitted_by="nightly",
            model_id=series_model.id,
            settings={},
            status=JobStatus.done,
            nightly=True,
            created_at=at,
        )
        session.add(job)
        session.flush()
        run = Run(
            job_id=job.id,
            device_id=devices[0].id,
            backend="tvm-cpu",
            status=RunStatus.done,
            attempts=1,
            created_at=at,
            started_at=at,
            finished_at=at + timedelta(seconds=20),
        )
        session.add(run)
        session.flush()
        doc = document(samples, tvm, "fp-1" if night < 500 else "fp-2")
        session.add(result_row(job, run, series_model, devices[0], samples, doc, at))
    # The job page's job: four runs (two phones, two backends), raw samples, a partition.
    now = datetime.now(UTC) - timedelta(days=2)
    job = Job(
        submitted_by="bench",
        model_id=models[0].id,
        settings={},
        status=JobStatus.done,
        created_at=now,
    )
    session.add(job)
    session.flush()
    for device in devices[:2]:
        for backend in ("tvm-cpu", "tvm-nnapi"):
            run = Run(
                job_id=job.id,
                device_id=device.id,
                backend=backend,
                status=RunStatus.done,
                attempts=1,
                created_at=now,
                started_at=now,
                finished_at=now,
            )
            session.add(run)
            session.flush()
            samples = [round(float(v), 4) for v in rng.normal(3.0, 0.05, 1000)]
            doc = document(samples, "0.27.0", "fp-2", partition=backend == "tvm-nnapi")
            session.add(result_row(job, run, models[0], device, samples, doc, now))
    session.commit()
    return series_model.id, devices[0].id, job.id


def insert_results(session: Session, n: int, when: str, params: dict[str, Any]) -> None:
    """``n`` results, each with its job and run, created at the SQL expression ``when`` of the
    series number ``g`` (1..n)."""
    session.execute(
        text(
            f"""
            WITH j AS (
              INSERT INTO jobs (submitted_by, model_id, settings, status, nightly, variant,
                                created_at)
              SELECT 'bench', (SELECT min(id) FROM models) + (g % 10), '{{}}'::jsonb, 'done',
                     false, '', {when}
              FROM generate_series(1, :n) g
              RETURNING id, model_id, created_at
            ), r AS (
              INSERT INTO runs (job_id, device_id, backend, status, attempts, error_stage,
                                error_message, created_at, started_at, finished_at)
              SELECT j.id, (SELECT min(id) FROM devices) + (j.id % {PHONES}),
                     CASE WHEN j.id % 2 = 0 THEN 'tvm-cpu' ELSE 'tvm-nnapi' END,
                     CASE WHEN j.id % {FAIL_EVERY} = 0 THEN 'failed' ELSE 'done' END, 1,
                     CASE WHEN j.id % {FAIL_EVERY} = 0 THEN 'run' END,
                     CASE WHEN j.id % {FAIL_EVERY} = 0 THEN 'runner exited with 139' END,
                     j.created_at, j.created_at, j.created_at + interval '15 seconds'
              FROM j
              RETURNING id, job_id, device_id, backend, status, created_at
            )
            INSERT INTO results (run_id, job_id, model_id, device_id, backend, status,
                                 median_ms, p90_ms, n, samples_ms, document, created_at)
            SELECT r.id, r.job_id, j.model_id, r.device_id, r.backend,
                   CASE WHEN r.status = 'failed' THEN 'failed' ELSE 'ok' END,
                   CASE WHEN r.status = 'failed' THEN NULL ELSE 2 + random() END,
                   CASE WHEN r.status = 'failed' THEN NULL ELSE 3.5 END, 30,
                   CAST(:samples AS jsonb), CAST(:doc AS jsonb), r.created_at
            FROM r JOIN j ON j.id = r.job_id
            """
        ),
        {
            "n": n,
            "samples": "[" + ",".join(f"{2.0 + i / 100:.3f}" for i in range(30)) + "]",
            "doc": '{"status": "ok", "backend": "tvm-cpu", "provenance": '
            '{"tvm_version": "0.27.0", "edgefarm_version": "0.1.0"}, '
            '"device": {"id": "tcp:bench:5555", "fingerprint": "fp-2"}}',
            **params,
        },
    )
    session.commit()


def settle(session: Session) -> None:
    """VACUUM ANALYZE, as autovacuum leaves a farm's tables between its nights: statistics for
    the planner, and the visibility map that lets an index-only scan skip the table's rows
    (a table filled a moment ago has none, and every such scan would visit every row)."""
    with session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def fill(session: Session, upto: int, *, per_day: int, placed: int) -> int:
    """Other results until the table holds ``upto``, continuing the history backwards from
    now at ``per_day`` results a day (the ``placed`` results already there are the newest).
    Returns how many are placed now."""
    have = session.scalar(text("SELECT count(*) FROM results")) or 0
    missing = upto - have
    batch = 200_000
    while missing > 0:
        n = min(batch, missing)
        when = "now() - ((:placed + g) * interval '1 day' / :per_day)"
        insert_results(session, n, when, {"placed": placed, "per_day": per_day})
        placed += n
        missing -= n
    session.commit()
    settle(session)
    return placed


def burst(session: Session, *, per_day: int, high_rate: int, days: int = 2) -> int:
    """Pack the last ``days`` days up to ``high_rate`` results a day; returns how many were
    added."""
    extra = max(0, (high_rate - per_day) * days)
    for start in range(0, extra, 200_000):
        n = min(200_000, extra - start)
        insert_results(session, n, "now() - random() * :span", {"span": timedelta(days=days)})
    session.commit()
    settle(session)
    return extra


def timed(client: TestClient, path: str, repeat: int) -> tuple[float, float, int]:
    client.get(path)  # warm
    times = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        size = len(response.content)
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return statistics.median(times), p99, size


class Statements:
    """The SQL statements the app runs while it is listening (with their parameters)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[tuple[str, Any]] = []
        self.listening = False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any
    ) -> None:
        if self.listening and statement.lstrip().upper().startswith("SELECT"):
            self.seen.append((statement, parameters))

    def explain(self, client: TestClient, path: str) -> None:
        """Print the plan of every statement ``path`` runs, slowest first."""
        self.seen, self.listening = [], True
        client.get(path)
        self.listening = False
        plans = []
        with self.engine.connect() as conn:
            for statement, parameters in self.seen:
                cursor = conn.exec_driver_sql("EXPLAIN ANALYZE " + statement, parameters)
                lines = [row[0] for row in cursor]
                total = next(
                    (float(line.split()[-2]) for line in lines if "Execution Time" in line), 0.0
                )
                plans.append((total, statement, lines))
        print(f"    {path}: {len(plans)} statements")
        for total, statement, lines in sorted(plans, key=lambda p: -p[0]):
            print(f"      {total:8.2f} ms  {' '.join(statement.split())[:150]}")
            for line in lines:
                if line.strip().startswith(("Planning", "Execution")):
                    continue
                print(f"                  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100, help="requests per page")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--per-day", type=int, default=1000, help="results a day (history)")
    parser.add_argument("--high-rate", type=int, default=20_000, help="results a day (burst)")
    parser.add_argument("--explain", action="store_true", help="print every statement's plan")
    args = parser.parse_args()
    try:
        sizes = sorted(int(s) for s in args.sizes.split(","))
    except ValueError:
        parser.error("--sizes is a comma-separated list of result counts, e.g. 10000,100000")
    if args.per_day < 1 or args.high_rate < 1 or args.repeat < 1 or any(s < 1 for s in sizes):
        parser.error("--sizes, --per-day, --high-rate and --repeat are positive numbers")
    fresh_database()
    engine = make_engine(URL)
    with Session(engine) as session:
        _series_model, series_device, job_id = seed(session)
    app = create_app(Settings(database_url=URL, api_token=None))
    history = f"/history?model={quote(SERIES_MODEL)}&device={series_device}&backend=tvm-cpu"
    pages = {
        "dashboard /": "/",
        f"job page /jobs/{job_id}": f"/jobs/{job_id}",
        f"device page /devices/{series_device}": f"/devices/{series_device}",
        "history page (1,000 nights)": history,
        "history data (?format=json)": history + "&format=json",
        "history, no model named": "/history",
        # Every series of a model the filler measures all day on every phone (tens of
        # thousands of runs each at 10^6): a point per day, each from plain columns.
        "history, busy model-3": "/history?model=model-3",
    }
    print(f"{'stored results':>15} | {'page':<30} | {'median ms':>9} | {'p99 ms':>7} | bytes")

    def measure(label: str) -> None:
        for page, path in pages.items():
            median, p99, nbytes = timed(client, path, args.repeat)
            print(f"{label:>15} | {page:<30} | {median:9.1f} | {p99:7.1f} | {nbytes:,}")
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"  (load average over 1, 5, 15 min: {load} on {os.cpu_count()} cores)")
        if statements is not None:
            for path in pages.values():
                statements.explain(client, path)

    placed = 0
    with TestClient(app) as client:
        statements = Statements(app.state.engine) if args.explain else None
        for size in sizes:
            started = time.perf_counter()
            with Session(engine) as session:
                placed = fill(session, size, per_day=args.per_day, placed=placed)
            print(
                f"  (filled to {size:,} results, {placed / args.per_day:,.0f} days at "
                f"{args.per_day:,} a day, in {time.perf_counter() - started:.0f} s)"
            )
            measure(f"{size:,}")
        started = time.perf_counter()
        with Session(engine) as session:
            extra = burst(session, per_day=args.per_day, high_rate=args.high_rate)
        print(
            f"  (high rate: {extra:,} more results in the last 2 days, {args.high_rate:,} a day, "
            f"in {time.perf_counter() - started:.0f} s)"
        )
        measure(f"{sizes[-1] + extra:,} hi")
    engine.dispose()


if __name__ == "__main__":
    main()
