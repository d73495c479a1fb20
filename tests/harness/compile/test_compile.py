"""Real TVM builds through the artifact cache."""

from __future__ import annotations

import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.compile import ArtifactCache, compile_artifact
from harness.compile.targets import TARGETS
from harness.config import get_settings
from harness.errors import JobError
from harness.modelio import load

import testmodels


@pytest.fixture
def mlp_model(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load(testmodels.save(testmodels.mlp(), tmp_path, "mlp"))


def test_build_then_cache_hit(mlp_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = ArtifactCache(tmp_path / "cache")
    first = compile_artifact(mlp_model, get_backend("tvm-cpu"), target="host", cache=cache)
    assert not first.cache_hit
    assert first.library.is_file() and first.library.stat().st_size > 1000
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["backend"] == "tvm-cpu" and manifest["target"] == "host"
    assert manifest["tvm_version"].startswith("0.27")
    assert manifest["model"]["sha256"] == mlp_model.file.sha256
    assert manifest["compile_ms"] > 0
    assert set(manifest["stages_ms"]) >= {"import_ms", "build_ms", "export_ms"}
    assert manifest["sizes"]["library_bytes"] == first.library.stat().st_size
    mtime = first.library.stat().st_mtime_ns

    second = compile_artifact(mlp_model, get_backend("tvm-cpu"), target="host", cache=cache)
    assert second.cache_hit and second.key == first.key
    assert second.library.stat().st_mtime_ns == mtime  # not rebuilt


def test_key_changes_with_options_and_inputs(mlp_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = ArtifactCache(tmp_path / "cache")
    a = compile_artifact(mlp_model, get_backend("tvm-cpu"), target="host", cache=cache)
    b = compile_artifact(
        mlp_model, get_backend("tvm-cpu"), target="host", cache=cache, options={"opt_level": 2}
    )
    assert a.key != b.key and not b.cache_hit


def test_incomplete_artifact_is_rebuilt(mlp_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = ArtifactCache(tmp_path / "cache")
    a = compile_artifact(mlp_model, get_backend("tvm-cpu"), target="host", cache=cache)
    a.library.write_bytes(a.library.read_bytes()[:100])  # as if a copy was interrupted
    b = compile_artifact(mlp_model, get_backend("tvm-cpu"), target="host", cache=cache)
    assert not b.cache_hit and b.library.stat().st_size == a.manifest["sizes"]["library_bytes"]


def test_concurrent_builders_build_once(mlp_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = ArtifactCache(tmp_path / "cache")
    results = []

    def build() -> None:
        results.append(
            compile_artifact(mlp_model, get_backend("tvm-cpu"), target="host", cache=cache)
        )

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.cache_hit for r in results) == [False, True]
    assert not any(p.name.startswith(".tmp-") for p in cache.artifacts.iterdir())


def test_android_without_ndk_says_what_to_do(mlp_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(JobError) as info:
        compile_artifact(
            mlp_model,
            get_backend("tvm-cpu"),
            target="android-arm64",
            cache=ArtifactCache(tmp_path / "cache"),
        )
    assert info.value.stage == "link"
    assert "ANDROID_NDK_HOME" in info.value.message
    assert not list((tmp_path / "cache" / "artifacts").iterdir())  # nothing half-published


def test_android_with_an_empty_ndk_dir(mlp_model, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path))
    get_settings.cache_clear()
    with pytest.raises(JobError, match="aarch64-linux-android28-clang"):
        compile_artifact(
            mlp_model,
            get_backend("tvm-cpu"),
            target="android-arm64",
            cache=ArtifactCache(tmp_path / "cache"),
        )


def test_android_objects_are_aarch64(mlp_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The android-arm64 target generates AArch64 code (checked in the exported objects)."""
    import tvm

    from harness.modelio import to_relax

    executable = tvm.compile(to_relax(mlp_model), target=TARGETS["android-arm64"].tvm_target())
    archive = tmp_path / "lib.tar"
    executable.export_library(str(archive))
    with tarfile.open(archive) as tar:
        objects = [m for m in tar.getmembers() if m.name.endswith(".o")]
        assert objects
        header = tar.extractfile(objects[0]).read(20)  # type: ignore[union-attr]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def test_timeout(mlp_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(JobError, match="ran past") as info:
        compile_artifact(
            mlp_model,
            get_backend("tvm-cpu"),
            target="host",
            cache=ArtifactCache(tmp_path / "cache"),
            timeout_s=0.05,
        )
    assert info.value.stage == "compile"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"target": "riscv"}, "unknown target"),
        ({"target": "host", "options": {"unroll": 4}}, "has no option 'unroll'"),
    ],
)
def test_bad_requests(mlp_model, tmp_path: Path, kwargs, needle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(JobError, match=needle):
        compile_artifact(mlp_model, get_backend("tvm-cpu"), cache=ArtifactCache(tmp_path), **kwargs)


def test_unknown_backend() -> None:
    with pytest.raises(JobError, match="known backends: ort, tvm-cpu"):
        get_backend("tvm-gpu")


def test_unsupported_op_fails_at_import(tmp_path: Path) -> None:
    model = load(testmodels.save(testmodels.unsupported_op(), tmp_path, "det"))
    with pytest.raises(JobError, match="Det") as info:
        compile_artifact(
            model, get_backend("tvm-cpu"), target="host", cache=ArtifactCache(tmp_path / "cache")
        )
    assert info.value.stage == "import"
    assert os.listdir(tmp_path / "cache" / "artifacts") == []
