"""The emulated phone, driven over real TCP by adb-shell's AdbDeviceTcp, as the harness does."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner

from harness.devices.emulator import PROFILES, EmulatedPhone, get_profile
from harness.devices.emulator import protocol as wire
from harness.devices.emulator.paths import PathEscapeError
from harness.devices.emulator.protocol import AndroidPublicKey
from harness.devices.emulator.sandbox import Sandbox
from harness.errors import InfrastructureError

MB = 1024 * 1024


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> PythonRSASigner:
    key = tmp_path_factory.mktemp("adbkey") / "adbkey"
    keygen(str(key))
    return PythonRSASigner.FromRSAKeyPath(str(key))


@pytest.fixture(scope="module")
def other_signer(tmp_path_factory: pytest.TempPathFactory) -> PythonRSASigner:
    key = tmp_path_factory.mktemp("otherkey") / "adbkey"
    keygen(str(key))
    return PythonRSASigner.FromRSAKeyPath(str(key))


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[EmulatedPhone]:
    with EmulatedPhone("dimensity-9200", root=tmp_path / "phone") as p:
        yield p


def connect(
    phone: EmulatedPhone, signer: PythonRSASigner | None, *, timeout_s: float = 10.0
) -> AdbDeviceTcp:
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=timeout_s)
    assert dev.connect(rsa_keys=[signer] if signer else None, auth_timeout_s=timeout_s)
    return dev


def shell_once(phone: EmulatedPhone, signer: PythonRSASigner | None, command: str) -> str:
    """Connect, run one command, disconnect."""
    dev = connect(phone, signer)
    try:
        out: str = dev.shell(command)
        return out
    finally:
        dev.close()


@pytest.fixture
def adb(phone: EmulatedPhone, signer: PythonRSASigner) -> Iterator[AdbDeviceTcp]:
    dev = connect(phone, signer)
    yield dev
    dev.close()


def random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# -- authentication -------------------------------------------------------------------------


def test_new_key_is_stored_and_then_signing_suffices(
    tmp_path: Path, signer: PythonRSASigner
) -> None:
    root = tmp_path / "phone"
    with EmulatedPhone(root=root) as phone:
        dev = connect(phone, signer)
        assert dev.shell("echo ok") == "ok\n"
        dev.close()
        stored = phone.adb_keys_path.read_text()
    assert signer.GetPublicKey().split()[0] in stored

    # Same phone filesystem, but new keys are refused now: only the stored key's signature
    # of the AUTH token can let the client in.
    with EmulatedPhone(root=root, accept_new_keys=False) as phone:
        dev = connect(phone, signer)
        assert dev.shell("echo again") == "again\n"
        dev.close()


def test_refusing_phone_fails_authentication_within_the_timeout(
    tmp_path: Path, signer: PythonRSASigner, other_signer: PythonRSASigner
) -> None:
    with EmulatedPhone(
        root=tmp_path / "phone",
        accept_new_keys=False,
        authorized_keys=[other_signer.GetPublicKey()],
    ) as phone:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=1.0)
        start = time.monotonic()
        with pytest.raises((adb_exc.TcpTimeoutException, adb_exc.AdbTimeoutError)):
            dev.connect(rsa_keys=[signer], auth_timeout_s=1.0, read_timeout_s=1.0)
        assert time.monotonic() - start < 5.0
        dev.close()
        assert signer.GetPublicKey().split()[0] not in phone.adb_keys_path.read_text()
        # The key it was given is still good.
        assert shell_once(phone, other_signer, "echo in") == "in\n"


def test_client_without_keys_is_told_auth_is_required(phone: EmulatedPhone) -> None:
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=5.0)
    with pytest.raises(adb_exc.DeviceAuthError):
        dev.connect(rsa_keys=None)
    dev.close()


def test_no_auth_mode(tmp_path: Path) -> None:
    with EmulatedPhone(root=tmp_path / "phone", require_auth=False) as phone:
        assert shell_once(phone, None, "echo open") == "open\n"


def test_public_key_parsing_and_signature_check(
    signer: PythonRSASigner, other_signer: PythonRSASigner
) -> None:
    key = AndroidPublicKey.parse(signer.GetPublicKey())
    assert key.size_bytes == 256 and key.exponent == 65537
    token = os.urandom(20)
    assert key.verify(token, signer.Sign(token))
    assert not key.verify(token, other_signer.Sign(token))
    assert not key.verify(os.urandom(20), signer.Sign(token))
    with pytest.raises(ValueError):
        AndroidPublicKey.parse("bm90IGEga2V5 user@host")


# -- shell ------------------------------------------------------------------------------------


def test_shell_output_and_exit_codes(adb: AdbDeviceTcp) -> None:
    assert adb.shell("echo hi") == "hi\n"
    assert adb.shell("false; echo $?") == "1\n"
    assert adb.shell("sh -c 'exit 3'; echo $?") == "3\n"
    # v1 shell: stderr comes back mixed into the one stream, as on a phone without shell_v2
    assert adb.shell("echo out; echo err >&2") == "out\nerr\n"
    assert adb.shell("pwd; echo $HOME $TMPDIR") == "/\n/ /data/local/tmp\n"


def test_long_running_command_streams_output(adb: AdbDeviceTcp) -> None:
    start = time.monotonic()
    arrivals = []
    for line in adb.streaming_shell("for i in 1 2 3; do echo line$i; sleep 0.4; done"):
        arrivals.append((time.monotonic() - start, line))
    text = "".join(line for _t, line in arrivals)
    assert text == "line1\nline2\nline3\n"
    end = time.monotonic() - start
    assert end >= 1.2
    assert arrivals[0][0] < end - 0.6, "first output must arrive while the command still runs"


def test_interactive_shell_is_refused_with_a_message(adb: AdbDeviceTcp) -> None:
    assert "no interactive shell" in adb.shell("")


def test_closing_the_connection_kills_the_command(
    phone: EmulatedPhone, signer: PythonRSASigner
) -> None:
    dev = connect(phone, signer)
    lines = dev.streaming_shell("echo $$; sleep 30; echo never")
    pid = int(next(lines))
    os.kill(pid, 0)  # running (the namespace shares the host's pid numbers)
    dev.close()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the command outlived its connection")


def test_harness_style_command_runs_a_pushed_program(
    adb: AdbDeviceTcp, phone: EmulatedPhone, tmp_path: Path
) -> None:
    runner = tmp_path / "edgefarm-runner"
    runner.write_text('#!/bin/sh\necho "lib=$LD_LIBRARY_PATH cwd=$(pwd)"\ncat "$2"\n')
    data = tmp_path / "in0.npy"
    data.write_bytes(b"tensor-bytes\n")
    base = "/data/local/tmp/edgefarm"
    adb.push(str(runner), f"{base}/run1/edgefarm-runner", st_mode=stat.S_IFREG | 0o755)
    adb.push(str(data), f"{base}/run1/in0.npy")
    out = adb.shell(
        f"cd {base}/run1 && LD_LIBRARY_PATH={base}/rt/abc ./edgefarm-runner "
        f"--input {base}/run1/in0.npy; echo rc=$?"
    )
    assert out == f"lib={base}/rt/abc cwd={base}/run1\ntensor-bytes\nrc=0\n"
    assert (phone.root / "data/local/tmp/edgefarm/run1/in0.npy").read_bytes() == b"tensor-bytes\n"
    listing = adb.shell(f"ls {base}/run1; stat -c '%s %a' {base}/run1/edgefarm-runner")
    assert listing.splitlines() == ["edgefarm-runner", "in0.npy", f"{runner.stat().st_size} 755"]
    assert adb.shell("ls /data/local/tmp/missing; echo rc=$?").endswith("rc=2\n")


def test_namespace_shell_sees_only_the_phone(adb: AdbDeviceTcp, phone: EmulatedPhone) -> None:
    assert phone.isolation == "namespace"  # the default: confined, or the phone does not start
    top = adb.shell("ls /").split()
    assert {"data", "sdcard", "sys", "system"} <= set(top)
    assert not {"work", "home", "root", "tmp"} & set(top)
    assert "Read-only" in adb.shell("touch /usr/edgefarm-should-fail 2>&1")
    assert adb.shell("id -u") == "2000\n"
    assert adb.shell("df /data/local/tmp | tail -1").split()[-1] == "/data"
    adb.shell("ln -s /data/local/tmp/target /data/local/tmp/link; echo x > /data/local/tmp/link")
    assert (phone.root / "data/local/tmp/target").read_text() == "x\n"


def test_rewrite_isolation_maps_literal_device_paths(
    tmp_path: Path, signer: PythonRSASigner
) -> None:
    with EmulatedPhone(root=tmp_path / "phone", isolation="rewrite") as phone:
        assert phone.isolation == "rewrite"
        dev = connect(phone, signer)
        dev.shell("mkdir -p /data/local/tmp/w && echo v > /data/local/tmp/w/f")
        assert (phone.root / "data/local/tmp/w/f").read_text() == "v\n"
        assert dev.shell("cd /data/local/tmp/w && pwd && cat f") == "/data/local/tmp/w\nv\n"
        assert dev.shell("getprop ro.edgefarm.emulated") == "1\n"
        # The emulator's own file, not the host's: "Discharging" while a shell command runs
        # (the cat itself, when the emulator refreshes the file during it).
        assert dev.shell("cat /sys/class/power_supply/battery/status").strip() in (
            "Charging",
            "Discharging",
            "Full",
        )
        dev.close()


# -- getprop -------------------------------------------------------------------------------


def test_getprop_all_and_one(adb: AdbDeviceTcp, phone: EmulatedPhone) -> None:
    lines = adb.shell("getprop").splitlines()
    assert lines and all(re.fullmatch(r"\[[^\]]+\]: \[.*\]", ln) for ln in lines)
    keys = [ln[1 : ln.index("]")] for ln in lines]
    assert keys == sorted(keys)
    assert "[ro.edgefarm.emulated]: [1]" in lines
    assert f"[service.adb.tcp.port]: [{phone.port}]" in lines
    assert adb.shell("getprop ro.soc.model") == "MT6985\n"
    assert adb.shell("getprop ro.soc.manufacturer") == "Mediatek\n"
    assert adb.shell("getprop ro.product.model").endswith("(edgefarm emulated)\n")
    assert adb.shell("getprop ro.build.version.sdk") == "34\n"
    assert adb.shell("getprop no.such.prop") == "\n"
    assert adb.shell("getprop no.such.prop fallback") == "fallback\n"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_says_it_is_emulated(name: str) -> None:
    props = get_profile(name).props
    assert props["ro.edgefarm.emulated"] == "1"
    assert props["ro.product.model"].endswith("(edgefarm emulated)")
    assert "edgefarm_emulated" in props["ro.build.fingerprint"]
    assert props["ro.product.cpu.abi"] == "arm64-v8a"
    assert props["ro.edgefarm.exec_abi"]


def test_profiles_mirror_their_phones() -> None:
    qc = get_profile("snapdragon-8-gen-2").props
    assert (qc["ro.soc.model"], qc["ro.board.platform"], qc["ro.build.version.sdk"]) == (
        "SM8550",
        "kalama",
        "33",
    )
    old = get_profile("pixel-3a").props
    assert old["ro.build.version.sdk"] == "28"
    assert "ro.soc.model" not in old  # ro.soc.* arrived with Android 12


# -- sync: push, pull, stat, list -------------------------------------------------------


def test_push_and_pull_30_mb(adb: AdbDeviceTcp, phone: EmulatedPhone, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = random_file(src, 30 * MB)
    adb.push(str(src), "/data/local/tmp/edgefarm/big.bin", read_timeout_s=30)
    assert (
        hashlib.sha256((phone.root / "data/local/tmp/edgefarm/big.bin").read_bytes()).hexdigest()
        == digest
    )
    back = tmp_path / "back.bin"
    adb.pull("/data/local/tmp/edgefarm/big.bin", str(back), read_timeout_s=30)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert adb.shell("sha256sum /data/local/tmp/edgefarm/big.bin").split()[0] == digest


def test_stat_and_list(adb: AdbDeviceTcp, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"12345")
    adb.push(str(src), "/data/local/tmp/d/f.txt", mtime=1_700_000_000)
    mode, size, mtime = adb.stat("/data/local/tmp/d/f.txt")
    assert stat.S_ISREG(mode) and size == 5 and mtime == 1_700_000_000
    mode, _size, _mtime = adb.stat("/data/local/tmp/d")
    assert stat.S_ISDIR(mode)
    assert adb.stat("/data/local/tmp/missing") == (0, 0, 0)
    names = {bytes(e.filename).decode(): e for e in adb.list("/data/local/tmp/d")}
    assert set(names) == {".", "..", "f.txt"}
    assert names["f.txt"].size == 5
    assert adb.list("/data/local/tmp/missing-dir") == []


def test_pull_of_a_missing_file_fails_clearly(adb: AdbDeviceTcp, tmp_path: Path) -> None:
    with pytest.raises(adb_exc.AdbCommandFailureException, match="No such file or directory"):
        adb.pull("/data/local/tmp/nope", str(tmp_path / "nope"))
    assert adb.shell("echo still-usable") == "still-usable\n"


def test_paths_escaping_the_sandbox_are_refused(
    adb: AdbDeviceTcp, phone: EmulatedPhone, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    escape = "/data/../../" + os.path.relpath(outside, "/")
    with pytest.raises(adb_exc.AdbCommandFailureException, match="escapes"):
        adb.pull(escape, str(tmp_path / "got"))
    src = tmp_path / "payload"
    src.write_text("x")
    with pytest.raises(adb_exc.PushFailedError, match="escapes"):
        adb.push(str(src), "/data/../../" + os.path.relpath(tmp_path / "written", "/"))
    assert not (tmp_path / "written").exists()
    # A symlink climbing out of the root is refused too.
    link = phone.root / "data/local/tmp/evil"
    link.symlink_to(os.path.relpath(tmp_path, link.parent))
    with pytest.raises(adb_exc.AdbCommandFailureException, match="escapes"):
        adb.pull("/data/local/tmp/evil/outside.txt", str(tmp_path / "got"))
    with pytest.raises(adb_exc.AdbCommandFailureException, match="Permission denied"):
        adb.pull("/.edgefarm-emulator/adb_keys", str(tmp_path / "keys"))
    assert outside.read_text() == "secret"


def test_full_disk_refuses_the_push(
    adb: AdbDeviceTcp, phone: EmulatedPhone, tmp_path: Path
) -> None:
    phone.quota_bytes = 2 * MB
    big = tmp_path / "big.bin"
    random_file(big, 3 * MB)
    with pytest.raises(adb_exc.PushFailedError, match="No space left on device"):
        adb.push(str(big), "/data/local/tmp/big.bin")
    assert not (phone.root / "data/local/tmp/big.bin").exists()
    small = tmp_path / "small.bin"
    random_file(small, MB)
    adb.push(str(small), "/data/local/tmp/small.bin")
    assert adb.stat("/data/local/tmp/small.bin")[1] == MB


# -- faults -------------------------------------------------------------------------------


def test_drop_mid_transfer_fails_the_client_fast(
    phone: EmulatedPhone, signer: PythonRSASigner, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    digest = random_file(src, 20 * MB)
    phone.kill_after_bytes = 4 * MB
    dev = connect(phone, signer, timeout_s=3.0)
    start = time.monotonic()
    with pytest.raises(ConnectionResetError):
        dev.push(str(src), "/data/local/tmp/big.bin", read_timeout_s=3.0)
    assert time.monotonic() - start < 8.0
    dev.close()
    # One-shot: the retry goes through.
    dev = connect(phone, signer)
    dev.push(str(src), "/data/local/tmp/big.bin", read_timeout_s=30)
    assert adb_sha256(dev, "/data/local/tmp/big.bin") == digest
    dev.close()


def adb_sha256(dev: AdbDeviceTcp, path: str) -> str:
    out: str = dev.shell(f"sha256sum {path}")
    return out.split()[0]


def test_drop_closes_every_connection(phone: EmulatedPhone, signer: PythonRSASigner) -> None:
    dev = connect(phone, signer, timeout_s=3.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            dev.shell("sleep 20; echo done", read_timeout_s=3.0)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    phone.drop()
    t.join(timeout=8.0)
    dev.close()
    assert not t.is_alive() and errors
    assert shell_once(phone, signer, "echo back") == "back\n"


def test_stall_makes_the_client_time_out(phone: EmulatedPhone, signer: PythonRSASigner) -> None:
    dev = connect(phone, signer, timeout_s=1.0)
    phone.stall()
    start = time.monotonic()
    with pytest.raises((adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException)):
        dev.shell("echo hi", transport_timeout_s=1.0, read_timeout_s=1.0)
    assert time.monotonic() - start < 4.0
    dev.close()
    phone.resume()
    assert shell_once(phone, signer, "echo awake") == "awake\n"


# -- several phones ---------------------------------------------------------------------


def test_two_emulators_at_once(tmp_path: Path, signer: PythonRSASigner) -> None:
    with (
        EmulatedPhone("dimensity-9200", root=tmp_path / "a") as a,
        EmulatedPhone("snapdragon-8-gen-2", root=tmp_path / "b") as b,
    ):
        assert a.port != b.port and a.serial == f"127.0.0.1:{a.port}"
        da, db = connect(a, signer), connect(b, signer)
        assert da.shell("getprop ro.soc.model") == "MT6985\n"
        assert db.shell("getprop ro.soc.model") == "SM8550\n"
        da.shell("echo a > /data/local/tmp/who")
        assert db.shell("cat /data/local/tmp/who 2>/dev/null; echo rc=$?") == "rc=1\n"
        da.close()
        db.close()


def test_emulator_in_its_own_process(tmp_path: Path, signer: PythonRSASigner) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.devices.emulator",
            "--port",
            "0",
            "--profile",
            "pixel-3a",
            "--root",
            str(tmp_path / "phone"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"emulated phone pixel-3a listening on 127\.0\.0\.1:(\d+), root (\S+)", line)
        assert m, line
        dev = AdbDeviceTcp("127.0.0.1", int(m.group(1)), default_transport_timeout_s=10.0)
        assert dev.connect(rsa_keys=[signer], auth_timeout_s=10.0)
        assert dev.shell("getprop ro.build.version.sdk") == "28\n"
        dev.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        tail = proc.stderr.read()
        proc.stderr.close()
    assert "stopping" in tail


def test_port_in_use_is_an_infrastructure_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(InfrastructureError, match="cannot listen"):
            EmulatedPhone(root=tmp_path / "phone", port=busy).start()


# -- hardware state -----------------------------------------------------------------------


def test_thermal_battery_and_cpufreq_files(adb: AdbDeviceTcp, phone: EmulatedPhone) -> None:
    def zone0() -> int:
        return int(adb.shell("cat /sys/class/thermal/thermal_zone0/temp"))

    assert adb.shell("cat /sys/class/thermal/thermal_zone0/type") == "soc_max\n"
    phone.set_temperature(70.0)
    assert abs(zone0() - 70_000) < 500
    phone.set_temperature(38.5)
    assert abs(zone0() - 38_500) < 500
    battery = adb.shell("cd /sys/class/power_supply/battery && cat capacity temp status").split()
    assert 1 <= int(battery[0]) <= 100 and 200 < int(battery[1]) < 500
    assert battery[2] in ("Charging", "Discharging", "Full")
    n = get_profile("dimensity-9200").cpu_count
    freqs = adb.shell(
        "for c in /sys/devices/system/cpu/cpu[0-9]*; do "
        "cat $c/cpufreq/scaling_cur_freq $c/cpufreq/cpuinfo_max_freq $c/cpufreq/scaling_governor; "
        "done"
    ).split()
    assert len(freqs) == 3 * n
    assert int(freqs[-2]) == 3_050_000 and freqs[-1] == "schedutil"
    # Hot enough to throttle: the big core's ceiling drops below its maximum.
    phone.set_temperature(85.0)
    cpu7 = "/sys/devices/system/cpu/cpu7/cpufreq"
    ceiling = int(adb.shell(f"cat {cpu7}/scaling_max_freq"))
    assert ceiling < int(adb.shell(f"cat {cpu7}/cpuinfo_max_freq"))


def test_temperature_rises_under_load_and_decays_when_idle(
    tmp_path: Path, signer: PythonRSASigner
) -> None:
    with EmulatedPhone(root=tmp_path / "phone", thermal_time_constant_s=1.0, tick_s=0.1) as phone:
        dev = connect(phone, signer)
        idle = phone.temperature_c
        dev.shell("sleep 1.5")
        hot = phone.temperature_c
        assert hot > idle + 5
        time.sleep(1.5)
        assert phone.temperature_c < hot - 3
        temp = int(dev.shell("cat /sys/class/thermal/thermal_zone0/temp"))
        assert abs(temp - phone.temperature_c * 1000) < 3000
        dev.close()


def test_sandbox_resolves_like_a_chroot(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "root")
    box.prepare()
    root = box.root
    (root / "data/local/tmp/abs").symlink_to("/data/local")
    assert box.resolve("/data/local/tmp/abs/tmp") == root / "data/local/tmp"
    assert box.resolve("data/./local//tmp/") == root / "data/local/tmp"
    assert box.resolve("/data/local/../local/tmp") == root / "data/local/tmp"
    (root / "data/local/tmp/loop").symlink_to("loop")
    for bad in ("/..", "/data/../../etc", "/data/local/tmp/loop/x", "/.edgefarm-emulator"):
        with pytest.raises(PathEscapeError):
            box.resolve(bad)


# -- the wire protocol, spoken by hand --------------------------------------------------


class RawClient:
    """A minimal ADB host speaking protocol version 0x01000001 with a 4 KiB max payload."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.sock.sendall(wire.pack(command, arg0, arg1, data, with_checksum=True))

    def recv(self, timeout_s: float = 5.0) -> tuple[int, int, int, bytes]:
        self.sock.settimeout(timeout_s)
        header = wire.parse_header(self._exactly(wire.HEADER.size))
        data = self._exactly(header.data_length)
        return header.command, header.arg0, header.arg1, data

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()


def test_streams_multiplex_with_one_write_in_flight_each(tmp_path: Path) -> None:
    with EmulatedPhone(root=tmp_path / "phone", require_auth=False) as phone:
        c = RawClient(phone.port)
        try:
            c.send(wire.A_CNXN, 0x01000001, 4096, b"host::features=shell_v2\0")
            cmd, version, maxdata, banner = c.recv()
            assert (cmd, version, maxdata) == (wire.A_CNXN, 0x01000001, 4096)
            assert banner.startswith(b"device::ro.product.name=PD2242_edgefarm_emulated;")
            assert banner.endswith(b"features=stat_v2,fixed_push_mkdir")

            c.send(wire.A_OPEN, 7, 0, b"shell:seq 1 3000\0")  # ~14 KB: several WRTEs
            cmd, ours1, theirs, _ = c.recv()
            assert (cmd, theirs) == (wire.A_OKAY, 7)
            cmd, _, _, first = c.recv()
            assert cmd == wire.A_WRTE and 0 < len(first) <= 4096
            # Not acknowledged yet: stream 7 must stay quiet, while a second stream works.
            c.send(wire.A_OPEN, 8, 0, b"shell:echo two\0")
            cmd, ours2, theirs, _ = c.recv()
            assert (cmd, theirs) == (wire.A_OKAY, 8)
            cmd, src, dst, data = c.recv()
            assert (cmd, src, dst, data) == (wire.A_WRTE, ours2, 8, b"two\n")
            c.send(wire.A_OKAY, 8, ours2)
            assert c.recv()[:3] == (wire.A_CLSE, ours2, 8)
            c.send(wire.A_CLSE, 8, ours2)
            with pytest.raises(TimeoutError):
                c.recv(timeout_s=0.3)

            out = first
            while True:
                c.send(wire.A_OKAY, 7, ours1)
                cmd, src, dst, data = c.recv()
                assert (src, dst) == (ours1, 7)
                if cmd == wire.A_CLSE:
                    break
                assert cmd == wire.A_WRTE and len(data) <= 4096
                out += data
            assert out.decode().split() == [str(i) for i in range(1, 3001)]
            c.send(wire.A_CLSE, 7, ours1)

            c.send(wire.A_OPEN, 9, 0, b"no-such-service:\0")
            assert c.recv()[:3] == (wire.A_CLSE, 0, 9)

            # A client CLSE kills the command and is answered with a CLSE.
            c.send(wire.A_OPEN, 10, 0, b"shell:echo $$; sleep 30\0")
            _, ours4, _, _ = c.recv()
            cmd, _, _, pid_text = c.recv()
            pid = int(pid_text)
            c.send(wire.A_CLSE, 10, ours4)
            assert c.recv()[:3] == (wire.A_CLSE, ours4, 10)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the command outlived its stream")
        finally:
            c.close()


def test_bad_checksum_from_a_v1_client_closes_the_connection(tmp_path: Path) -> None:
    with EmulatedPhone(root=tmp_path / "phone", require_auth=False) as phone:
        c = RawClient(phone.port)
        try:
            packet = bytearray(
                wire.pack(wire.A_CNXN, 0x01000000, 4096, b"host::\0", with_checksum=True)
            )
            packet[16] ^= 0xFF  # corrupt data_check
            c.sock.sendall(bytes(packet))
            with pytest.raises(ConnectionError):
                c.recv()
        finally:
            c.close()


def test_one_phone_per_root(tmp_path: Path) -> None:
    with EmulatedPhone(root=tmp_path / "phone"), pytest.raises(InfrastructureError, match="in use"):
        EmulatedPhone(root=tmp_path / "phone").start()
    with EmulatedPhone(root=tmp_path / "phone") as again:
        assert again.port


@pytest.mark.skipif(shutil.which("adb") is None, reason="Android's adb client is not installed")
def test_android_adb_client(tmp_path: Path) -> None:
    """Google's own adb (Debian package `adb`) connects, shells, pushes and pulls."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        server_port = s.getsockname()[1]
    env = {**os.environ, "HOME": str(tmp_path), "ANDROID_ADB_SERVER_PORT": str(server_port)}

    def adb(*args: str) -> str:
        res = subprocess.run(
            ["adb", *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        return res.stdout + res.stderr

    with EmulatedPhone("snapdragon-8-gen-2", root=tmp_path / "phone") as phone:
        try:
            adb("connect", phone.serial)
            deadline = time.monotonic() + 10
            while f"{phone.serial}\tdevice" not in adb("devices") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert f"{phone.serial}\tdevice" in adb("devices")
            assert adb("-s", phone.serial, "shell", "getprop ro.soc.model") == "SM8550\n"
            src = tmp_path / "blob"
            digest = random_file(src, 3 * MB)
            assert "1 file pushed" in adb("-s", phone.serial, "push", str(src), "/sdcard/x/blob")
            assert "1 file pulled" in adb(
                "-s", phone.serial, "pull", "/sdcard/x/blob", str(tmp_path / "b")
            )
            assert hashlib.sha256((tmp_path / "b").read_bytes()).hexdigest() == digest
            assert "No such file or directory" in adb(
                "-s", phone.serial, "pull", "/sdcard/none", str(tmp_path / "n")
            )
        finally:
            adb("kill-server")


def test_stat_v2_over_a_raw_sync_stream(tmp_path: Path) -> None:
    with EmulatedPhone(root=tmp_path / "phone", require_auth=False) as phone:
        (phone.root / "data/local/tmp/f").write_bytes(b"x" * 70_000)
        (phone.root / "data/local/tmp/l").symlink_to("f")
        c = RawClient(phone.port)
        try:
            c.send(wire.A_CNXN, 0x01000001, 1 << 20, b"host::\0")
            assert c.recv()[0] == wire.A_CNXN
            c.send(wire.A_OPEN, 1, 0, b"sync:\0")
            _, ours, _, _ = c.recv()

            def request(ident: bytes, path: str) -> tuple[int, ...]:
                raw = path.encode()
                c.send(wire.A_WRTE, 1, ours, ident + struct.pack("<I", len(raw)) + raw)
                assert c.recv()[:3] == (wire.A_OKAY, ours, 1)
                cmd, _, _, data = c.recv()
                assert cmd == wire.A_WRTE
                c.send(wire.A_OKAY, 1, ours)
                fields = struct.unpack("<4s I 2Q 4I Q 3q", data)
                assert fields[0] == ident
                return fields[1:]

            err, _dev, _ino, mode, _nlink, _uid, _gid, size, *_times = request(
                b"STA2", "/data/local/tmp/l"
            )
            assert err == 0 and stat.S_ISREG(mode) and size == 70_000
            err, *rest = request(b"LST2", "/data/local/tmp/l")
            assert err == 0 and stat.S_ISLNK(rest[2])
            err, *_ = request(b"STA2", "/data/local/tmp/none")
            assert err == 2  # ENOENT
        finally:
            c.close()


def test_rewrite_output_filter_handles_split_chunks() -> None:
    from harness.devices.emulator.rewrite import OutputFilter

    text = b"cd /tmp/phone-root/data/x; pwd=/tmp/phone-root\n/tmp/phone-rooted stays\n"
    for cut in range(len(text) + 1):
        f = OutputFilter(b"/tmp/phone-root")
        out = f.feed(text[:cut]) + f.feed(text[cut:]) + f.flush()
        assert out == b"cd /data/x; pwd=/\n/ed stays\n"
