"""Deployment onto an emulated phone over ADB: the runtime bundle and artifacts are pushed once
and reused; the phone's artifact cache evicts incomplete, then least recently used, entries."""

from __future__ import annotations

import posixpath
import time
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.compile import Artifact, compile_artifact
from harness.devices.adb import WORK_ROOT, AdbDevice
from harness.devices.deploy import (
    MARKER,
    RUNNER_NAME,
    Bundle,
    ensure_artifact,
    ensure_bundle,
    evict_artifacts,
    runtime_bundle,
)
from harness.devices.emulator import EmulatedPhone
from harness.modelio import load

import testmodels

ARTIFACTS = f"{WORK_ROOT}/artifacts"
BIG_CAP = 1 << 30


@pytest.fixture(scope="module")
def host_bundle() -> Bundle:
    return runtime_bundle("host")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Artifact]:
    """Three small, different artifacts (three cache keys). The models are those other tests
    bench too, so in a full run the session's artifact cache already holds some of them."""
    directory = tmp_path_factory.mktemp("models")
    backend = get_backend("tvm-cpu")
    models = {
        "mnet": testmodels.mobilenet_like(0),
        "mlp0": testmodels.mlp(0),
        "mlp1": testmodels.mlp(1),
    }
    built = []
    for name, model in models.items():
        path = testmodels.save(model, directory, name)
        built.append(compile_artifact(load(path), backend, target="host"))
    assert len({a.key for a in built}) == 3
    return built


def _files(phone: EmulatedPhone, directory: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime ns) of each file of a device directory, read in the phone's sandbox: a
    pushed file is a new inode (written aside, renamed), so equal inodes mean no push."""
    host = phone.root / directory.lstrip("/")
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(host.iterdir())}


def _age(device: AdbDevice, path: str, seconds_ago: int) -> None:
    """Set the mtime of a file on the phone into the past, as if last used back then."""
    stamp = f"@{int(time.time()) - seconds_ago}"
    assert device.shell(["touch", "-d", stamp, path], timeout_s=10).exit_code == 0


def _cached_keys(device: AdbDevice) -> set[str]:
    return {name for name, _size, _used in device.usage(ARTIFACTS)}


def test_ensure_bundle_pushes_once(
    device: AdbDevice, emulated_phone: EmulatedPhone, host_bundle: Bundle
) -> None:
    directory = ensure_bundle(device, host_bundle)
    assert directory == f"{WORK_ROOT}/runtime/{host_bundle.hash}"
    first = _files(emulated_phone, directory)
    assert set(first) == {RUNNER_NAME, MARKER, *(p.name for p in host_bundle.files[1:])}
    runner = device.shell(["test", "-x", posixpath.join(directory, RUNNER_NAME)], timeout_s=10)
    assert runner.exit_code == 0

    assert ensure_bundle(device, host_bundle) == directory
    assert _files(emulated_phone, directory) == first

    # Without its marker the directory is an interrupted push: pushed again, marker last.
    device.remove(posixpath.join(directory, MARKER))
    assert ensure_bundle(device, host_bundle) == directory
    again = _files(emulated_phone, directory)
    assert set(again) == set(first)
    assert again[RUNNER_NAME][0] != first[RUNNER_NAME][0]
    assert again[MARKER][1] >= max(mtime for _ino, mtime in again.values())


def test_ensure_artifact_pushes_once_and_records_the_use(
    device: AdbDevice, emulated_phone: EmulatedPhone, artifacts: list[Artifact]
) -> None:
    artifact = artifacts[0]
    directory = ensure_artifact(device, artifact, cap_bytes=BIG_CAP)
    assert directory == f"{ARTIFACTS}/{artifact.key}"
    first = _files(emulated_phone, directory)
    assert set(first) == {artifact.library.name, MARKER}
    assert (emulated_phone.root / directory.lstrip("/") / artifact.library.name).read_bytes() == (
        artifact.library.read_bytes()
    )
    _age(device, posixpath.join(directory, MARKER), 3600)
    [(_key, _size, used_before)] = device.usage(ARTIFACTS)

    assert ensure_artifact(device, artifact, cap_bytes=BIG_CAP) == directory
    second = _files(emulated_phone, directory)
    assert second[artifact.library.name] == first[artifact.library.name]  # not pushed again
    assert second[MARKER][0] == first[MARKER][0]  # the same marker, only touched
    [(_key, _size, used_after)] = device.usage(ARTIFACTS)
    assert used_after >= used_before + 3500


def test_an_incomplete_artifact_is_pushed_again_not_reused(
    device: AdbDevice, emulated_phone: EmulatedPhone, artifacts: list[Artifact]
) -> None:
    artifact = artifacts[0]
    directory = f"{ARTIFACTS}/{artifact.key}"
    # What an interrupted deployment leaves: the library, no marker.
    device.push(artifact.library, posixpath.join(directory, artifact.library.name))
    before = _files(emulated_phone, directory)
    assert set(before) == {artifact.library.name}

    assert ensure_artifact(device, artifact, cap_bytes=BIG_CAP) == directory
    after = _files(emulated_phone, directory)
    assert set(after) == {artifact.library.name, MARKER}
    assert after[artifact.library.name][0] != before[artifact.library.name][0]


def test_eviction_removes_incomplete_then_least_recently_used(
    device: AdbDevice, artifacts: list[Artifact], tmp_path: Path
) -> None:
    a, b, c = artifacts
    ensure_artifact(device, a, cap_bytes=BIG_CAP)
    ensure_artifact(device, b, cap_bytes=BIG_CAP)
    # A leftover of an interrupted push: no marker. It goes first, even with room to spare.
    junk = tmp_path / "lib.so"
    junk.write_bytes(b"\0" * 4096)
    device.push(junk, f"{ARTIFACTS}/0123456789abcdef0123456789abcdef/lib.so")
    assert evict_artifacts(device, keep=c.key, cap_bytes=BIG_CAP) == [
        "0123456789abcdef0123456789abcdef"
    ]
    assert _cached_keys(device) == {a.key, b.key}

    # a was deployed before b, but used again since: b is the least recently used.
    _age(device, f"{ARTIFACTS}/{a.key}/{MARKER}", 200)
    _age(device, f"{ARTIFACTS}/{b.key}/{MARKER}", 100)
    ensure_artifact(device, a, cap_bytes=BIG_CAP)  # a use: its marker is touched
    sizes = {name: size for name, size, _used in device.usage(ARTIFACTS)}
    # Room for what is there and c, less one byte: exactly one artifact has to go.
    cap = sizes[a.key] + sizes[b.key] + c.library.stat().st_size - 1
    ensure_artifact(device, c, cap_bytes=cap)
    assert _cached_keys(device) == {a.key, c.key}
    assert device.exists(f"{ARTIFACTS}/{c.key}/{MARKER}")
    assert not device.exists(f"{ARTIFACTS}/{b.key}")
