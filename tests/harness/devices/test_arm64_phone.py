"""The arm64 emulated phone: the phone build path end to end on this machine.

Its programs are aarch64 binaries, run under qemu-user inside its sandbox; models are built for
``linux-arm64`` and cross-linked, the runtime bundle is the runner cross-compiled with the
registry's aarch64 TVM runtime, the BYOC reference driver is cross-compiled: the same build,
push and run code as a real phone's NDK build, another toolchain. qemu is some 25x slower than
native, so every run here is a couple of calls.

Needs Debian's qemu-user and g++-aarch64-linux-gnu (scripts/services installs them); without
them these tests are skipped, and fail on CI, where they must be there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.backends import get_backend
from harness.bench import Protocol
from harness.bench.measurement import run_limits
from harness.devices.adb import WORK_ROOT, AdbDevice
from harness.devices.deploy import runtime_bundle
from harness.devices.emulator import EmulatedPhone
from harness.devices.emulator.isa import ARM64, emulation
from harness.embedded import arm64_missing
from harness.errors import InfrastructureError, JobError
from harness.examples import write_example
from harness.measure.device_run import NativeRunner, RunFailed, RunnerCall, run_on_device
from harness.modelio import load

import testmodels

EM_AARCH64 = 183


def _require_tools() -> None:
    missing = arm64_missing()
    if missing:
        message = f"the arm64 emulated phone needs {'; '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (scripts/services installs them)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def arm64_phone() -> Iterator[EmulatedPhone]:
    _require_tools()
    # A slow thermal model: no cooldown wait between the (slow) emulated runs.
    with EmulatedPhone("dimensity-9200", isa="arm64", thermal_time_constant_s=3600.0) as phone:
        yield phone


def _elf_machine(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[18:20], "little")


def test_edgefarm_emulator_start_isa_arm64_runs_aarch64_programs_only(tmp_path: Path) -> None:
    _require_tools()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "harness.cli", "emulator", "start", "--isa", "arm64"),
            *("--port", "0", "--root", str(tmp_path / "phone")),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        port = None
        for _ in range(20):
            line = proc.stderr.readline()
            if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
                break
        assert port is not None, "the emulator never said where it listens"
        device = AdbDevice.open(f"tcp:127.0.0.1:{port}")
        facts = device.facts()
        assert (facts.abi, facts.extra["exec_abi"], facts.target) == (
            "arm64-v8a",
            "arm64-v8a",
            "linux-arm64",
        )
        assert facts.emulated and facts.isa_emulated
        assert str(facts.extra["isa_emulator"]).startswith("qemu-aarch64 ")
        assert facts.model.endswith("(edgefarm emulated arm64)")

        # An aarch64 program runs, in the phone's sandbox, under qemu: the kernel it asks is
        # an aarch64 one, and it is the process the shell started (same pid).
        source = tmp_path / "hello.c"
        source.write_text(
            "#include <stdio.h>\n#include <sys/utsname.h>\n#include <unistd.h>\n"
            "int main(int c, char **v) { struct utsname u; uname(&u);\n"
            '  printf("%s %s %ld\\n", u.machine, v[1], (long)getpid()); return 3; }\n'
        )
        binary = tmp_path / "hello"
        subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-o", str(binary), str(source)], check=True)
        hello = f"{WORK_ROOT}/t/hello"
        device.push(binary, hello)
        result = device.shell(
            [
                "sh",
                "-c",
                'exec "$0" from-the-shell & echo "pid $!"; wait $!',
                hello,
            ],
            timeout_s=60,
        )
        assert result.exit_code == 3, result.stdout
        pid = re.search(r"pid (\d+)", result.stdout)
        assert pid and f"aarch64 from-the-shell {pid.group(1)}" in result.stdout

        # This machine's binary in the phone's storage fails as on a phone.
        device.push(Path("/bin/true"), f"{WORK_ROOT}/t/x86-true")
        result = device.shell([f"{WORK_ROOT}/t/x86-true"], timeout_s=30)
        assert result.exit_code == 126 and "Exec format error" in result.stdout
        device.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_bench_resnet8_with_every_tvm_backend_on_the_arm64_phone(
    arm64_phone: EmulatedPhone, tmp_path: Path
) -> None:
    """The issue's "done when": tvm-cpu, tvm-nnapi and tvm-neuron pass compare there."""
    model = write_example("resnet8", tmp_path)
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "harness.cli", "bench", str(model)),
            *("-b", "tvm-cpu", "-b", "tvm-nnapi", "-b", "tvm-neuron"),
            *("--device", f"tcp:{arm64_phone.serial}", "--json", str(out)),
            *("--warmup", "0", "--min-iterations", "2", "--min-seconds", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = json.loads(out.read_text())
    assert [d["backend"] for d in docs] == ["tvm-cpu", "tvm-nnapi", "tvm-neuron"]
    bundle = runtime_bundle("linux-arm64")
    for doc in docs:
        assert doc["status"] == "ok" and doc["accuracy"]["passed"], doc
        assert doc["isa_emulated"] is True
        assert doc["device"]["target"] == doc["provenance"]["target"] == "linux-arm64"
        assert doc["provenance"]["runtime_bundle"] == bundle.hash
    assert docs[1]["partition"]["subgraphs"] >= 1 and docs[2]["partition"]["subgraphs"] >= 1
    assert "(ISA emulated)" in proc.stdout  # never read as a phone's speed
    # The bundle on the phone is aarch64 throughout: runner, TVM runtime, FFI.
    on_phone = arm64_phone.root / WORK_ROOT.lstrip("/") / "runtime" / bundle.hash
    assert (on_phone / ".complete").is_file()
    assert sorted(p.name for p in on_phone.iterdir() if p.name != ".complete") == sorted(
        p.name if i else "edgefarm-runner" for i, p in enumerate(bundle.files)
    )
    assert {_elf_machine(p) for p in bundle.files} == {EM_AARCH64}


def test_an_x86_64_runner_pushed_to_the_arm64_phone_fails_at_run(
    arm64_phone: EmulatedPhone, tmp_path: Path
) -> None:
    """A bundle for the wrong machine (this one's) pushed by mistake: the phone's "Exec
    format error", at stage run."""
    model = load(testmodels.save(testmodels.mlp(), tmp_path, "mlp"))
    artifact = get_backend("tvm-cpu").compile(model, target="host", options=None)
    program = NativeRunner(artifact, runtime_bundle("host"))
    inputs = (np.zeros(model.inputs[0].static_shape(), np.float32),)
    device = AdbDevice.open(f"tcp:{arm64_phone.serial}")
    try:
        outcome = run_on_device(
            device,
            RunnerCall(program, inputs, Protocol(warmup=0, min_iterations=1, min_seconds=0)),
            limits=run_limits(),
            cooldown=False,
        )
    finally:
        device.close()
    assert isinstance(outcome, RunFailed)
    assert isinstance(outcome.error, InfrastructureError) and outcome.error.stage == "run"
    assert "Exec format error" in outcome.error.message


def test_an_aarch64_build_fails_at_link_with_the_toolchains_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_tools()
    # Its own seed: a model no other test builds for linux-arm64 (failures are not cached,
    # successes are).
    model = load(testmodels.save(testmodels.mlp(seed=14), tmp_path, "mlp14"))
    backend = get_backend("tvm-cpu")

    # No cross compiler: the error names the package.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(JobError) as missing:
        backend.compile(model, target="linux-arm64", options=None)
    assert missing.value.stage == "link"
    assert "aarch64-linux-gnu-g++" in missing.value.message
    assert "g++-aarch64-linux-gnu" in missing.value.message

    # A cross compiler that is not one (this machine's g++ under its name): the linker's
    # own words about the aarch64 objects, at stage link.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "aarch64-linux-gnu-g++").symlink_to("/usr/bin/g++")
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    with pytest.raises(JobError) as failed:
        backend.compile(model, target="linux-arm64", options=None)
    assert failed.value.stage == "link"
    message = failed.value.message
    assert message.startswith("linking the linux-arm64 library with aarch64-linux-gnu-g++ failed")
    assert re.search(r"Relocations in generic ELF \(EM: 183\)|file in wrong format", message)


def test_without_qemu_there_is_no_arm64_phone_and_the_error_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = " ".join(arm64_missing())
    assert "qemu-user" in missing and "g++-aarch64-linux-gnu" in missing
    if ARM64.native:
        return  # an arm64 machine runs the phone's programs itself
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    with pytest.raises(InfrastructureError, match="qemu-user"):
        emulation(ARM64, bin_dir)
    with pytest.raises(InfrastructureError, match="qemu-user"):
        EmulatedPhone("pixel-3a", isa="arm64", root=tmp_path / "phone").start()
