"""Tuning for an Android phone links its candidates with the NDK's clang, as the phone's model
builds are linked: without an NDK the error says what to set; with one, a candidate becomes an
aarch64 shared library through that clang. (This machine has no NDK and no Android phone: the
NDK here is a directory of the NDK's layout whose clang++ is the aarch64 cross g++, which
proves the link path and its arguments, not Android's C library.)"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from harness.compile.targets import get_target
from harness.config import get_settings
from harness.errors import JobError
from harness.tuning.session import export_for


def test_without_an_ndk_android_tuning_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
    monkeypatch.delenv("EDGEFARM_ANDROID_NDK_HOME", raising=False)
    get_settings.cache_clear()
    with pytest.raises(JobError, match="set ANDROID_NDK_HOME") as info:
        export_for(get_target("android-arm64"))
    assert info.value.stage == "link"


def test_an_android_candidate_is_linked_by_the_ndks_clang(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tvm
    from tvm import te

    cross = shutil.which("aarch64-linux-gnu-g++")
    assert cross is not None, "no aarch64-linux-gnu-g++: scripts/services installs it"
    level = 31
    bin_dir = tmp_path / "ndk/toolchains/llvm/prebuilt/linux-x86_64/bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    clang = bin_dir / f"aarch64-linux-android{level}-clang++"
    clang.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {cross} "$@"\n')
    clang.chmod(clang.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("EDGEFARM_ANDROID_NDK_HOME", str(tmp_path / "ndk"))
    monkeypatch.setenv("EDGEFARM_ANDROID_API_LEVEL", str(level))
    get_settings.cache_clear()

    export = export_for(get_target("android-arm64"))

    a = te.placeholder((64,), "float32", name="a")
    b = te.compute((64,), lambda i: a[i] + 1.0, name="b")
    add_one = te.create_prim_func([a, b]).with_attr("global_symbol", "main")

    # What the tuning's builder does with each candidate.
    library = tmp_path / "lib.so"
    target = tvm.target.Target(get_target("android-arm64").tvm)
    tvm.compile(tvm.IRModule({"main": add_one}), target=target).export_library(
        str(library), **export
    )
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[16:18], "little") == 3  # ET_DYN: a shared library
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    (call,) = calls.read_text().splitlines()
    assert "-shared" in call.split() and "-static-libstdc++" in call.split()
