"""The Android build of the runner: its refusals here, the real NDK build where there is one."""

from __future__ import annotations

import os
import subprocess
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
def test_real_ndk_build_produces_an_arm64_bundle(tmp_path: Path) -> None:
    ndk = os.environ.get("ANDROID_NDK_HOME") or os.environ.get("EDGEFARM_ANDROID_NDK_HOME")
    if not ndk:
        pytest.skip("ANDROID_NDK_HOME is not set")
    source = get_settings().home / "tvm-source"
    if not (source / "include" / "tvm" / "support" / "io.h").is_file():
        pytest.skip(f"no apache/tvm checkout in {source} (see harness/runner/ANDROID.md)")
    files = android_bundle_files(tmp_path)
    assert [f.name for f in files] == list(BUNDLE_FILES)
    described = subprocess.run(["file", str(files[0])], capture_output=True, text=True).stdout
    assert "aarch64" in described or "ARM aarch64" in described
