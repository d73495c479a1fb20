"""The compile server: builds forked from one process that imported TVM once, each still a
child of its own that can time out, crash or lose its server without taking anything else."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.backends import get_backend
from harness.compile import ArtifactCache, compile_artifact, forkserver
from harness.errors import JobError
from harness.modelio import PreparedModel, load

import testmodels


@pytest.fixture
def model(tmp_path: Path) -> PreparedModel:
    return load(testmodels.save(testmodels.mlp(), tmp_path, "mlp"))


def _build(model: PreparedModel, cache: Path, **kwargs: Any) -> Any:
    return compile_artifact(
        model, get_backend("tvm-cpu"), target="host", cache=ArtifactCache(cache), **kwargs
    )


def _while_building(server_pid: int, act: Any, model: PreparedModel, cache: Path) -> Any:
    """Start a build, call ``act(build's pid)`` once the server has forked it; the build's
    outcome (its artifact or the exception it raised)."""
    outcome: list[Any] = []

    def build() -> None:
        try:
            outcome.append(_build(model, cache))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.monotonic() + 60
    children: list[psutil.Process] = []
    while not children and thread.is_alive():
        assert time.monotonic() < deadline, "the server forked no build in 60 s"
        children = psutil.Process(server_pid).children()
        time.sleep(0.01)
    assert children, f"the build ended before it was seen: {outcome}"
    act(children[0].pid)
    thread.join(300)
    assert not thread.is_alive()
    return outcome[0]


def test_builds_share_one_server_and_a_killed_build_leaves_it_serving(
    model: PreparedModel, tmp_path: Path
) -> None:
    assert forkserver.enabled()
    first = _build(model, tmp_path / "a")
    server = forkserver.server()
    assert server.alive and server.owner == os.getpid()

    with pytest.raises(JobError, match="ran past") as info:  # the child is killed at 50 ms
        _build(model, tmp_path / "b", timeout_s=0.05)
    assert info.value.stage == "compile"
    second = _build(model, tmp_path / "c")
    assert forkserver.server() is server and server.alive
    assert (second.path / second.manifest["library"]).is_file()
    assert first.manifest["library"] == second.manifest["library"]


def test_a_build_that_crashes_is_reported_with_its_signal_and_the_server_serves_on(
    model: PreparedModel, tmp_path: Path
) -> None:
    server = forkserver.server()
    pid = server._proc.pid

    outcome = _while_building(
        pid, lambda child: os.kill(child, signal.SIGSEGV), model, tmp_path / "a"
    )
    assert isinstance(outcome, JobError), outcome
    assert "TVM crashed (SIGSEGV)" in outcome.message
    assert os.listdir(tmp_path / "a" / "artifacts") == []  # nothing half-written kept
    assert forkserver.server() is server and server.alive
    assert _build(model, tmp_path / "b").manifest["backend"] == "tvm-cpu"


def test_a_server_killed_under_a_build_is_replaced_and_the_build_runs_again(
    model: PreparedModel, tmp_path: Path
) -> None:
    server = forkserver.server()
    pid = server._proc.pid

    def kill_server(child: int) -> None:
        os.kill(pid, signal.SIGKILL)

    artifact = _while_building(pid, kill_server, model, tmp_path / "a")
    assert not isinstance(artifact, BaseException), artifact
    assert (artifact.path / artifact.manifest["library"]).is_file()
    assert not server.alive
    again = forkserver.server()
    assert again is not server and again.alive
    assert _build(model, tmp_path / "b").manifest["backend"] == "tvm-cpu"


def test_a_build_sees_the_callers_working_directory_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server started before; the caller then moved and changed its environment: a
    build given a relative model path, and a target chosen by an environment variable,
    finds both as the caller has them now."""
    forkserver.server()
    testmodels.save(testmodels.mlp(), tmp_path, "mlp")
    monkeypatch.chdir(tmp_path)
    request = {
        "model_path": "mlp.onnx",
        "model_name": "mlp",
        "inputs": [],
        "backend": "tvm-cpu",
        "lowering": get_backend("tvm-cpu").lowering.to_json(),
        "target": "host",
        "options": {},
        "out_dir": str(tmp_path / "out"),
        "ndk_home": None,
        "api_level": 29,
    }
    (tmp_path / "out").mkdir()
    monkeypatch.setenv("EDGEFARM_HOST_CPU", "no-such-cpu")
    finished = forkserver.server().run(request, 300)
    assert finished.returncode == 0, finished.stderr
    assert "no-such-cpu" in finished.stdout, finished.stdout[-2000:]


def test_with_the_server_off_a_build_starts_a_fresh_interpreter(
    model: PreparedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.config import get_settings

    monkeypatch.setenv("EDGEFARM_COMPILE_FORKSERVER", "0")
    get_settings.cache_clear()
    try:
        assert not forkserver.enabled()
        before = forkserver._server
        started: list[list[str]] = []
        popen = subprocess.Popen

        def recording(args: Any, *rest: Any, **kwargs: Any) -> Any:
            started.append(list(args))
            return popen(args, *rest, **kwargs)

        monkeypatch.setattr(subprocess, "Popen", recording)
        artifact = _build(model, tmp_path / "a")
        assert artifact.manifest["backend"] == "tvm-cpu"
        assert any(a[1:3] == ["-m", "harness.compile.child"] for a in started), started
        assert forkserver._server is before
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
