"""The Android build of the runner: its refusals here, the real NDK build where there is one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import get_settings
from harness.errors import JobError
from harness.runner.android import BUNDLE_FILES, android_bundle_files


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("EDGEFARM_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_without_an_ndk_the_error_says_what_to_set(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.delenv("ANDROID_NDK_HOME", raising=False)
    settings_env.delenv("EDGEFARM_ANDROID_NDK_HOME", raising=False)
    get_settings.cache_clear()
    with pytest.raises(JobError, match="ANDROID_NDK_HOME") as info:
        android_bundle_files()
    assert info.value.stage == "run"


def test_a_directory_that_is_not_an_ndk_is_refused(
    settings_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_env.setenv("EDGEFARM_ANDROID_NDK_HOME", str(tmp_path))
    get_settings.cache_clear()
    with pytest.raises(JobError, match=r"android\.toolchain\.cmake"):
        android_bundle_files()


@pytest.mark.ndk
def test_real_ndk_build_produces_an_arm64_bundle(tmp_path: Path, user_tvm_source: Path) -> None:
    """Runs wherever the Android NDK (ANDROID_NDK_HOME), CMake and the apache/tvm checkout of
    harness/runner/ANDROID.md are: conftest hands the user's NDK to the tests marked ``ndk``."""
    ndk = get_settings().android_ndk_home
    if ndk is None:
        pytest.skip("no Android NDK: set ANDROID_NDK_HOME")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if not (user_tvm_source / "include" / "tvm" / "support" / "io.h").is_file():
        pytest.skip(f"no apache/tvm checkout in {user_tvm_source} (see harness/runner/ANDROID.md)")
    files = android_bundle_files(tmp_path, tvm_source_dir=user_tvm_source)
    assert [f.name for f in files] == list(BUNDLE_FILES)
    for built in files:
        header = built.read_bytes()[:20]
        # ELF, 64-bit, little-endian, e_machine EM_AARCH64 (183).
        assert header[:4] == b"\x7fELF" and header[4] == 2, built
        assert int.from_bytes(header[18:20], "little") == 183, built


def test_the_ndk_test_gets_the_users_ndk_and_no_other_test_does(tmp_path: Path) -> None:
    """Run in a pytest of its own with a (fake) NDK and a user home without a TVM checkout: the
    ``ndk`` test must get past the NDK (to the checkout), a test that needs no NDK must not see
    it."""
    ndk, user_home = tmp_path / "ndk", tmp_path / "user-home"
    ndk.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEFARM_", "ANDROID_"))}
    env.update(ANDROID_NDK_HOME=str(ndk), EDGEFARM_HOME=str(user_home))
    here = Path(__file__).resolve()
    root = here.parents[3]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            f"{here}::test_real_ndk_build_produces_an_arm64_bundle",
            f"{root / 'tests/harness/compile/test_compile.py'}::"
            "test_android_without_ndk_says_what_to_do",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout + proc.stderr
    assert f"no apache/tvm checkout in {user_home / 'tvm-source'}" in proc.stdout, proc.stdout
