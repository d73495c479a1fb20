"""The nightly loop on a fresh embedded farm (``edgefarm up --phones 2``), as a team uses it:
a suite of two models on two emulated phones, a webhook receiver listening, six nights, then a
slower version of one model uploaded under the same name and two more nights. Exactly the
series of that model alert, saying "model version changed"; the other model's do not; the
receiver gets each alert once, the change's group together, signed; marking one invalid shows
in the API.

Nights are started with ``POST /suites/NAME/runs`` (what ``edgefarm suite run`` does); beat's
nightly tick closes and analyses them, as it does for scheduled nights. The phones run on this
shared machine: both phones' runners share its two cores, so a phone's latency can double
while the other phone runs something heavier. The detector is told what a change is here
(``EDGEFARM_DETECT_MIN_EFFECT`` 1.5, a ratio of 2.5; the slower model is about five times
slower); bench/regression.py calibrates the defaults on measured noise. Each regression is
re-measured before anyone is told: an A/B job (an ordinary job, on the phones' queues) runs
the last good night's stored build against tonight's interleaved; the webhook hears only of
alerts it confirms.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import onnx
import pytest

from farmhome import seed_runner_cache
from testmodels import convnet

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(what: str, check: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Receiver:
    """A webhook receiver on a free port that keeps every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh embedded farm with two emulated phones: (API URL, token)."""
    home = tmp_path / "home"
    seed_runner_cache(home)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFARM_")}
    env.update(
        {
            "EDGEFARM_HOME": str(home),
            "EDGEFARM_NIGHTLY_TICK_S": "2",
            "EDGEFARM_DETECT_MIN_EFFECT": "1.5",
            "EDGEFARM_WEBHOOK_INTERVAL_S": "1",
            "EDGEFARM_CONFIRM_BLOCKS": "4",  # the A/B confirmation, short
        }
    )
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        # The two phones of the suite; not the arm64 one (its runs, under qemu, are tested apart).
        [
            *(sys.executable, "-m", "harness.cli", "up", "--port", str(port)),
            "--phones",
            "2",
            "--no-arm64",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"edgefarm up exited: {(tmp_path / 'up.log').read_text()}")
        token = home / "config" / "api-token"
        try:
            devices = httpx.get(f"{url}/api/v1/devices", timeout=5).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError):
            return None
        phones = [d for d in devices if d["address"] != "local" and d["health"] == "good"]
        return token.read_text().strip() if len(phones) >= 2 and token.exists() else None

    try:
        yield url, _until("the embedded farm", ready, 180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        print((tmp_path / "up.log").read_text(errors="replace")[-20000:])


def _upload(api: httpx.Client, model: onnx.ModelProto, name: str) -> dict[str, Any]:
    response = api.post("/models", files={"file": (f"{name}.onnx", model.SerializeToString())})
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _warm(api: httpx.Client, model_id: int, phones: list[int]) -> None:
    """Compile ahead, as a user's first benchmark does: a night then measures with the
    cached artifact instead of beside its own compilation (two cores are shared here)."""
    job = api.post(
        "/benchmarks",
        json={"model_id": model_id, "devices": {"ids": phones}, "backends": ["tvm-cpu"],
              "settings": {"warmup": 1, "min_seconds": 0.05}},
    )  # fmt: skip
    assert job.status_code == 201, job.text

    def done() -> bool | None:
        return api.get(f"/jobs/{job.json()['id']}").json()["status"] == "done" or None

    _until("the warm-up job", done, 300)


def _medians(api: httpx.Client, nights: list[dict[str, Any]]) -> dict[str, list[object]]:
    """Each series' nightly median (or its failure), for a failing assertion's message."""
    table: dict[str, list[object]] = {}
    for night in nights:
        for job in night["jobs"]:
            results = api.get("/results", params={"job": job["id"]}).json()["data"]
            for r in results:
                doc = r["document"]
                key = f"{doc['model']['name']}@{r['device_id']}"
                latency = (doc.get("latency_ms") or {}).get("median")
                table.setdefault(key, []).append(
                    round(latency, 3) if latency else (doc.get("error") or {}).get("stage")
                )
    return table


def _night(api: httpx.Client, suite: str) -> dict[str, Any]:
    """Start a night now and wait until it is analysed."""
    started = api.post(f"/suites/{suite}/runs")
    assert started.status_code == 201, started.text
    night_id = started.json()["id"]

    def analysed() -> dict[str, Any] | None:
        night = api.get(f"/nights/{night_id}").json()
        return dict(night) if night["analysed_at"] is not None else None

    night = _until(f"night {night_id} to be analysed", analysed, 300)
    assert night["status"] == "done", night
    return night


def test_a_slower_model_version_alerts_its_series_once_and_the_others_stay_quiet(
    farm: tuple[str, str],
) -> None:
    url, token = farm
    api = httpx.Client(
        base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    receiver = Receiver()
    try:
        steady = _upload(api, convnet(16, seed=1), "steady")
        changing = _upload(api, convnet(16, seed=2), "changing")
        phones = [d["id"] for d in api.get("/devices").json()["data"] if d["address"] != "local"]
        for model in (steady, changing):
            _warm(api, model["id"], phones)
        suite = {
            "name": "tiny-nightly",
            "spec": {
                "models": ["steady", "changing"],
                "backends": ["tvm-cpu"],
                "devices": {"ids": phones},
                "settings": {"warmup": 3, "min_seconds": 0.2},
            },
            "enabled": False,
        }
        created = api.post("/suites", json=suite)
        assert created.status_code == 201, created.text
        hook = api.post("/suites/tiny-nightly/webhooks", json={"url": receiver.url})
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]

        nights = [_night(api, "tiny-nightly") for _ in range(6)]
        early = api.get("/alerts", params={"suite": "tiny-nightly"}).json()["data"]
        assert early == [], [(a["series"], a["ratio"], a["message"]) for a in early]

        slower = _upload(api, convnet(32, seed=2), "changing")  # version 2, ~5x slower
        _warm(api, slower["id"], phones)
        nights += [_night(api, "tiny-nightly"), _night(api, "tiny-nightly")]

        print("nightly medians:", json.dumps(_medians(api, nights)))
        alerts = api.get("/alerts", params={"suite": "tiny-nightly"}).json()["data"]
        print("alerts:", [(a["series"], a["metric"], a["ratio"], a["message"]) for a in alerts])
        shown = [(a["series"]["model_name"], a["series"]["device_id"], a["metric"]) for a in alerts]
        # Only the changed model's series alert; its latency on each phone (its load time may
        # join them, on the night it becomes significant); the other model's stay quiet.
        assert {a["series"]["model_name"] for a in alerts} == {"changing"}, shown
        latency = [a for a in alerts if a["metric"] == "median_ms"]
        assert sorted(a["series"]["device_id"] for a in latency) == sorted(phones), (
            shown,
            _medians(api, nights),
        )
        for alert in alerts:
            assert alert["kind"] == "regression", alert
            assert "model version changed" in [c["change"] for c in alert["changes"]]
        for alert in latency:
            assert alert["ratio"] > 2.5
        assert len({a["group_key"] for a in alerts}) == 1  # one cause, one group

        def settled() -> list[dict[str, Any]] | None:
            found = api.get("/alerts", params={"suite": "tiny-nightly"}).json()["data"]
            pending = [a for a in found if a["confirmation_status"] == "pending"]
            return None if pending else list(found)

        alerts = _until("the A/B confirmations", settled, 300)
        print("confirmations:", [(a["id"], a["metric"], a["confirmation"]) for a in alerts])
        latency = [a for a in alerts if a["metric"] == "median_ms"]
        for alert in latency:  # five times slower: the A/B on the phone says so
            assert alert["confirmation_status"] == "confirmed", alert
            confirmation = alert["confirmation"]
            assert confirmation["verdict"] == "slower" and confirmation["ratio"] > 2.5
            assert confirmation["decided_by"] == alert["series"]["device_id"]
            assert confirmation["control"]["night_id"] == alert["last_good_night_id"]
            # The control is the last good night's stored build, run as it was built.
            assert (
                confirmation["control"]["artifact_key"] != confirmation["treatment"]["artifact_key"]
            )
            job = api.get(f"/jobs/{alert['confirmation_job_id']}").json()
            assert job["status"] == "done", job  # an ordinary job, visible as such
            assert alert["id"] in job["experiment"]["alert_ids"]
            assert job["submitted_by"] == "edgefarm:confirmation"
            results = api.get("/results", params={"job": job["id"]}).json()["data"]
            mine = [r for r in results if r["device_id"] == alert["series"]["device_id"]]
            experiment = mine[0]["document"]["experiment"]
            assert experiment["blocks"] == 4
            assert experiment["control"]["artifact_key"] == confirmation["control"]["artifact_key"]
        standing = [a for a in alerts if a["confirmation_status"] != "rejected"]

        def delivered() -> list[tuple[dict[str, str], bytes]] | None:
            return receiver.requests or None

        _until("the webhook delivery", delivered, 60)
        time.sleep(3)  # a repeated delivery, if any, would come within a few ticks
        bodies = [json.loads(body) for _, body in receiver.requests]
        notified = [a["id"] for body in bodies for a in body["alerts"]]
        assert sorted(notified) == sorted(a["id"] for a in standing), bodies  # each alert once
        for body in bodies:
            assert all(a["confirmation_status"] == "confirmed" for a in body["alerts"]), body
        # One group: every delivery announces alerts of the same cause (a phone whose change
        # needed a second night to be significant joins it in the next night's delivery).
        assert {body["group_key"] for body in bodies} == {alerts[0]["group_key"]}
        for headers, body in receiver.requests:
            expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-edgefarm-signature"] == f"sha256={expected}"

        patched = api.patch(
            f"/alerts/{alerts[0]['id']}", json={"state": "invalid", "note": "test: a false alarm"}
        )
        assert patched.status_code == 200, patched.text
        shown = api.get(f"/alerts/{alerts[0]['id']}").json()
        assert shown["state"] == "invalid"
        assert shown["events"][-1]["note"] == "test: a false alarm"
        invalid = api.get("/alerts", params={"state": "invalid"}).json()["data"]
        assert [a["id"] for a in invalid] == [alerts[0]["id"]]
    finally:
        receiver.close()
        api.close()
