"""The ``host`` target generates code for this machine's CPU: its x86-64 level, read from the
CPU flags, unless EDGEFARM_HOST_CPU says otherwise; keys name that CPU, so a build or a tuning
record for another CPU is never taken for this one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.compile.build import artifact_key_for, compile_artifact
from harness.compile.cache import ArtifactCache
from harness.compile.targets import X86_64_LEVELS, get_target, host_target, x86_64_level
from harness.config import get_settings
from harness.devices.base import DeviceFacts
from harness.errors import JobError
from harness.modelio import load
from harness.tuning.session import records_key_for

import testmodels

# Flags of real CPUs, as /proc/cpuinfo lists them (abridged to what the levels look at).
BASELINE = {"fpu", "sse", "sse2", "cx8", "cmov", "mmx", "fxsr"}
NEHALEM = BASELINE | X86_64_LEVELS[0][1]
HASWELL = NEHALEM | X86_64_LEVELS[1][1]
ZEN4 = HASWELL | X86_64_LEVELS[2][1] | {"avx512ifma", "avx512vbmi"}


def test_the_level_is_the_highest_whose_flags_and_those_below_are_all_there() -> None:
    assert x86_64_level(BASELINE) is None
    assert x86_64_level(NEHALEM) == "x86-64-v2"
    assert x86_64_level(HASWELL) == "x86-64-v3"
    assert x86_64_level(ZEN4) == "x86-64-v4"
    # AVX-512 without AVX2's companions (a hypervisor that hides BMI2): not v4, not v3.
    assert x86_64_level(ZEN4 - {"bmi2"}) == "x86-64-v2"
    assert x86_64_level(HASWELL - {"fma"}) == "x86-64-v2"


def test_generic_and_named_cpus_and_their_labels() -> None:
    generic = host_target("generic")
    assert generic.tvm == {"kind": "llvm"} and generic.label == "host"
    named = host_target("znver4")
    assert named.tvm == {"kind": "llvm", "mcpu": "znver4"} and named.label == "host/znver4"
    assert named.tvm_target().attrs["mcpu"] == "znver4"
    with pytest.raises(JobError, match="EDGEFARM_HOST_CPU=pentium-9000: LLVM knows no such CPU"):
        host_target("pentium-9000").tvm_target()
    # The cross targets name their architecture already: their label is their name.
    assert get_target("linux-arm64").label == "linux-arm64"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 levels: an x86-64 machine")
def test_auto_is_this_machines_level() -> None:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    expected = x86_64_level(flags)
    assert expected is not None  # every x86-64 CPU of the last 15 years is v2 at least
    assert host_target("auto").tvm.get("mcpu") == expected
    assert host_target("auto").label == f"host/{expected}"


@pytest.fixture
def host_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_artifact_and_records_keys_name_the_cpu(
    host_cpu: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from harness.backends.tvm_cpu import BACKEND

    model = load(testmodels.save(testmodels.mlp(), tmp_path, "mlp"), [])
    facts = DeviceFacts(id="local", kind="local", target="host", model="Test CPU")
    keys = {}
    for cpu in ("generic", "x86-64-v3", "x86-64-v4"):
        host_cpu.setenv("EDGEFARM_HOST_CPU", cpu)
        get_settings.cache_clear()
        keys[cpu] = (artifact_key_for(model, BACKEND, "host", {}), records_key_for(facts).target)
    assert len({artifact for artifact, _ in keys.values()}) == 3
    assert [target for _, target in keys.values()] == ["host", "host/x86-64-v3", "host/x86-64-v4"]


def test_a_build_says_what_cpu_it_was_generated_for(tmp_path: Path) -> None:
    """The manifest holds the TVM target with its -mcpu (that such a build runs here and
    agrees with onnxruntime is what every tvm-cpu bench test on this machine checks)."""
    from harness.backends.tvm_cpu import BACKEND

    model = load(testmodels.save(testmodels.mlp(), tmp_path, "mlp"), [])
    artifact = compile_artifact(model, BACKEND, target="host", cache=ArtifactCache(tmp_path / "c"))
    assert artifact.manifest["target_tvm"] == dict(get_target("host").tvm)


def test_edgefarm_bench_with_an_unknown_host_cpu_fails_at_compile_naming_the_setting(
    tmp_path: Path,
) -> None:
    """Found by probing: the refusal came wrapped as "TVM failed to build: ..."."""
    path = testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    env = {
        **os.environ,
        "EDGEFARM_HOME": str(tmp_path / "home"),
        "EDGEFARM_HOST_CPU": "pentium-9000",
        "COLUMNS": "250",
    }
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "bench", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert (
        "failed mlp / local / tvm-cpu at compile: EDGEFARM_HOST_CPU=pentium-9000: LLVM knows no "
        "such CPU for this machine"
    ) in result.stdout + result.stderr
