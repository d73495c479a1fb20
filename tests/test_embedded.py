"""The embedded farm as a user runs it: `edgefarm up` in one terminal, `edgefarm submit` in
another with the same EDGEFARM_HOME, no service installed or configured."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from harness.devices.base import DeviceFacts
from harness.embedded import arm64_missing

import testmodels
from farmhome import seed_runner_cache

T = TypeVar("T")
# `edgefarm up` adds the arm64 emulated phone (aarch64 programs under qemu-user) where the
# tools are installed (scripts/services installs them): then the farm has four devices.
ARM64_PHONES = 0 if arm64_missing() else 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFARM_")}
    env.update({"EDGEFARM_HOME": str(home), "COLUMNS": "200"})
    return env


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    home = tmp_path / "home"
    seed_runner_cache(home, ("host", "linux-arm64") if ARM64_PHONES else ("host",))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"edgefarm up exited: {proc.stdout.read() if proc.stdout else ''}")
        farm_json = home / "farm.json"
        if farm_json.exists():
            try:
                devices = httpx.get(f"{url}/api/v1/devices", timeout=5).json()["data"]
                if len([d for d in devices if d["health"] == "good"]) >= 3 + ARM64_PHONES:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
        time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the embedded farm did not come up within 180 s")
    yield home, url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_up_then_submit_from_another_process(
    farm: tuple[Path, str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    home, url, proc = farm
    assert json.loads((home / "farm.json").read_text())["api_url"] == url
    assert (home / "config" / "api-token").stat().st_mode & 0o777 == 0o600
    assert (home / "edgefarm.db").exists()
    devices = httpx.get(f"{url}/api/v1/devices").json()["data"]
    profiles = {d["facts"].get("model") for d in devices if d["address"] != "local"}
    assert len(profiles) == 2 + ARM64_PHONES and all("emulated" in p for p in profiles)
    arm64 = [d for d in devices if DeviceFacts.from_dict(d["facts"]).isa_emulated]
    assert [d["facts"]["target"] for d in arm64] == ["linux-arm64"] * ARM64_PHONES

    model = testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet")
    out = tmp_path / "results.json"
    submit = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "submit",
            str(model),
            "-s",
            "all",
            "-b",
            "tvm-cpu",
            "--wait",
            "--json",
            str(out),
            "--min-seconds",
            "0.05",
            "--min-iterations",
            "5",
            "--warmup",
            "1",
        ],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    docs = json.loads(out.read_text())
    assert len(docs) == 3 + ARM64_PHONES
    assert {d["status"] for d in docs} == {"ok"}
    # The farm ran the job on the arm64 phone too: built for linux-arm64, run under qemu.
    emulated = [d for d in docs if d.get("isa_emulated")]
    assert [d["provenance"]["target"] for d in emulated] == ["linux-arm64"] * ARM64_PHONES
    assert all(d["accuracy"]["passed"] for d in docs)
    assert {d["device"]["id"] for d in docs} >= {"local"}
    assert "edgefarm results" in submit.stdout
    assert (home / "broker.db").exists()  # Celery went over kombu's SQLAlchemy transport

    # Without a token a write is refused; reads stay open.
    refused = httpx.post(f"{url}/api/v1/benchmarks", json={})
    assert refused.status_code == 401

    # A farm tuning from the CLI, on the embedded farm (SQLite, kombu's transport): for the
    # arm64 phone where there is one (candidates cross-linked for linux-arm64 and timed
    # under qemu), else this machine; then a benchmark there runs tuned.
    target = arm64[0]["id"] if arm64 else next(d["id"] for d in devices if d["address"] == "local")
    small = testmodels.save(testmodels.convnet(8, size=16), tmp_path, "small")
    tune = _cli(
        home, "submit", str(small), "--tune", "--trials", "2", "-s", f"ids={target}", "--wait"
    )
    assert tune.returncode == 0, tune.stdout + tune.stderr
    assert "tunings" in tune.stdout and "done" in tune.stdout
    (tuning,) = httpx.get(f"{url}/api/v1/tunings").json()["data"]
    assert tuning["status"] == "done" and tuning["report"]["failed"] == 0
    # Each task measured to its budget of 2, or its whole space where that is one schedule
    # (the channels-last transposes); the two convolutions to the budget.
    measured = {t["name"]: t["measured"] for t in tuning["report"]["tasks"]}
    assert all(1 <= m <= 2 for m in measured.values()), measured
    assert [m for name, m in measured.items() if "conv2d" in name] == [2, 2], measured
    assert tuning["report"]["phones"] == [target]
    bench = _cli(
        home, "submit", str(small), "-s", f"ids={target}", "--wait", "--min-seconds", "0.05"
    )
    assert bench.returncode == 0 and "tvm-cpu (tuned)" in bench.stdout, bench.stdout

    # A second `edgefarm up` on the same home refuses to start a second farm.
    again = subprocess.run(
        [sys.executable, "-m", "harness.cli", "up", "--port", str(_free_port())],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode != 0 and "already up" in again.stdout + again.stderr

    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not (home / "farm.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", timeout=2)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _up(home: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _health(url: str) -> dict[str, object]:
    try:
        body: dict[str, object] = httpx.get(f"{url}/healthz", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body


def _live_worker(url: str, queue: str, not_pid: int | None = None) -> int | None:
    for worker in _health(url).get("workers", []):  # type: ignore[union-attr]
        if queue in worker["queues"] and worker["alive"] and worker["pid"] != not_pid:
            return int(worker["pid"])
    return None


def _until(what: str, check: Callable[[], T | None], timeout_s: float = 120) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _status(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "status"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_embedded_farm_heals_and_keeps_its_phones_across_restarts(
    farm: tuple[Path, str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    home, url, proc = farm
    devices = httpx.get(f"{url}/api/v1/devices").json()["data"]
    phone = next(d for d in devices if d["address"] != "local")
    queue = f"device.{phone['id']}"
    pid = _until("the phone's worker", lambda: _live_worker(url, queue))
    status = _status(home)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ok" in status.stdout and queue in status.stdout

    # SIGKILL of one phone's Celery worker: restarted alone, the farm stays up.
    os.kill(pid, signal.SIGKILL)
    _until("the phone's worker to be restarted", lambda: _live_worker(url, queue, not_pid=pid))
    # SIGKILL of the API: the embedded farm restarts it.
    api_pid = _until(
        "the API's pid",
        lambda: next(
            (
                int(p.name)
                for p in Path("/proc").iterdir()
                if p.name.isdigit()
                and f"--port\0{url.rsplit(':', 1)[1]}" in _cmdline(p)
                and "uvicorn" in _cmdline(p)
            ),
            None,
        ),
    )
    os.kill(api_pid, signal.SIGKILL)
    _until("the API to answer again", lambda: _health(url).get("database") == "ok", 60)
    assert proc.poll() is None

    # A clean restart finds the same phones: same rows, none left behind without a worker.
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    port = int(url.rsplit(":", 1)[1])
    again = _up(home, port)
    try:

        def all_back() -> bool:
            try:
                rows = httpx.get(f"{url}/api/v1/devices", timeout=5).json()["data"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            return sum(bool(d["liveness"]["alive"]) for d in rows) >= len(devices)

        _until("the phones to be back with live workers", all_back, timeout_s=180)
        after = httpx.get(f"{url}/api/v1/devices").json()["data"]
        assert sorted(d["id"] for d in after) == sorted(d["id"] for d in devices)
        assert sorted(d["serial"] for d in after) == sorted(d["serial"] for d in devices)
        assert all(d["liveness"]["offered"] for d in after)
        model = testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet")
        # Every device but the arm64 phone (whose runs, under qemu, the other test makes).
        native = [d["id"] for d in after if not DeviceFacts.from_dict(d["facts"]).isa_emulated]
        submit = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "submit",
                str(model),
                "-s",
                f"ids={','.join(map(str, native))}",
                "--wait",
                "--min-seconds",
                "0.05",
                "--min-iterations",
                "5",
                "--warmup",
                "1",
            ],
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
    finally:
        os.killpg(again.pid, signal.SIGINT)
        again.wait(timeout=60)


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
