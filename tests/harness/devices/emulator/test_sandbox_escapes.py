"""Escapes from the emulated phone's sandbox, each probed from inside by a real command over
real ADB over TCP, as anyone who can reach the phone's port could try them.

What runs on the phone is uid 2000 inside its own user namespace, but that is the emulator's
own user (root on a farm host) outside: anything of the host it can write, or make the
emulator write for it, is the host's root's to lose.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDeviceTcp

from harness.devices.emulator import EmulatedPhone

TICK_S = 0.1


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[EmulatedPhone]:
    with EmulatedPhone(root=tmp_path / "phone", require_auth=False, tick_s=TICK_S) as p:
        yield p


def connect(phone: EmulatedPhone, timeout_s: float = 20.0) -> AdbDeviceTcp:
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=timeout_s)
    assert dev.connect(rsa_keys=None, auth_timeout_s=10.0)
    return dev


def sh(phone: EmulatedPhone, command: str, timeout_s: float = 20.0) -> str:
    dev = connect(phone, timeout_s)
    try:
        out: str = dev.shell(command, read_timeout_s=timeout_s)
        return out
    finally:
        dev.close()


def push_bytes(phone: EmulatedPhone, tmp_path: Path, data: bytes, remote: str, mode: int) -> None:
    src = tmp_path / f"push-{uuid.uuid4().hex}"
    src.write_bytes(data)
    dev = connect(phone)
    try:
        dev.push(str(src), remote, st_mode=mode)
    finally:
        dev.close()


def test_the_phone_says_it_is_confined(phone: EmulatedPhone) -> None:
    assert phone.isolation == "namespace"
    assert sh(phone, "getprop ro.edgefarm.sandbox") == "namespace\n"
    assert sh(phone, "id -u; hostname") == "2000\nlocalhost\n"


# -- 1. the state writer and links planted in /sys ----------------------------------------


def test_a_link_planted_in_sys_never_redirects_the_state_writer(
    phone: EmulatedPhone, tmp_path: Path
) -> None:
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    battery = "/sys/class/power_supply/battery"
    out = sh(phone, f"rm -rf {battery}; ln -s {host_dir} {battery}; echo rc=$?")
    assert "Read-only file system" in out and not out.endswith("rc=0\n"), out
    # adb push (the sync service, which runs as the emulator's user on the host) cannot plant
    # it either: the phone's shell user cannot write /sys, so neither can a push.
    with pytest.raises(adb_exc.PushFailedError, match="Read-only file system"):
        push_bytes(phone, tmp_path, str(host_dir).encode(), battery, stat.S_IFLNK | 0o777)
    with pytest.raises(adb_exc.PushFailedError, match="Read-only file system"):
        push_bytes(phone, tmp_path, b"9", f"{battery}/capacity", stat.S_IFREG | 0o644)

    phone.set_temperature(55.0)  # a state write now, and more on every tick
    time.sleep(5 * TICK_S)
    assert list(host_dir.iterdir()) == []
    assert not (phone.root / "sys/class/power_supply/battery").is_symlink()
    assert sh(phone, f"cat {battery}/status") in ("Charging\n", "Discharging\n", "Full\n")
    assert abs(int(sh(phone, "cat /sys/class/thermal/thermal_zone0/temp")) - 55_000) < 1000


def test_the_state_writer_never_follows_a_link_even_where_one_can_be_planted(
    tmp_path: Path,
) -> None:
    """Rewrite mode runs commands unconfined, so there the shell *can* write the phone's
    /sys: the writer itself must never follow what it finds."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    host_file = tmp_path / "host-file"
    host_file.write_text("untouched\n")
    root = tmp_path / "phone"
    with EmulatedPhone(root=root, isolation="rewrite", require_auth=False, tick_s=TICK_S) as phone:
        assert sh(phone, "getprop ro.edgefarm.sandbox") == "rewrite\n"
        battery = "/sys/class/power_supply/battery"
        temp = "/sys/class/thermal/thermal_zone0/temp"
        # The writer may recreate a file between the rm and the ln: retry until each link is
        # in place (it ticks every TICK_S).
        out = sh(
            phone,
            f"until {{ rm -rf {battery} && ln -s {host_dir} {battery}; }} 2>/dev/null; do :; done"
            f" && until {{ rm -f {temp} && ln -s {host_file} {temp}; }} 2>/dev/null; do :; done"
            " && echo planted",
        )
        assert out == "planted\n"
        phone.set_temperature(61.0)
        time.sleep(5 * TICK_S)
        assert list(host_dir.iterdir()) == []
        assert host_file.read_text() == "untouched\n"
        assert (root / "sys/class/power_supply/battery").is_dir()
        assert not (root / "sys/class/power_supply/battery").is_symlink()
        written = root / "sys/class/thermal/thermal_zone0/temp"
        assert not written.is_symlink()
        assert abs(int(written.read_text()) - 61_000) < 1000
        # The whole tree swapped for a link: the next write replaces the link, not the host.
        # (The writer recreates /sys on its next tick: retry until the link is in place.)
        swap = f"until {{ rm -rf /sys && ln -s {host_dir} /sys; }} 2>/dev/null; do :; done"
        assert sh(phone, f"{swap}; echo swapped") == "swapped\n"
        phone.set_temperature(40.0)
        assert list(host_dir.iterdir()) == []
        assert (root / "sys").is_dir() and not (root / "sys").is_symlink()


# -- 2. nothing of the host is writable -----------------------------------------------------


def test_nothing_of_the_host_is_writable_from_inside(phone: EmulatedPhone, tmp_path: Path) -> None:
    marker = f"edgefarm-probe-{uuid.uuid4().hex}"
    places = [
        "/", "/dev", "/dev/shm/..", "/proc", "/proc/sys/kernel", "/sys", "/sys/class",
        "/usr", "/usr/lib", "/usr/local", "/etc", "/system", "/system/bin", "/bin", "/lib",
        "/tmp", "/run", "/var", "/root", "/home", str(tmp_path),
    ]  # fmt: skip
    probe = "; ".join(
        f'if (echo x > "{place}/{marker}") 2>/dev/null; then echo "WROTE {place}"; fi'
        for place in places
    )
    assert sh(phone, probe + "; echo done") == "done\n"

    # As the kernel reports it inside: every mount is read-only but the phone's storage and
    # its private /dev/shm.
    writable = set()
    for line in sh(phone, "cat /proc/self/mountinfo").splitlines():
        fields = line.split()
        if "rw" in fields[5].split(","):
            writable.add(fields[4])
    assert writable == {"/data", "/sdcard", "/dev/shm"}

    # /dev/shm is the phone's own: what is written there is not in the host's, and the other
    # way round (PostgreSQL keeps its shared memory in the host's).
    assert sh(phone, f"echo inside > /dev/shm/{marker} && cat /dev/shm/{marker}") == "inside\n"
    host_shm = Path("/dev/shm")
    if host_shm.is_dir():
        assert not (host_shm / marker).exists()
        (host_shm / f"{marker}-host").write_text("host")
        try:
            assert marker not in sh(phone, "ls -a /dev/shm | grep host; true")
        finally:
            (host_shm / f"{marker}-host").unlink()
    # Device nodes still work through their read-only binds.
    assert sh(phone, "echo x > /dev/null && head -c 4 /dev/zero | wc -c") == "4\n"
    # What the phone's user may write, it may: its storage.
    assert sh(phone, f"echo ok > /data/local/tmp/{marker} && cat /data/local/tmp/{marker}") == (
        "ok\n"
    )
    assert (phone.root / "data/local/tmp" / marker).read_text() == "ok\n"


def test_the_read_only_views_cannot_be_undone_from_inside(phone: EmulatedPhone) -> None:
    out = sh(
        phone,
        "mount -o remount,bind,rw /usr 2>&1; echo remount=$?; "
        "umount /sys 2>&1; echo umount=$?; "
        "unshare --user --map-root-user --mount true 2>&1; echo unshare=$?; "
        "touch /usr/edgefarm-probe 2>&1; echo touch=$?",
    )
    for step in ("remount", "umount", "unshare", "touch"):
        assert f"{step}=0" not in out, out


def test_pushes_write_only_where_the_shell_user_can(phone: EmulatedPhone, tmp_path: Path) -> None:
    for remote in ("/probe", "/sys/probe", "/system/bin/probe", "/proc/probe", "/dev/probe"):
        with pytest.raises(adb_exc.PushFailedError, match="Read-only file system"):
            push_bytes(phone, tmp_path, b"x", remote, stat.S_IFREG | 0o644)
    for remote in ("/data/local/tmp/ok", "/sdcard/Download/ok"):
        push_bytes(phone, tmp_path, b"ok", remote, stat.S_IFREG | 0o644)
        assert (phone.root / remote.lstrip("/")).read_bytes() == b"ok"
    dev = connect(phone)
    try:
        dev.pull("/sys/class/power_supply/battery/status", str(tmp_path / "status"))
    finally:
        dev.close()
    assert (tmp_path / "status").read_text().strip() in ("Charging", "Discharging", "Full")


def test_a_push_racing_a_link_swap_never_reaches_the_host(
    phone: EmulatedPhone, tmp_path: Path
) -> None:
    """The sync service runs on the host as the emulator's user: a command that swaps a
    directory for a link to a host path while a push resolves it must not win the race."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host secret\n")
    race = "/data/local/tmp/race"
    swapper = (
        f"mkdir -p {race}/real && echo phone > {race}/real/secret && cd {race} && "
        "i=0; while [ ! -e stop ] && [ $i -lt 20000 ]; do "
        f"rm -rf d; mv -T real d; mv -T d real; ln -s {host_dir} d; i=$((i+1)); "
        "done 2>/dev/null; echo swaps=$i"
    )
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(sh(phone, swapper, timeout_s=300)))
    worker.start()
    dev = connect(phone)
    src = tmp_path / "payload"
    src.write_bytes(b"payload")
    pulled = tmp_path / "pulled"
    try:
        while not (phone.root / "data/local/tmp/race/real").exists():
            time.sleep(0.01)
        for i in range(100):
            failed_push = (adb_exc.PushFailedError, adb_exc.AdbCommandFailureException)
            with contextlib.suppress(*failed_push):
                dev.push(str(src), f"{race}/d/f{i}")
            try:
                dev.pull(f"{race}/d/secret", str(pulled))
                assert pulled.read_text() != "host secret\n"
            except adb_exc.AdbCommandFailureException:
                pass
        dev.shell(f"touch {race}/stop")
    finally:
        dev.close()
        worker.join(timeout=60)
    assert result and result[0].startswith("swaps="), result
    assert sorted(p.name for p in host_dir.iterdir()) == ["secret"]


# -- 3. the network -------------------------------------------------------------------------


def _host_listens(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_phone_has_a_network_of_its_own(phone: EmulatedPhone) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        own = listener.getsockname()[1]
        # Our own listener always; PostgreSQL and Redis where this host runs them (CI does).
        ports = [own] + [p for p in (5432, 6379) if _host_listens(p)]
        assert _host_listens(own)
        probe = "; ".join(
            f"if timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null; "
            f'then echo "REACHED {port}"; else echo "no {port}"; fi'
            for port in ports
        )
        assert sh(phone, probe).split("\n")[:-1] == [f"no {port}" for port in ports]
    interfaces = sh(phone, "tail -n +3 /proc/net/dev").split()
    assert interfaces[0] == "lo:" and sum(name.endswith(":") for name in interfaces) == 1
    # Its loopback is up: a program on the phone can talk to itself.
    if shutil.which("python3", path="/usr/bin:/bin") is None:
        pytest.skip("no python3 among the host's system binaries to probe loopback with")
    out = sh(
        phone,
        'python3 -c \'import socket; s = socket.create_server(("127.0.0.1", 0)); '
        'c = socket.create_connection(s.getsockname()); print("loopback", s.accept()[0] '
        "is not None)'",
    )
    assert out == "loopback True\n"


# -- 4. a sandbox that cannot be built refuses to start -----------------------------------

# A child process that puts itself under a seccomp policy (as container runtimes and
# systemd's SystemCallFilter= do) and then starts a phone. Under it the kernel really refuses
# the call: mount(2) with MS_REMOUNT, or unshare(2) of a user namespace.
_CHILD = r"""
import ctypes, json, logging, platform, struct, sys
from pathlib import Path

ARCH = {"x86_64": (0xC000003E, {"mount": 165, "unshare": 272}),
        "aarch64": (0xC00000B7, {"mount": 40, "unshare": 97})}

def refuse(syscall, arg, mask):
    audit_arch, numbers = ARCH[platform.machine()]
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    program = [
        (ld, 0, 0, 4), (jeq, 0, 4, audit_arch),  # seccomp_data.arch
        (ld, 0, 0, 0), (jeq, 0, 2, numbers[syscall]),  # .nr
        (ld, 0, 0, 16 + 8 * arg), (jset, 1, 0, mask),  # low word of .args[arg]
        (ret, 0, 0, allow), (ret, 0, 0, eperm),
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(program), ctypes.addressof(code))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")

scenario, root = sys.argv[1], Path(sys.argv[2])
if scenario == "no-remount":
    refuse("mount", 3, 0x20)  # MS_REMOUNT
else:
    refuse("unshare", 0, 0x10000000)  # CLONE_NEWUSER
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

from adb_shell.adb_device import AdbDeviceTcp
from harness.devices.emulator import EmulatedPhone
from harness.errors import InfrastructureError

def attempt(**options):
    phone = EmulatedPhone(root=root, require_auth=False, **options)
    try:
        phone.start()
    except InfrastructureError as exc:
        return {"error": str(exc)}
    try:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10.0)
        dev.connect(rsa_keys=None)
        sandbox = dev.shell("getprop ro.edgefarm.sandbox").strip()
        dev.close()
        return {"isolation": phone.isolation, "sandbox": sandbox}
    finally:
        phone.stop()

print(json.dumps(attempt()))
print(json.dumps(attempt(isolation="auto")))
"""


def _run_under_policy(scenario: str, root: Path) -> tuple[list[dict[str, str]], str]:
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"the seccomp probe knows x86_64 and aarch64 only, not {platform.machine()}")
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, scenario, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()], res.stderr


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_failed_read_only_remount_stops_the_phone(tmp_path: Path) -> None:
    root = tmp_path / "phone"
    (default, auto), _log = _run_under_policy("no-remount", root)
    # Namespaces are there, but /usr cannot be made read-only: the phone does not start, in
    # either mode (auto only falls back where there are no namespaces at all).
    for outcome in (default, auto):
        assert "error" in outcome, outcome
        message = outcome["error"]
        assert message.startswith(f"emulated phone at {root}: cannot confine the phone: ")
        assert "the read-only remount of /usr" in message
        assert message.endswith("Operation not permitted")
    assert _processes_mentioning(str(root)) == []  # no namespace holder left behind
    # The same root, without the policy, makes a confined phone.
    with EmulatedPhone(root=root, require_auth=False) as phone:
        assert phone.isolation == "namespace"
        assert sh(phone, "getprop ro.edgefarm.sandbox") == "namespace\n"


def test_without_user_namespaces_the_phone_runs_unconfined_only_when_asked(
    tmp_path: Path,
) -> None:
    (default, auto), log = _run_under_policy("no-userns", tmp_path / "phone")
    assert "error" in default, default
    assert "user namespaces are unavailable" in default["error"]
    assert "refusing to run them unconfined" in default["error"]
    # Asked for (auto), it runs, says so in its facts, and warns.
    assert auto == {"isolation": "rewrite", "sandbox": "rewrite"}
    assert "NOT confined" in log
