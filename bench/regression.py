"""Calibrating the nightly change detector on the farm's own noise.

Three parts, each printing its figures (``--json`` keeps them):

1. ``measure``: a suite of the MLPerf Tiny models run for ``--nights`` nights on emulated phones
   of an embedded farm started here (``edgefarm up --phones N`` in a temporary home; or
   ``--url``/``--token`` of a running farm), each night through ``POST /suites/NAME/runs`` as
   a user would; the nightly medians of every series are kept (``--noise PATH`` writes them).
2. ``simulate``: that measured noise resampled (moving blocks of nights, so that a slow
   stretch of the machine stays a stretch) into thousands of series histories, judged night
   by night exactly as the farm judges them (:func:`harness.regression.changepoint.
   recent_changes`): the false-alarm rate per series-night with no change, and for injected
   slowdowns of 3%, 5% and 10% the share alerted within 2 nights and the delay, for a grid of
   detector settings (``max_pvalue`` x ``min_effect``).
3. ``timing``: the time from a night's last result to its alerts and queued webhooks with
   1,000 series (a SQLite farm database filled with 30 nights of them).
4. ``ab``: the A/B confirmation validated on an emulated phone (bench/regression_ab.py): A/A
   experiments (observed false-positive rate) and pairs of known difference (observed power),
   ``--experiments`` of each with ``--blocks`` pairs of ``--block-seconds`` blocks, judged on
   their first 10 pairs (the farm's default ``confirm_blocks``) and on all, by block median
   and by block 10th percentile. With ``--ab PATH`` (its ``--json``), ``simulate`` adds each
   grid row's figures once alerts must pass their A/B too.

Usage: python bench/regression.py [all|measure|simulate|timing|ab] [--nights 30] [--phones 2]
[--noise PATH] [--histories 2000] [--experiments 30] [--blocks 20] [--block-seconds 0.1]
[--ab PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness.regression.changepoint import DetectorSettings, recent_changes

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet8", "ds-cnn", "mobilenet-v1-0.25", "autoencoder")
SLOWDOWNS = (0.03, 0.05, 0.10)
GRID_PVALUES = (0.01, 0.001, 0.0001)
GRID_EFFECTS = (0.02, 0.03, 0.05)


def log(message: str) -> None:
    print(f"[regression {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- 1. measure -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_farm(phones: int) -> Iterator[tuple[str, str]]:
    """``edgefarm up --phones N`` in a temporary home: (API URL, token)."""
    with tempfile.TemporaryDirectory(prefix="edgefarm-regression-") as home:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFARM_")}
        env["EDGEFARM_HOME"] = home
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "up", "--port", str(port), "--phones",
             str(phones)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(f"edgefarm up exited ({proc.returncode})")
                token_file = Path(home) / "config" / "api-token"
                try:
                    devices = httpx.get(f"{url}/api/v1/devices", timeout=5).json()["data"]
                    phones_up = [d for d in devices if d["address"] != "local"]
                    if len(phones_up) >= phones and token_file.exists():
                        break
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                time.sleep(1)
            else:
                raise SystemExit("the embedded farm did not come up within 300 s")
            yield url, token_file.read_text().strip()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url}: "
                         f"{response.status_code} {response.text[:500]}")  # fmt: skip
    return response.json() if response.content else None


def measure_nights(
    url: str, token: str, *, nights: int, min_seconds: float
) -> dict[str, list[float]]:
    """Run a suite of the MLPerf Tiny models ``nights`` times; each series' nightly medians."""
    from harness.examples.mlperf_tiny import write_example

    api = httpx.Client(
        base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    with tempfile.TemporaryDirectory() as directory:
        for name in MODELS:
            path = write_example(name, directory)
            with path.open("rb") as f:
                _ok(api.post("/models", files={"file": (f"{name}.onnx", f)}))
    phones = [d["id"] for d in _ok(api.get("/devices"))["data"] if d["address"] != "local"]
    suite = f"tiny-{int(time.time())}"
    _ok(
        api.post(
            "/suites",
            json={
                "name": suite,
                "spec": {
                    "models": list(MODELS),
                    "backends": ["tvm-cpu"],
                    "devices": {"ids": phones},
                    "settings": {"min_seconds": min_seconds, "warmup": 5},
                },
                "enabled": False,  # nights are started here, not by the clock
            },
        )
    )
    series: dict[str, list[float]] = {}
    for k in range(nights):
        started = time.monotonic()
        night = _ok(api.post(f"/suites/{suite}/runs"))
        night_id = night["id"]
        while True:
            night = _ok(api.get(f"/nights/{night_id}"))
            if night["status"] in ("done", "failed"):
                break
            time.sleep(1)
        for job in night["jobs"]:
            results = _ok(api.get("/results", params={"job": job["id"], "limit": 100}))["data"]
            for result in results:
                document = result["document"]
                latency = (document.get("latency_ms") or {}).get("median")
                if result["status"] != "ok" or not latency:
                    continue
                name = document["model"]["name"]
                key = f"{name}|{result['device_id']}|{result['backend']}|{job.get('variant', '')}"
                series.setdefault(key, []).append(float(latency))
        log(f"night {k + 1}/{nights}: {night['status']} in {time.monotonic() - started:.0f} s")
    return series


# -- 2. simulate ------------------------------------------------------------------------------


def residuals(series: dict[str, list[float]]) -> list[np.ndarray]:
    """Each series' nightly log-deviations from its own median: the noise, without levels."""
    out = []
    for values in series.values():
        logs = np.log(np.asarray(values, dtype=float))
        if logs.size >= 8:
            out.append(logs - np.median(logs))
    if not out:
        raise SystemExit("no series with 8 or more nights to take the noise from")
    return out


def resample(
    pool: Sequence[np.ndarray], length: int, rng: np.random.Generator, block: int = 3
) -> np.ndarray:
    """A history of ``length`` nights of noise: moving blocks of one measured series."""
    source = pool[int(rng.integers(len(pool)))]
    out: list[float] = []
    while len(out) < length:
        start = int(rng.integers(0, max(1, source.size - block + 1)))
        out.extend(source[start : start + block].tolist())
    return np.asarray(out[:length])


@dataclass(frozen=True)
class Outcome:
    false_alarms_per_100: float  # per 100 series-nights with no change
    detected_within_2: dict[str, float]  # slowdown -> share alerted on its night or the next
    mean_delay: dict[str, float]  # nights from the change to its alert, when alerted


def simulate(
    pool: Sequence[np.ndarray],
    settings: DetectorSettings,
    *,
    histories: int,
    warmup_nights: int = 20,
    judged_nights: int = 20,
    recent: int = 2,
    seed: int = 0,
) -> Outcome:
    rng = np.random.default_rng(seed)
    alarms = judged = 0
    for _ in range(histories):
        noise = resample(pool, warmup_nights + judged_nights, rng)
        values = np.exp(noise)
        alerted_at: set[int] = set()
        for night in range(warmup_nights, warmup_nights + judged_nights):
            judged += 1
            found = recent_changes(values[: night + 1], settings, recent=recent)
            # The farm alerts a change once (an alert exists for its recent nights).
            new = [p for p in found if not alerted_at & set(range(p.index - 1, p.index + 2))]
            if new:
                alarms += 1
                alerted_at.update(p.index for p in new)
    detected: dict[str, float] = {}
    delays: dict[str, float] = {}
    for slowdown in SLOWDOWNS:
        hits, waited = 0, []
        for _ in range(histories):
            noise = resample(pool, warmup_nights + 3, rng)
            values = np.exp(noise)
            values[warmup_nights:] *= 1.0 + slowdown
            for delay in range(3):
                night = warmup_nights + delay
                found = recent_changes(values[: night + 1], settings, recent=recent)
                if any(p.index >= warmup_nights - 1 and p.ratio > 1 for p in found):
                    if delay < 2:
                        hits += 1
                    waited.append(delay + 1)
                    break
        detected[f"{slowdown:.0%}"] = hits / histories
        delays[f"{slowdown:.0%}"] = float(np.mean(waited)) if waited else float("nan")
    return Outcome(100.0 * alarms / judged, detected, delays)


def simulate_grid(pool: Sequence[np.ndarray], *, histories: int) -> list[dict[str, Any]]:
    rows = []
    for pvalue in GRID_PVALUES:
        for effect in GRID_EFFECTS:
            outcome = simulate(
                pool, DetectorSettings(max_pvalue=pvalue, min_effect=effect), histories=histories
            )
            rows.append({"max_pvalue": pvalue, "min_effect": effect, **outcome.__dict__})
            log(
                f"p<={pvalue:g} effect>={effect:.0%}: {outcome.false_alarms_per_100:.2f} false "
                f"alarms/100 series-nights; within 2 nights {outcome.detected_within_2}"
            )
    return rows


# -- 3. timing --------------------------------------------------------------------------------


def time_analysis(
    *, models: int = 25, devices: int = 10, variants: int = 4, nights: int = 30
) -> dict[str, float]:
    """Seconds from a night's last result to its alerts and queued webhooks, with ``models x
    devices x variants`` series (1,000 by default) and ``nights`` nights of history, on a
    SQLite farm database made here (the embedded farm's)."""
    import hashlib
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, select, update

    from harness.db import (
        Device,
        Job,
        JobStatus,
        Model,
        Night,
        NightStatus,
        NightTrigger,
        Result,
        Run,
        RunStatus,
        Webhook,
        make_engine,
        make_session_factory,
        utcnow,
    )
    from harness.db.migrate import upgrade
    from harness.farm.analysis import alert_groups, analyse_night, close_finished_nights
    from harness.farm.confirm import notify_settled, request_confirmations
    from harness.farm.suites import create_suite, start_night
    from harness.regression.suites import SuiteFields
    from harness.regression.webhooks import notify

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/farm.db"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with sessions() as session:
            phones = [
                Device(
                    address=f"tcp:bench-{i}:5555", serial=f"bench-{i}", facts={"fingerprint": "x"}
                )
                for i in range(devices)
            ]
            session.add_all(phones)
            names = [f"model-{i}" for i in range(models)]
            for name in names:
                session.add(
                    Model(
                        sha256=hashlib.sha256(name.encode()).hexdigest(),
                        name=name,
                        format="onnx",
                        size_bytes=1,
                        input_spec=[],
                    )
                )
            session.flush()
            suite = create_suite(
                session,
                SuiteFields(
                    name="timing",
                    spec={
                        "models": names,
                        "backends": ["tvm-cpu"],
                        "devices": {"all": True},
                        "matrix": {"tvm-cpu.opt_level": list(range(variants))},
                    },
                ),
                created_by="bench",
            )
            session.add(Webhook(suite_id=suite.id, url="http://127.0.0.1:9/", secret="s"))
            session.commit()
            level: dict[tuple[int, int, str], float] = {}
            first = datetime(2026, 1, 1, 2, tzinfo=UTC)
            for k in range(nights + 1):
                started = start_night(
                    session,
                    suite,
                    scheduled_for=first + timedelta(days=k),
                    trigger=NightTrigger.schedule,
                )
                assert started is not None
                rows = []
                jobs = session.scalars(select(Job).where(Job.id.in_(started.job_ids)))
                for job in jobs:
                    for run in job.runs:
                        key = (job.model_id, run.device_id, job.variant)
                        base = level.setdefault(key, float(rng.uniform(1, 50)))
                        # Tonight one series in 50 is 20% slower: those must alert.
                        slow = (
                            1.2
                            if k == nights
                            and job.variant != "canary"  # the phones stay steady
                            and list(level).index(key) % 50 == 0
                            else 1.0
                        )
                        rows.append(
                            {
                                "run_id": run.id,
                                "job_id": job.id,
                                "model_id": job.model_id,
                                "device_id": run.device_id,
                                "backend": run.backend,
                                "status": "ok",
                                "median_ms": base * slow * float(np.exp(rng.normal(0, 0.01))),
                                "load_ms": 5.0,
                                "peak_rss_kb": 1000,
                                "document": {},
                            }
                        )
                session.execute(insert(Result), rows)
                session.execute(
                    update(Run).where(Run.job_id.in_(started.job_ids)).values(status=RunStatus.done)
                )
                if k < nights:
                    # Past nights: done and analysed, as the farm left them.
                    session.execute(
                        update(Job)
                        .where(Job.night_id == started.night.id)
                        .values(status=JobStatus.done)
                    )
                    session.execute(
                        update(Night)
                        .where(Night.id == started.night.id)
                        .values(status=NightStatus.done, analysed_at=utcnow())
                    )
                session.commit()
                log(f"timing: night {k + 1}/{nights + 1} written")
            last = started.night.id
            series = len(level)
            # The night's last run ends: from here to its alerts and queued webhooks.
            t0 = time.perf_counter()
            for job in session.query(Job).filter(Job.night_id == last):
                job.status = JobStatus.done
            close_finished_nights(session)
            session.commit()
            t1 = time.perf_counter()
            # What the nightly tick does: alerts, their A/B jobs (regressions wait for them),
            # and the notifications of what needs no confirmation.
            alerts = analyse_night(session, last)
            night = started.night
            confirmations = request_confirmations(session, night, alerts)
            queued = len(notify_settled(session))
            session.commit()
            t2 = time.perf_counter()
            # Without confirmation (EDGEFARM_CONFIRM_BLOCKS=0) each group is queued at once.
            immediate = sum(
                len(notify(session, night.suite, event_key=f"timing-{key}", payload=payload))
                for key, payload in alert_groups(night, alerts)
            )
            session.commit()
            t3 = time.perf_counter()
        engine.dispose()
    return {
        "series": series,
        "nights": nights + 1,
        "alerts": len(alerts),
        "ab_jobs": len(confirmations),
        "webhooks_queued": queued,
        "close_s": t1 - t0,
        "analyse_and_confirm_s": t2 - t1,
        "total_s": t2 - t0,
        "webhooks_queued_without_confirmation": immediate,
        "queue_without_confirmation_s": t3 - t2,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "part", nargs="?", default="all", choices=("all", "measure", "simulate", "timing", "ab")
    )
    parser.add_argument("--experiments", type=int, default=30)
    parser.add_argument(
        "--blocks", type=int, default=20, help="ab: pairs per experiment (judged at 10 and all)"
    )
    parser.add_argument("--block-seconds", type=float, default=0.1, help="ab: timed s per block")
    parser.add_argument("--ab", type=Path, help="ab's --json, for simulate's confirmed figures")
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--phones", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--noise", type=Path, help="measured nightly medians (written/read)")
    parser.add_argument("--histories", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    report: dict[str, Any] = {}
    if args.part == "ab":
        from regression_ab import judge_all, validate

        if args.ab:  # judge a measured run again (its raw blocks), measuring nothing
            measured = json.loads(args.ab.read_text())["ab"]
            measured["pairs"] = judge_all(
                measured["raw"],
                blocks=measured["blocks"],
                alpha=measured["alpha"],
                min_effect=measured["min_effect"],
            )
            report["ab"] = measured
        else:
            report["ab"] = validate(
                experiments=args.experiments, blocks=args.blocks, min_seconds=args.block_seconds
            )
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        return 0
    if args.part == "timing":
        report["timing"] = time_analysis()
        print(json.dumps(report, indent=1))
        return 0
    if args.part in ("all", "measure"):
        if args.url:
            series = measure_nights(
                args.url, args.token, nights=args.nights, min_seconds=args.min_seconds
            )
        else:
            with embedded_farm(args.phones) as (url, token):
                series = measure_nights(
                    url, token, nights=args.nights, min_seconds=args.min_seconds
                )
        if args.noise:
            args.noise.write_text(json.dumps(series, indent=1))
        report["measured"] = {
            k: {"nights": len(v), "cv": float(np.std(v) / np.mean(v))} for k, v in series.items()
        }
    else:
        if not args.noise:
            parser.error("simulate needs --noise PATH (from measure)")
        series = json.loads(args.noise.read_text())
    if args.part in ("all", "simulate"):
        report["grid"] = simulate_grid(residuals(series), histories=args.histories)
        if args.ab:
            from regression_ab import with_confirmation

            ab = json.loads(args.ab.read_text())["ab"]
            for row in report["grid"]:
                row["with_confirmation"] = {
                    judged_as: with_confirmation(row, ab, judged_as)
                    for judged_as in next(iter(ab["pairs"].values()))
                }
    if args.part == "all":
        report["timing"] = time_analysis()
    print(json.dumps(report, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
