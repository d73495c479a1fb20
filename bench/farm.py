"""Benchmark of the farm itself (PostgreSQL + Redis + a real Celery worker + emulated phones).

1. Throughput: four emulated phones and a queue of RUNS runs of a small cached model
   (ds-cnn): runs per minute, and each phone's utilisation — the time it spent in a run
   (claimed to finished, as the database records it), the time it was leased (its
   ``devices.state`` not idle, sampled every 10 ms) and the time inside the runner (load,
   first call, timed calls) over the wall time of the batch; then the in-runner share of
   leased time: how much of the time a phone is held goes to the measurement itself.
2. Submit-to-result latency of one cached run (HTTP submit until the result is readable).
3. API read latency of GET /api/v1/results with 100,000 stored results: median and p99.

Needs PostgreSQL and Redis on their standard local ports (a fresh database `edgefarm_bench`
and Redis db 7 are used and dropped). Usage: python bench/farm.py [--runs 100] [--results
100000] [--min-seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
DB = "edgefarm_bench"
PG = "postgresql://postgres@127.0.0.1:5432"
BROKER = "redis://127.0.0.1:6379/7"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--phones", type=int, default=4)
    args = parser.parse_args()

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    redis.Redis.from_url(BROKER).flushdb()
    home = Path(tempfile.mkdtemp(prefix="edgefarm-bench-farm-"))
    env = {
        **os.environ,
        "EDGEFARM_HOME": str(home),
        "EDGEFARM_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}",
        "EDGEFARM_BROKER_URL": BROKER,
        "EDGEFARM_COOLDOWN_MAX_TEMP_C": "200",
    }
    os.environ.update(env)
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )

    from harness.client import FarmClient
    from harness.db import Result, Run, make_engine, make_session_factory, session_scope
    from harness.devices.emulator import EmulatedPhone
    from harness.examples import write_example
    from harness.farm.tokens import create_token
    from harness.measure.protocol import MeasurementRequest

    engine = make_engine()
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        token = create_token("bench", session=session)
    phones = [
        EmulatedPhone(p).start()
        for p in (["dimensity-9200", "snapdragon-8-gen-2", "pixel-3a", "dimensity-9200"] * 4)[
            : args.phones
        ]
    ]
    port = free_port()
    logs = home / "logs"
    logs.mkdir()
    children = []
    try:
        device_args = [a for p in phones for a in ("--device", f"tcp:127.0.0.1:{p.port}")]
        for name, cmd in [
            (
                "worker",
                [sys.executable, "-m", "workers", "worker", *device_args, "--loglevel", "warning"],
            ),
            (
                "api",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.main:create_app",
                    "--factory",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
            ),
        ]:
            with open(logs / f"{name}.log", "wb") as log:
                children.append(
                    subprocess.Popen(
                        cmd,
                        env=env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        url = f"http://127.0.0.1:{port}"
        client = FarmClient(url, token)
        wait(
            "the API and the phones",
            lambda: _ok(
                lambda: len([d for d in client.devices() if d["health"] == "good"]) >= len(phones)
            ),
            120,
        )
        model = client.upload_model(write_example("ds-cnn", home))
        ids = [d["id"] for d in client.devices()]
        settings = MeasurementRequest(
            inputs=[], warmup=5, min_iterations=20, min_seconds=args.min_seconds, max_seconds=60.0
        )

        # Warm-up: compile once, deploy the bundle and artifact to every phone.
        job = client.submit(
            model_id=model["id"], devices={"ids": ids}, backends=["tvm-cpu"], settings=settings
        )
        client.wait(job["id"], poll_s=0.5, timeout_s=600)

        # 2. Submit-to-result latency of one cached run (on an idle farm).
        latencies = []
        for _ in range(3):
            start = time.perf_counter()
            job = client.submit(
                model_id=model["id"],
                devices={"ids": ids[:1]},
                backends=["tvm-cpu"],
                settings=settings,
            )
            done = client.wait(job["id"], poll_s=0.05, timeout_s=300)
            latencies.append(time.perf_counter() - start)
            assert done["runs"][0]["status"] == "done", done["runs"][0]

        # 1. Throughput: RUNS runs queued at once over the phones.
        sampler = LeaseSampler(env["EDGEFARM_DATABASE_URL"].replace("+psycopg", ""))
        sampler.start()
        jobs = []
        submitted = time.perf_counter()
        for _ in range(max(1, args.runs // len(ids))):
            jobs.append(
                client.submit(
                    model_id=model["id"],
                    devices={"ids": ids},
                    backends=["tvm-cpu"],
                    settings=settings,
                )["id"]
            )
        submit_s = time.perf_counter() - submitted
        for job_id in jobs:
            client.wait(job_id, poll_s=1.0, timeout_s=3600)
        leased_s = sampler.stop()
        with session_scope(factory) as session:
            runs = session.query(Run).filter(Run.job_id.in_(jobs)).all()
            docs = {
                r.run_id: r.document
                for r in session.query(Result).filter(Result.job_id.in_(jobs)).all()
            }
            rows = [
                (r.device_id, r.status.value, r.started_at, r.finished_at, docs.get(r.id))
                for r in runs
            ]
        ok = [r for r in rows if r[1] == "done"]
        first = min(r[2] for r in rows)
        last = max(r[3] for r in rows)
        wall = (last - first).total_seconds()
        print(
            f"throughput: {len(rows)} runs ({len(ok)} done) of ds-cnn on {len(phones)} "
            f"emulated phones, min_seconds={args.min_seconds}"
        )
        print(f"  submitting {len(jobs)} jobs over HTTP took {submit_s:.2f} s")
        print(f"  wall {wall:.1f} s -> {len(rows) / wall * 60:.1f} runs/min")
        print(
            f"  {'phone':<26}{'runs':>6}{'in a run':>10}{'leased':>8}{'in runner':>11}"
            f"{'runner/leased':>15}"
        )
        all_runner = all_leased = 0.0
        for device_id in sorted({r[0] for r in rows}):
            mine = [r for r in rows if r[0] == device_id]
            busy = sum((r[3] - r[2]).total_seconds() for r in mine)
            runner = sum(
                (d["load_ms"] + d["first_ms"] + sum(d["samples_ms"])) / 1000.0
                for *_, d in mine
                if d and d.get("load_ms") is not None
            )
            leased = leased_s.get(device_id, 0.0)
            all_runner += runner
            all_leased += leased
            name = next(d["address"] for d in client.devices() if d["id"] == device_id)
            print(
                f"  {name:<26}{len(mine):>6}{busy / wall:>10.3f}{leased / wall:>8.3f}"
                f"{runner / wall:>11.3f}{runner / leased if leased else 0.0:>15.3f}"
            )
        print(
            "  (in a run: claimed to finished in the database; leased: the phone's state not "
            "idle; in runner: load + first call + timed calls, without warm-up)"
        )
        share = all_runner / all_leased if all_leased else 0.0
        print(f"in-runner share of leased time: {share:.3f} (min_seconds={args.min_seconds})")
        print(
            f"submit-to-result latency of one cached run (min_seconds={args.min_seconds}): "
            f"median {statistics.median(latencies):.2f} s over {len(latencies)}"
        )

        # 3. API read latency with RESULTS stored results.
        template = next(d for *_, d in ok if d)
        _fill_results(engine, template, args.results)
        with session_scope(factory) as session:
            total = session.query(Result).count()
        http = httpx.Client(base_url=url, timeout=30)
        queries = {
            "newest 50": "/api/v1/results?limit=50",
            "by model+device+backend, 50": f"/api/v1/results?model={model['id']}&device={ids[0]}"
            "&backend=tvm-cpu&limit=50",
            "since 1 day, status ok, 50": "/api/v1/results?since="
            + (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            + "&status=ok&limit=50",
            "page 100 (offset 5000)": "/api/v1/results?limit=50&offset=5000",
        }
        print(f"API read latency, GET /api/v1/results with {total} results stored (PostgreSQL):")
        for label, path in queries.items():
            http.get(path).raise_for_status()
            times = []
            for _ in range(100):
                start = time.perf_counter()
                http.get(path).raise_for_status()
                times.append((time.perf_counter() - start) * 1000.0)
            times.sort()
            print(
                f"  {label:<32} median {statistics.median(times):7.1f} ms   p99 {times[98]:7.1f} ms"
            )
        http.close()
        client.close()
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        for phone in phones:
            phone.stop()
        engine.dispose()
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


class LeaseSampler:
    """Seconds each device spent leased (``devices.state`` not idle), read every
    ``interval_s`` from the database in a thread of its own."""

    def __init__(self, url: str, interval_s: float = 0.01) -> None:
        self._url = url
        self._interval_s = interval_s
        self._leased: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            before = time.monotonic()
            while not self._stop.is_set():
                rows = conn.execute("SELECT id, state FROM devices").fetchall()
                now = time.monotonic()
                for device_id, state in rows:
                    if state != "idle":
                        self._leased[device_id] = self._leased.get(device_id, 0.0) + now - before
                before = now
                self._stop.wait(self._interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        return dict(self._leased)


def _ok(check: Any) -> Any:
    try:
        return check()
    except Exception:
        return False


def _fill_results(engine: Any, template: dict[str, Any], count: int) -> None:
    """Store ``count`` more results shaped like ``template`` (a real document), spread over
    the last 30 days and the phones, each with a run of its own (``results.run_id`` is
    unique), with COPY."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT job_id, model_id FROM results LIMIT 1")
        job_id, model_id = cur.fetchone()
        cur.execute("SELECT array_agg(id) FROM devices")
        (devices,) = cur.fetchone()
        cur.execute(
            "INSERT INTO runs (job_id, device_id, backend, status, attempts, created_at) "
            "SELECT %s, (%s::int[])[1 + g %% %s], 'bench-' || g, 'done', 1, now() "
            "FROM generate_series(1, %s) g RETURNING id, device_id",
            (job_id, devices, len(devices), count),
        )
        run_rows = cur.fetchall()
        now = datetime.now(UTC)
        doc = json.dumps(template)
        samples = json.dumps(template["samples_ms"])
        rng = random.Random(0)
        with cur.copy(
            "COPY results (run_id, job_id, model_id, device_id, backend, status, median_ms, "
            "mean_ms, min_ms, p90_ms, p99_ms, std_ms, cv, n, accuracy_passed, samples_ms, "
            "document, created_at) FROM STDIN"
        ) as copy:
            for run_id, device_id in run_rows:
                median = template["latency_ms"]["median"] * rng.uniform(0.9, 1.1)
                copy.write_row(
                    (
                        run_id,
                        job_id,
                        model_id,
                        device_id,
                        rng.choice(["tvm-cpu", "tvm-nnapi", "ort"]),
                        "ok" if rng.random() > 0.05 else "failed",
                        median,
                        median,
                        median * 0.9,
                        median * 1.1,
                        median * 1.3,
                        median * 0.05,
                        0.05,
                        100,
                        True,
                        samples,
                        doc,
                        now - timedelta(seconds=rng.uniform(0, 30 * 86400)),
                    )
                )
        raw.commit()
        cur.execute("ANALYZE results")
        raw.commit()
    finally:
        raw.close()


if __name__ == "__main__":
    main()
