"""AdbDevice over real TCP against emulated phones: authentication, addresses, shell, files,
facts, state, cooldown and health."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.config import get_settings
from harness.devices.adb import WORK_ROOT, AdbDevice
from harness.devices.adbfacts import facts_from_props, nnapi_feature_level, parse_getprop
from harness.devices.adbkeys import load_signer
from harness.devices.adbscripts import parse_state
from harness.devices.base import wait_cool
from harness.devices.deploy import ensure_bundle, runtime_bundle
from harness.devices.emulator import EmulatedPhone, get_profile
from harness.errors import InfrastructureError, JobError

MB = 1024 * 1024


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


def _host(phone: EmulatedPhone, device_path: str) -> Path:
    """Where a device path lives in the emulated phone's sandbox."""
    return phone.root / device_path.lstrip("/")


def _processes_with_argv(argv: list[str]) -> list[int]:
    """Live processes of this machine running exactly ``argv``."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def fresh_key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config directory with no ADB key in it yet."""
    config = tmp_path / "config"
    monkeypatch.setenv("EDGEFARM_CONFIG_DIR", str(config))
    get_settings.cache_clear()
    return config


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(40 * MB))
    return path, _sha256(path)


# -- authentication ----------------------------------------------------------------------------


def test_first_connect_creates_the_key_pair_and_later_connections_reuse_it(
    fresh_key_dir: Path, emulated_phone: EmulatedPhone
) -> None:
    assert not fresh_key_dir.exists()
    address = f"tcp:{emulated_phone.serial}"
    first = AdbDevice.open(address)
    try:
        assert first.shell(["echo", "hello"], timeout_s=10).stdout == "hello\n"
    finally:
        first.close()
    private, public = fresh_key_dir / "adbkey", fresh_key_dir / "adbkey.pub"
    assert private.is_file() and public.is_file()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key_blob = public.read_text().split()[0]
    # The phone stored exactly the key we offered (as "Always allow from this computer").
    assert [k.split()[0] for k in emulated_phone.authorized_keys()] == [key_blob]

    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (private, public)}
    files_before = sorted(p.name for p in fresh_key_dir.iterdir())
    second = AdbDevice.open(address)
    try:
        assert second.shell(["echo", "again"], timeout_s=10).stdout == "again\n"
    finally:
        second.close()
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (private, public)} == before
    assert sorted(p.name for p in fresh_key_dir.iterdir()) == files_before
    assert len(emulated_phone.authorized_keys()) == 1

    # A phone that takes no new keys but already trusts ours lets us in: the same key again.
    with EmulatedPhone(
        "pixel-3a", accept_new_keys=False, authorized_keys=[public.read_text()]
    ) as strict:
        third = AdbDevice.open(f"tcp:{strict.serial}")
        try:
            assert third.shell(["echo", "known"], timeout_s=10).stdout == "known\n"
        finally:
            third.close()


def test_a_phone_that_refuses_our_key_is_reported_within_the_timeout(
    fresh_key_dir: Path, short_timeouts: Any
) -> None:
    # Our new key pair made first: its generation (pure-Python RSA, seconds on a busy
    # machine) is not the wait on the phone this measures.
    load_signer(fresh_key_dir)
    with EmulatedPhone("pixel-3a", accept_new_keys=False) as phone:
        address = f"tcp:{phone.serial}"
        started = time.monotonic()
        with pytest.raises(InfrastructureError) as caught:
            AdbDevice.open(address)
        elapsed = time.monotonic() - started
        assert phone.authorized_keys() == []
    message = caught.value.message
    assert message.startswith(address) and "refused authentication" in message
    assert str(fresh_key_dir / "adbkey.pub") in message  # says which key to allow
    assert elapsed < 2 * short_timeouts.adb_s, elapsed


# -- addresses ---------------------------------------------------------------------------------


def test_a_closed_port_is_unreachable_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bound but not listening: connections are refused, and no one else can take the port.
    # "At once": a refusal is not waited out like a phone that does not answer. A long timeout
    # makes that visible without a wall-clock bound a busy CI machine can break (2.7 s once).
    monkeypatch.setenv("EDGEFARM_ADB_TIMEOUT_S", "60")
    get_settings.cache_clear()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        address = f"tcp:127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(InfrastructureError) as caught:
            AdbDevice.open(address)
        elapsed = time.monotonic() - started
    assert caught.value.message.startswith(address)
    assert "unreachable" in caught.value.message
    assert elapsed < 15.0, elapsed  # a quarter of the timeout


@pytest.mark.parametrize(
    "address", ["tcp:nohost", "tcp:h:0", "tcp:h:65536", "tcp:h:port", "tcp::5555", "usb:", "bt:x"]
)
def test_bad_addresses_are_job_errors(address: str) -> None:
    with pytest.raises(JobError) as caught:
        AdbDevice(address)
    assert caught.value.stage == "run"
    assert repr(address) in caught.value.message


# -- shell -------------------------------------------------------------------------------------


def test_shell_output_and_exit_codes(device: AdbDevice) -> None:
    result = device.shell(["echo", "hello", "world"], timeout_s=10)
    assert (result.exit_code, result.stdout) == (0, "hello world\n")
    assert device.shell(["sh", "-c", "exit 3"], timeout_s=10).exit_code == 3
    assert device.shell(["false"], timeout_s=10).exit_code == 1
    assert device.shell(["no-such-program-here"], timeout_s=10).exit_code == 127
    both = device.shell(["sh", "-c", "echo to-out; echo to-err >&2"], timeout_s=10)
    assert "to-out" in both.stdout and "to-err" in both.stdout  # the v1 shell merges streams
    # Output that looks like our own exit marker does not fool the exit status.
    tricky = device.shell(["sh", "-c", "echo __edgefarm_exit=0; exit 5"], timeout_s=10)
    assert tricky.exit_code == 5


def test_shell_env_and_cwd(device: AdbDevice) -> None:
    work = f"{WORK_ROOT}/cwd test"
    assert device.shell(["mkdir", "-p", work], timeout_s=10).exit_code == 0
    assert device.shell(["pwd"], timeout_s=10, cwd=work).stdout.strip() == work
    value = "a b; $HOME `id` 'q' \"dq\" *"
    result = device.shell(
        ["sh", "-c", 'printf "%s|%s" "$EF_ONE" "$EF_TWO"'],
        timeout_s=10,
        env={"EF_ONE": value, "EF_TWO": "2"},
    )
    assert result.stdout == f"{value}|2"
    missing = device.shell(["true"], timeout_s=10, cwd=f"{WORK_ROOT}/no-such-dir")
    assert missing.exit_code != 0
    with pytest.raises(JobError, match="environment variable"):
        device.shell(["true"], timeout_s=10, env={"BAD-NAME": "x"})
    with pytest.raises(JobError, match="outside"):
        device.shell(["true"], timeout_s=10, cwd=f"{WORK_ROOT}/../..")


def test_shell_arguments_are_passed_literally(
    device: AdbDevice, emulated_phone: EmulatedPhone
) -> None:
    work = f"{WORK_ROOT}/literal"
    assert device.shell(["mkdir", "-p", work], timeout_s=10).exit_code == 0
    for name in ("victim", "glob-a.txt", "glob-b.txt"):
        assert device.shell(["touch", f"{work}/{name}"], timeout_s=10).exit_code == 0
    pwned = [f"{WORK_ROOT}/pwned-{i}" for i in range(3)]
    args = [
        "x; rm -rf /",
        f"x; rm -f {work}/victim",
        f"$(touch {pwned[0]})",
        f"`touch {pwned[1]}`",
        f"x && touch {pwned[2]} || true",
        "it's \"quoted\" 'twice'",
        "line one\nline two",
        "*.txt",
        "~ $HOME ${PATH} $0 $@ !! %s",
        "| cat > out.txt &",
        "",
        "-n",
    ]
    result = device.shell(["printf", "%s\\n", *args], timeout_s=10, cwd=work)
    assert result.exit_code == 0
    assert result.stdout == "".join(f"{a}\n" for a in args)
    for path in pwned:
        assert not device.exists(path)
        assert not _host(emulated_phone, path).exists()
    assert device.exists(f"{work}/victim")
    assert not device.exists(f"{work}/out.txt")
    # The program name is quoted too: a "command" with a space is one (missing) file name.
    assert device.shell([f"touch {pwned[0]}"], timeout_s=10).exit_code == 127
    assert not device.exists(pwned[0])


def test_shell_timeout_kills_the_command_on_the_phone(
    device: AdbDevice, emulated_phone: EmulatedPhone
) -> None:
    sentinel = f"{WORK_ROOT}/woke-up"
    # A fractional timeout: the phone must not kill the command before it (a kill at 1 s would
    # look like an ordinary exit status 137).
    timeout_s = 1.9
    # The command would sleep 30 s: gone within the 10 s given below, it was killed, however
    # busy the machine (a short sleep could end by itself and look killed).
    command = ["sh", "-c", f"sleep 30.4142; touch {sentinel}"]
    started = time.monotonic()
    with pytest.raises(InfrastructureError) as caught:
        device.shell(command, timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    assert caught.value.message.startswith(device.id)
    assert "did not finish within" in caught.value.message
    assert caught.value.stage == "run"
    assert timeout_s <= elapsed < timeout_s + 5, elapsed
    deadline = time.monotonic() + 10.0
    while _processes_with_argv(["sleep", "30.4142"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with_argv(["sleep", "30.4142"]) == []
    assert _processes_with_argv(command) == []  # the shell too: nothing left to touch it
    assert not device.exists(sentinel)
    assert not _host(emulated_phone, sentinel).exists()
    assert device.shell(["echo", "still here"], timeout_s=10).stdout == "still here\n"


def test_a_silent_command_may_outlast_the_adb_timeout(
    short_timeouts: Any, emulated_phone: EmulatedPhone
) -> None:
    # The runner prints nothing until it is done; only the command's own timeout bounds it.
    device = AdbDevice.open(f"tcp:{emulated_phone.serial}")
    try:
        result = device.shell(
            ["sh", "-c", f"sleep {short_timeouts.adb_s + 0.5}; echo done"], timeout_s=20
        )
    finally:
        device.close()
    assert (result.exit_code, result.stdout) == (0, "done\n")


def test_commands_end_when_the_phone_stops(emulated_phone: EmulatedPhone) -> None:
    device = AdbDevice.open(f"tcp:{emulated_phone.serial}")
    failures: list[InfrastructureError] = []

    def run() -> None:
        try:
            device.shell(["sleep", "31.416"], timeout_s=30)
        except InfrastructureError as exc:
            failures.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while not (pids := _processes_with_argv(["sleep", "31.416"])):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.01)
    emulated_phone.drop()
    emulated_phone.stop()  # takes ~5 s here: it waits for the output pipe the command holds
    runner.join(timeout=10)
    # The stopped phone leaves asyncio subprocess transports behind whose finalizers fail
    # ("Event loop is closed"); run them now rather than inside pytest's own ast.parse, where
    # CPython 3.11.7 turns that into "SystemError: AST constructor recursion depth mismatch".
    gc.collect()
    device.close()
    assert failures and failures[0].message.startswith(device.id)
    # Well before the sleep's own end (31 s after it started; the stop took ~5 s): a busy
    # machine may take seconds to reap it, but only a kill ends it this early.
    deadline = time.monotonic() + 10
    while _processes_with_argv(["sleep", "31.416"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _processes_with_argv(["sleep", "31.416"])
    for pid in left:  # ours, started through the phone: do not leave it running
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"still running after the phone stopped: {pids}"


# -- files -------------------------------------------------------------------------------------


def test_push_and_pull_40_mb(
    device: AdbDevice, emulated_phone: EmulatedPhone, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    local, digest = big_file
    remote = f"{WORK_ROOT}/files/big.bin"
    device.push(local, remote)
    assert device.exists(remote)
    assert _sha256(_host(emulated_phone, remote)) == digest
    assert [(n, size) for n, size, _ in device.list_dir(f"{WORK_ROOT}/files")] == [
        ("big.bin", 40 * MB)
    ]
    back = tmp_path / "back.bin"
    device.pull(remote, back)
    assert _sha256(back) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin"]  # no partial left behind
    with pytest.raises(JobError, match="outside"):
        device.push(local, "/data/local/tmp/elsewhere.bin")
    with pytest.raises(JobError, match="outside"):
        device.pull("/data/local/tmp/edgefarm/../../../system/build.prop", back)
    with pytest.raises(JobError, match="whole work root"):
        device.remove(WORK_ROOT)


def test_push_keeps_the_executable_bit(device: AdbDevice, tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from the phone\n")
    script.chmod(0o755)
    data = tmp_path / "data.txt"
    data.write_text("not a program\n")
    data.chmod(0o644)
    device.push(script, f"{WORK_ROOT}/bin/hello.sh")
    device.push(data, f"{WORK_ROOT}/bin/data.txt")
    assert device.shell(["test", "-x", f"{WORK_ROOT}/bin/hello.sh"], timeout_s=10).exit_code == 0
    assert device.shell(["test", "-x", f"{WORK_ROOT}/bin/data.txt"], timeout_s=10).exit_code == 1
    ran = device.shell([f"{WORK_ROOT}/bin/hello.sh"], timeout_s=10)
    assert (ran.exit_code, ran.stdout) == (0, "hello from the phone\n")


def _names(device: AdbDevice, directory: str) -> list[str]:
    return sorted(name for name, _size, _mtime in device.list_dir(directory))


def test_an_interrupted_push_never_looks_complete_and_a_retry_succeeds(
    device: AdbDevice, emulated_phone: EmulatedPhone, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    local, digest = big_file
    directory = f"{WORK_ROOT}/atomic"
    fresh, existing = f"{directory}/fresh.bin", f"{directory}/existing.bin"
    old = tmp_path / "old.bin"
    old.write_bytes(b"the previous version\n")
    device.push(old, existing)

    for dest in (fresh, existing):
        emulated_phone.kill_after_bytes = 10 * MB
        with pytest.raises(InfrastructureError) as caught:
            device.push(local, dest)
        assert caught.value.message.startswith(device.id)
        assert emulated_phone.kill_after_bytes is None  # the fault fired
        # Only a temporary name may be left over, never the destination itself.
        for name in _names(device, directory):
            assert name == "existing.bin" or ".partial-" in name, name
    assert not device.exists(fresh)
    assert _host(emulated_phone, existing).read_bytes() == b"the previous version\n"

    device.push(local, fresh)  # reconnects by itself
    assert _sha256(_host(emulated_phone, fresh)) == digest
    assert [n for n in _names(device, directory) if ".partial-" not in n] == [
        "existing.bin",
        "fresh.bin",
    ]


def test_a_full_disk_is_reported_and_leaves_nothing(
    device: AdbDevice, emulated_phone: EmulatedPhone, big_file: tuple[Path, str]
) -> None:
    local, digest = big_file
    dest = f"{WORK_ROOT}/full/big.bin"
    emulated_phone.quota_bytes = 4 * MB
    with pytest.raises(InfrastructureError) as caught:
        device.push(local, dest)
    message = caught.value.message
    assert message.startswith(device.id)
    assert "disk full" in message or "no space" in message.lower()
    assert not device.exists(dest)
    assert [n for n in _names(device, f"{WORK_ROOT}/full") if "big.bin" in n] == []
    assert device.shell(["echo", "alive"], timeout_s=10).stdout == "alive\n"
    emulated_phone.quota_bytes = None
    device.push(local, dest)
    assert _sha256(_host(emulated_phone, dest)) == digest


def test_a_phone_that_stalls_mid_push_times_out(
    short_timeouts: Any, emulated_phone: EmulatedPhone, big_file: tuple[Path, str]
) -> None:
    local, _digest = big_file
    dest = f"{WORK_ROOT}/stall/big.bin"
    device = AdbDevice.open(f"tcp:{emulated_phone.serial}")
    host_dir = _host(emulated_phone, f"{WORK_ROOT}/stall")
    stalled = threading.Event()

    def stall_once_data_flows() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            partial = list(host_dir.glob("big.bin.partial-*")) if host_dir.is_dir() else []
            try:
                if partial and partial[0].stat().st_size > 2 * MB:
                    emulated_phone.stall()
                    stalled.set()
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.002)

    watcher = threading.Thread(target=stall_once_data_flows, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        with pytest.raises(InfrastructureError) as caught:
            device.push(local, dest)
        elapsed = time.monotonic() - started
        assert stalled.is_set()
        assert caught.value.message.startswith(device.id)
        assert "timed out" in caught.value.message
        # The transfer timeout, then one connection attempt to clean up.
        assert elapsed < short_timeouts.transfer_s + short_timeouts.adb_s + 3, elapsed
    finally:
        watcher.join()
        emulated_phone.resume()
    assert not device.exists(dest)
    device.close()


# -- facts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "manufacturer", "soc", "release", "sdk", "nnapi"),
    [
        ("dimensity-9200", "vivo", "MT6985", "14", 34, 7),
        ("snapdragon-8-gen-2", "samsung", "SM8550", "13", 33, 6),
        ("pixel-3a", "Google", "sdm670", "9", 28, 2),  # no ro.soc.* before Android 12
    ],
)
def test_facts_of_each_profile(
    profile: str, manufacturer: str, soc: str, release: str, sdk: int, nnapi: int
) -> None:
    with EmulatedPhone(profile) as phone:
        address = f"tcp:{phone.serial}"
        device = AdbDevice.open(address)
        try:
            facts = device.facts()
        finally:
            device.close()
    assert facts.id == address and facts.kind == "adb"
    assert facts.manufacturer == manufacturer
    assert facts.model == get_profile(profile).model and "emulated" in facts.model
    assert facts.soc == soc
    assert facts.abi == "arm64-v8a"
    assert facts.android_release == release
    assert facts.sdk_level == sdk
    assert facts.nnapi_feature_level == nnapi
    assert facts.emulated is True
    assert facts.target == "host"  # it runs this machine's binaries
    assert facts.fingerprint.startswith(f"{manufacturer.lower()}/")
    assert facts.extra["serialno"].startswith("EF")
    document = facts.to_dict()
    assert document["nnapi_feature_level"] == nnapi and document["emulated"] is True


GETPROP_PIXEL_6 = """\
[dalvik.vm.heapsize]: [512m]
[ro.board.platform]: [gs101]
[ro.build.fingerprint]: [google/oriole/oriole:14/UQ1A.240205.004/11269751:user/release-keys]
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.hardware]: [oriole]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [Pixel 6]
[ro.serialno]: [1A2B3C4D5E]
[ro.soc.manufacturer]: [Google]
[ro.soc.model]: [GS101]
[persist.sys.locale]: []
[ro.odd.value]: [has ]: inside]
not a property line
"""


def test_parse_getprop_and_facts_from_literal_text() -> None:
    # Old adbd turns \n into \r\n; stray blanks around a line are ignored too.
    props = parse_getprop(GETPROP_PIXEL_6 + "  [ro.indented]: [yes]  \r\n")
    assert props["ro.product.model"] == "Pixel 6"
    assert props["persist.sys.locale"] == ""
    assert props["ro.odd.value"] == "has ]: inside"
    assert props["ro.indented"] == "yes"
    assert len(props) == 15
    facts = facts_from_props("usb:1A2B3C4D5E", props)
    assert (facts.manufacturer, facts.model, facts.soc) == ("Google", "Pixel 6", "GS101")
    assert (facts.sdk_level, facts.nnapi_feature_level) == (34, 7)
    assert facts.abi == "arm64-v8a" and facts.android_release == "14"
    assert facts.emulated is False and facts.target == "android-arm64"
    assert "exec_abi" not in facts.extra and facts.extra["serialno"] == "1A2B3C4D5E"

    # An Android 8.0 phone: no NNAPI, no ro.soc.*, the SoC from the board platform.
    old = parse_getprop(
        "[ro.build.version.sdk]: [26]\n[ro.board.platform]: [msm8998]\n"
        "[ro.hardware]: [qcom]\n[ro.product.cpu.abi]: [arm64-v8a]\n"
    )
    old_facts = facts_from_props("tcp:10.0.0.7:5555", old)
    assert (old_facts.sdk_level, old_facts.nnapi_feature_level) == (26, None)
    assert old_facts.soc == "msm8998"
    assert facts_from_props("x", {"ro.hardware": "qcom"}).soc == "qcom"
    assert facts_from_props("x", {"ro.build.version.sdk": "S"}).sdk_level is None
    assert facts_from_props("x", {}).soc == ""
    assert parse_getprop("") == {}


@pytest.mark.parametrize(
    ("sdk", "level"),
    [(None, None), (21, None), (26, None), (27, 1), (28, 2), (29, 3), (30, 4), (31, 5),
     (32, 5), (33, 6), (34, 7), (35, 8), (36, 8)],
)  # fmt: skip
def test_nnapi_feature_level(sdk: int | None, level: int | None) -> None:
    assert nnapi_feature_level(sdk) == level


def test_parse_state_from_literal_text() -> None:
    state = parse_state(
        "T soc_max 41500\nT skin 38\nT broken n/a\nT bad_zone\n"
        "B 73 312 Discharging\n"
        "C cpu0 1800000 schedutil 2000000\nC cpu7 3050000 performance\nC cpu8 offline\n"
        "garbage line\n"
    )
    assert state["thermal_c"] == {"soc_max": 41.5, "skin": 38.0}
    assert state["battery"] == {"level_pct": 73, "temp_c": 31.2, "status": "Discharging"}
    assert state["cpu"] == {
        "cpu0": {"cur_khz": 1800000, "governor": "schedutil", "max_khz": 2000000},
        "cpu7": {"cur_khz": 3050000, "governor": "performance"},
    }
    assert state["max_temp_c"] == 41.5
    # No thermal zones: the battery is the only thermometer.
    assert parse_state("B 50 295 Charging\n")["max_temp_c"] == 29.5
    assert parse_state("")["max_temp_c"] is None


# -- state and cooldown ------------------------------------------------------------------------


def test_state_reports_thermal_zones_battery_and_cpu_frequencies(
    device: AdbDevice, emulated_phone: EmulatedPhone
) -> None:
    profile = emulated_phone.profile
    state = device.state()
    assert list(state["thermal_c"]) == [z.type for z in profile.thermal_zones]
    assert all(20.0 < t < 45.0 for t in state["thermal_c"].values()), state["thermal_c"]
    assert state["max_temp_c"] == max(state["thermal_c"].values())
    battery = state["battery"]
    assert abs(battery["level_pct"] - profile.battery_capacity) <= 1
    assert battery["status"] in ("Charging", "Discharging", "Full")
    assert 20.0 < battery["temp_c"] < 45.0
    assert sorted(state["cpu"]) == [f"cpu{i}" for i in range(profile.cpu_count)]
    for cpu in state["cpu"].values():
        assert 0 < cpu["cur_khz"] <= cpu["max_khz"]
        assert cpu["governor"] == "schedutil"
    assert state["cpu"]["cpu7"]["max_khz"] == profile.clusters[-1].max_khz


def test_a_hot_phone_reads_hot(device: AdbDevice, emulated_phone: EmulatedPhone) -> None:
    emulated_phone.set_temperature(70.0)
    state = device.state()
    assert state["max_temp_c"] == pytest.approx(70.0, abs=0.5)
    assert state["thermal_c"]["soc_max"] == pytest.approx(70.0, abs=0.5)
    assert state["battery"]["temp_c"] < 60.0  # the battery trails the die
    emulated_phone.set_temperature(30.0)
    assert device.state()["max_temp_c"] == pytest.approx(30.0, abs=0.5)


@pytest.fixture
def hot_phone(emulated_phone: EmulatedPhone) -> Iterator[EmulatedPhone]:
    emulated_phone.set_temperature(70.0)
    yield emulated_phone


def test_wait_cool_waits_until_the_phone_has_cooled(
    device: AdbDevice, hot_phone: EmulatedPhone
) -> None:
    timer = threading.Timer(1.0, hot_phone.set_temperature, args=(30.0,))
    timer.start()
    try:
        report = wait_cool(device, max_temp_c=45.0, max_wait_s=20.0, poll_s=0.2)
    finally:
        timer.cancel()
    assert report["cooled"] is True
    assert 0.9 <= report["waited_s"] < 5.0, report
    assert report["start_temp_c"] == pytest.approx(70.0, abs=0.5)
    assert report["end_temp_c"] <= 45.0
    assert report["threshold_c"] == 45.0
    assert report["state"]["max_temp_c"] == report["end_temp_c"]


def test_wait_cool_gives_up_after_max_wait(device: AdbDevice, hot_phone: EmulatedPhone) -> None:
    started = time.monotonic()
    report = wait_cool(device, max_temp_c=45.0, max_wait_s=1.0, poll_s=0.3)
    elapsed = time.monotonic() - started
    assert report["cooled"] is False
    assert 1.0 <= report["waited_s"] <= elapsed + 0.001 < 4.0, (report, elapsed)
    assert report["end_temp_c"] > 45.0


def test_wait_cool_does_not_wait_for_a_cool_phone(device: AdbDevice) -> None:
    report = wait_cool(device, max_temp_c=45.0, max_wait_s=30.0, poll_s=5.0)
    assert report["cooled"] is True and report["waited_s"] == 0.0
    assert report["start_temp_c"] == report["end_temp_c"] < 45.0


# -- health ------------------------------------------------------------------------------------


def test_health_of_a_fresh_phone_then_with_the_runtime_bundle(device: AdbDevice) -> None:
    bundle = runtime_bundle("host")
    report = device.health(bundle_hash=bundle.hash)
    assert report["ok"] is True and report["problem"] is None
    assert report["reachable"] is True and report["shell"] is True
    assert report["free_bytes"] > 64 * MB
    assert report["bundle_present"] is False
    ensure_bundle(device, bundle)
    assert device.health(bundle_hash=bundle.hash)["bundle_present"] is True
    assert device.health()["bundle_present"] is None  # not asked


def test_health_of_a_stalled_then_stopped_phone_does_not_raise(
    short_timeouts: Any, emulated_phone: EmulatedPhone
) -> None:
    device = AdbDevice.open(f"tcp:{emulated_phone.serial}")
    try:
        emulated_phone.stall()
        started = time.monotonic()
        stalled = device.health()
        elapsed = time.monotonic() - started
        assert stalled["ok"] is False and stalled["reachable"] is False
        assert stalled["problem"].startswith(device.id)
        assert elapsed < 2 * short_timeouts.adb_s + 2, elapsed
        emulated_phone.resume()
        assert device.health()["ok"] is True  # reconnects once the phone answers again

        emulated_phone.stop()
        # Still holding a connection to the phone that went away: it must not count.
        gone = device.health(bundle_hash="0" * 24)
        assert gone["ok"] is False and gone["reachable"] is False
        assert gone["problem"].startswith(device.id)
        again = device.health()
        assert again["ok"] is False and again["reachable"] is False
        assert again["problem"].startswith(device.id) and "unreachable" in again["problem"]
    finally:
        device.close()
