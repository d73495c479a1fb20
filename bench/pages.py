"""Server time of the web pages with a long history (issue 12).

On a fresh PostgreSQL database (``edgefarm_bench_pages``), it stores a nightly series of 1,000
nights (one result a day, 100 raw samples each, the TVM version changing twice), then fills the
results table with other results up to 10^4, 10^5 and 10^6 rows (each with its job and run,
spread over three years, written by SQL ``generate_series``). At each size it times, in
process through the farm's own app (ASGI, no network), the dashboard, a job page (four runs
with raw samples, one with a partition report), the history page of the 1,000-night series and
its data endpoint (the same view as JSON), and prints the median and p99 of each and the
history page's payload.

    python bench/pages.py [--repeat 30] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
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
from sqlalchemy import text
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
        for i in range(4)
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


def fill(session: Session, upto: int) -> None:
    """Other results (each with its job and run) until the results table holds ``upto``."""
    have = session.scalar(text("SELECT count(*) FROM results")) or 0
    missing = upto - have
    if missing <= 0:
        return
    batch = 200_000
    while missing > 0:
        n = min(batch, missing)
        session.execute(
            text(
                """
                WITH j AS (
                  INSERT INTO jobs (submitted_by, model_id, settings, status, nightly, variant,
                                    created_at)
                  SELECT 'bench', (SELECT min(id) FROM models) + (g % 10), '{}'::jsonb, 'done',
                         false, '', now() - (random() * interval '1095 days')
                  FROM generate_series(1, :n) g
                  RETURNING id, model_id, created_at
                ), r AS (
                  INSERT INTO runs (job_id, device_id, backend, status, attempts, created_at,
                                    started_at, finished_at)
                  SELECT j.id, (SELECT min(id) FROM devices) + (j.id % 4),
                         CASE WHEN j.id % 2 = 0 THEN 'tvm-cpu' ELSE 'tvm-nnapi' END, 'done', 1,
                         j.created_at, j.created_at, j.created_at + interval '15 seconds'
                  FROM j
                  RETURNING id, job_id, device_id, backend, created_at
                )
                INSERT INTO results (run_id, job_id, model_id, device_id, backend, status,
                                     median_ms, p90_ms, n, samples_ms, document, created_at)
                SELECT r.id, r.job_id, j.model_id, r.device_id, r.backend, 'ok',
                       2 + random(), 3.5, 30, CAST(:samples AS jsonb), CAST(:doc AS jsonb),
                       r.created_at
                FROM r JOIN j ON j.id = r.job_id
                """
            ),
            {
                "n": n,
                "samples": "[" + ",".join(f"{2.0 + i / 100:.3f}" for i in range(30)) + "]",
                "doc": '{"status": "ok", "backend": "tvm-cpu", "provenance": '
                '{"tvm_version": "0.27.0", "edgefarm_version": "0.1.0"}, '
                '"device": {"id": "tcp:bench:5555", "fingerprint": "fp-2"}}',
            },
        )
        session.commit()
        missing -= n
    session.execute(text("ANALYZE"))
    session.commit()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()
    try:
        sizes = sorted(int(s) for s in args.sizes.split(","))
    except ValueError:
        parser.error("--sizes is a comma-separated list of result counts, e.g. 10000,100000")
    fresh_database()
    engine = make_engine(URL)
    with Session(engine) as session:
        _series_model, series_device, job_id = seed(session)
    app = create_app(Settings(database_url=URL, api_token=None))
    history = f"/history?model={quote(SERIES_MODEL)}&device={series_device}&backend=tvm-cpu"
    pages = {
        "dashboard /": "/",
        f"job page /jobs/{job_id}": f"/jobs/{job_id}",
        "history page (1,000 nights)": history,
        "history data (?format=json)": history + "&format=json",
    }
    print(f"{'stored results':>15} | {'page':<30} | {'median ms':>9} | {'p99 ms':>7} | bytes")
    with TestClient(app) as client:
        for size in sizes:
            started = time.perf_counter()
            with Session(engine) as session:
                fill(session, size)
            print(f"  (filled to {size:,} results in {time.perf_counter() - started:.0f} s)")
            for label, path in pages.items():
                median, p99, nbytes = timed(client, path, args.repeat)
                print(f"{size:>15,} | {label:<30} | {median:9.1f} | {p99:7.1f} | {nbytes:,}")
    engine.dispose()


if __name__ == "__main__":
    main()
