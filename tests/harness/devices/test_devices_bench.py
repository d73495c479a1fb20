"""Whole measurements on emulated phones over ADB: compile, deploy, cool down, run, compare; the
caches on the host and on the phone; a strange model name; a phone that vanishes mid-run."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.bench import BenchPlan, Protocol, run_bench
from harness.config import get_settings
from harness.devices.adb import WORK_ROOT, AdbDevice
from harness.devices.deploy import RUNNER_NAME
from harness.devices.emulator import EmulatedPhone

import testmodels

FAST = Protocol(warmup=2, min_iterations=10, min_seconds=0.05, max_seconds=5.0)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = testmodels.save(testmodels.mobilenet_like(), tmp_path_factory.mktemp("m"), "mnet")
    return path


def _bench(
    path: Path,
    phone: EmulatedPhone,
    protocol: Protocol = FAST,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    plan = BenchPlan(
        model_path=path,
        backends=["tvm-cpu"],
        devices=[f"tcp:{phone.serial}"],
        protocol=protocol,
        options={"tvm-cpu": options} if options is not None else {},
    )
    [doc] = run_bench(plan)
    return doc.dump()


def _host(phone: EmulatedPhone, device_path: str) -> Path:
    return phone.root / device_path.lstrip("/")


def _files(directory: Path) -> dict[str, int]:
    """Inode of each file: a pushed file is a new inode (written aside, then renamed)."""
    return {p.name: p.stat().st_ino for p in directory.iterdir()}


def _runner_pid(runs: Path) -> int | None:
    """The pid of the runner serving one of the runs under ``runs`` (a sandbox directory)."""
    run_ids = [p.name for p in runs.iterdir()] if runs.is_dir() else []
    if not run_ids:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0].endswith("/" + RUNNER_NAME) and any(r in a for r in run_ids for a in argv):
            return int(entry.name)
    return None


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def test_bench_on_an_emulated_phone_then_again_from_the_caches(
    model_path: Path, emulated_phone: EmulatedPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"tcp:{emulated_phone.serial}"
    doc = _bench(model_path, emulated_phone)
    assert doc["status"] == "ok", doc["error"]
    assert doc["backend"] == "tvm-cpu" and doc["error"] is None
    accuracy = doc["accuracy"]
    assert accuracy["passed"] is True and accuracy["reference"] == "onnxruntime"
    assert accuracy["max_abs_err"] < 1e-3 and accuracy["top1_agree"] == 1.0
    latency = doc["latency_ms"]
    assert latency["n"] == len(doc["samples_ms"]) >= FAST.min_iterations
    assert 0 < latency["min"] <= latency["median"]

    facts = doc["device"]
    assert facts["id"] == address and facts["kind"] == "adb"
    assert facts["emulated"] is True and facts["target"] == "host"
    assert "emulated" in facts["model"] and facts["manufacturer"] == "vivo"
    assert (facts["sdk_level"], facts["nnapi_feature_level"]) == (34, 7)
    zones = [z.type for z in emulated_phone.profile.thermal_zones]
    for key in ("state_before", "state_after"):
        state = doc[key]
        assert list(state["thermal_c"]) == zones
        assert len(state["cpu"]) == emulated_phone.profile.cpu_count
        assert state["battery"]["level_pct"] > 0
        assert 20.0 < state["max_temp_c"] < get_settings().cooldown_max_temp_c
    assert doc["cooldown"]["cooled"] is True and doc["cooldown"]["waited_s"] == 0.0
    assert doc["cooldown"]["threshold_c"] == get_settings().cooldown_max_temp_c

    provenance = doc["provenance"]
    assert provenance["target"] == "host" and provenance["runner_version"]
    bundle_dir = _host(emulated_phone, f"{WORK_ROOT}/runtime/{provenance['runtime_bundle']}")
    artifact_dir = _host(emulated_phone, f"{WORK_ROOT}/artifacts/{provenance['artifact_key']}")
    bundle_files, artifact_files = _files(bundle_dir), _files(artifact_dir)
    assert RUNNER_NAME in bundle_files and ".complete" in artifact_files
    runs = _host(emulated_phone, f"{WORK_ROOT}/runs")
    assert list(runs.iterdir()) == []  # the run directory is removed afterwards

    # Again, on a phone that is warm at first: the run waits until it has cooled down.
    monkeypatch.setenv("EDGEFARM_COOLDOWN_MAX_WAIT_S", "20")
    get_settings.cache_clear()
    emulated_phone.set_temperature(60.0)
    timer = threading.Timer(1.0, emulated_phone.set_temperature, args=(30.0,))
    timer.start()
    try:
        again = _bench(model_path, emulated_phone)
    finally:
        timer.cancel()
    assert again["status"] == "ok", again["error"]
    assert again["provenance"]["cache_hit"] is True
    assert again["provenance"]["artifact_key"] == provenance["artifact_key"]
    assert again["provenance"]["runtime_bundle"] == provenance["runtime_bundle"]
    assert _files(bundle_dir) == bundle_files  # nothing pushed again
    assert _files(artifact_dir) == artifact_files
    cooldown = again["cooldown"]
    assert cooldown["cooled"] is True and 0.9 <= cooldown["waited_s"] < 10.0, cooldown
    assert cooldown["start_temp_c"] == pytest.approx(60.0, abs=1.0)
    assert again["state_before"]["max_temp_c"] <= cooldown["threshold_c"]


def test_the_threads_option_reaches_the_phone_and_the_provenance_says_what_ran(
    model_path: Path, emulated_phone: EmulatedPhone
) -> None:
    # The phone shows the cores this machine has (at most its profile's).
    cores = min(os.cpu_count() or 1, emulated_phone.profile.cpu_count)
    default = _bench(model_path, emulated_phone)
    one = _bench(model_path, emulated_phone, options={"threads": 1})
    every = _bench(model_path, emulated_phone, options={"threads": cores})
    more = _bench(model_path, emulated_phone, options={"threads": cores + 2})
    for doc in (default, one, every, more):
        assert doc["status"] == "ok" and doc["accuracy"]["passed"] is True, doc["error"]
        # A run option: the same artifact, built once.
        assert doc["provenance"]["artifact_key"] == default["provenance"]["artifact_key"]
        assert doc["provenance"]["compile_options"] == default["provenance"]["compile_options"]
    # TVM's default on x86-64 is half the cores (it assumes hyper-threads): one thread on a
    # 2-core machine, which is what phone runs had before the option.
    if os.uname().machine == "x86_64":
        assert default["provenance"]["threads"] == max(1, cores // 2)
    assert one["provenance"]["threads"] == 1
    assert every["provenance"]["threads"] == cores
    assert more["provenance"]["threads"] == cores  # at most the cores

    for bad, says in (
        (-1, "option threads is 0 (the runtime's default) to 256, not -1"),
        ("many", "option threads must be an integer, not 'many'"),
    ):
        doc = _bench(model_path, emulated_phone, options={"threads": bad})
        assert doc["status"] == "failed" and says in doc["error"]["message"], doc["error"]


def test_a_strange_model_name_is_just_a_name(
    tmp_path: Path, emulated_phone: EmulatedPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the name ever run by a shell, here or on the phone, it would empty this HOME.
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep").write_text("still here\n")
    monkeypatch.setenv("HOME", str(home))
    models = tmp_path / "models"
    models.mkdir()
    (models / "keep").write_text("still here\n")
    path = testmodels.save(testmodels.mobilenet_like(), models, "x; rm -rf $HOME")
    assert path.name == "x; rm -rf $HOME.onnx"
    device = AdbDevice.open(f"tcp:{emulated_phone.serial}")
    try:
        device.push(models / "keep", f"{WORK_ROOT}/keep")
    finally:
        device.close()

    doc = _bench(path, emulated_phone)
    assert doc["status"] == "ok", doc["error"]
    assert doc["model"]["name"] == "x; rm -rf $HOME"
    assert doc["accuracy"]["passed"] is True
    assert (home / "keep").read_text() == "still here\n"
    assert sorted(p.name for p in models.iterdir()) == ["keep", path.name]
    assert _host(emulated_phone, f"{WORK_ROOT}/keep").read_text() == "still here\n"
    assert (emulated_phone.root / "data/local/tmp").is_dir()


def test_a_phone_that_vanishes_mid_run_fails_the_run_without_hanging(
    model_path: Path, emulated_phone: EmulatedPhone
) -> None:
    address = f"tcp:{emulated_phone.serial}"
    runs = _host(emulated_phone, f"{WORK_ROOT}/runs")
    seen: dict[str, Any] = {}

    def pull_the_plug() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid = _runner_pid(runs)
            if pid is not None:
                seen.update(pid=pid, at=time.monotonic())
                emulated_phone.drop()
                emulated_phone.stop()
                return
            time.sleep(0.01)

    plug = threading.Thread(target=pull_the_plug, daemon=True)
    plug.start()
    # Left alone, the runner would time iterations for 30 s.
    slow = Protocol(
        warmup=2, min_iterations=10, min_seconds=30.0, max_seconds=30.0, max_iterations=10**9
    )
    started = time.monotonic()
    try:
        doc = _bench(model_path, emulated_phone, slow)
        returned = time.monotonic()
        plug.join(timeout=5)
    finally:
        # The emulated phone leaves the runner behind (see test_adb's
        # test_commands_end_when_the_phone_stops): end it, so it does not load the machine.
        if "pid" in seen and _alive(seen["pid"]):
            os.kill(seen["pid"], signal.SIGKILL)
        gc.collect()  # the phone's leftover transports: see test_commands_end_when_the_phone_stops
    assert "pid" in seen, "the runner never started on the phone"
    assert doc["status"] == "failed"
    assert doc["error"]["stage"] == "run"
    assert address in doc["error"]["message"]
    assert doc["device"]["id"] == address and doc["device"]["emulated"] is True
    assert returned - seen["at"] < 15.0
    assert returned - started < 30.0
