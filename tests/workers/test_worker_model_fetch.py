"""A worker host without the API's disk fetches a model's file from the API (the real app,
served by uvicorn with a home of its own), checks its sha256 and keeps it."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from harness.config import get_settings
from harness.db import Model, make_engine, make_session_factory
from harness.errors import InfrastructureError, JobError
from workers.measurement import model_file

import testmodels
from workerfarm import ROOT, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


API_TOKEN = "ef_worker-host-token-for-the-fetch-test-000000"


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The API's URL and its home (where it keeps model files)."""
    home = tmp_path_factory.mktemp("api-home")
    port = _free_port()
    # Model bytes need a token even where reads are open; workers send theirs.
    env = {
        **os.environ,
        "EDGEFARM_HOME": str(home),
        "EDGEFARM_DATABASE_URL": database_url,
        "EDGEFARM_API_TOKEN": API_TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            # 503 is an answer too: the farm has no beat here.
            return httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_for("the API to answer", up, 30)
        yield url, home
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _model_row(database_url: str, data: bytes, name: str) -> Model:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            session.execute(text("DELETE FROM models WHERE name = :n"), {"n": name})
            row = Model(
                sha256=hashlib.sha256(data).hexdigest(),
                name=name,
                format="onnx",
                size_bytes=len(data),
                input_spec=[],
            )
            session.add(row)
            session.commit()
            return row
    finally:
        engine.dispose()


def test_a_missing_model_file_is_fetched_from_the_api(
    api: tuple[str, Path], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, api_home = api
    data = testmodels.mlp(seed=7).SerializeToString()
    row = _model_row(database_url, data, "fetched-mlp")
    (api_home / "models").mkdir(exist_ok=True)
    (api_home / "models" / f"{row.sha256}.onnx").write_bytes(data)
    monkeypatch.setenv("EDGEFARM_API_URL", url)
    # Without the token the API refuses the bytes: the farm's misconfiguration, retried.
    monkeypatch.delenv("EDGEFARM_API_TOKEN", raising=False)
    get_settings.cache_clear()
    local = get_settings().models_path / f"{row.sha256}.onnx"
    local.unlink(missing_ok=True)
    with pytest.raises(InfrastructureError, match="answered 401"):
        model_file(row)
    assert not local.exists()
    monkeypatch.setenv("EDGEFARM_API_TOKEN", API_TOKEN)
    get_settings.cache_clear()

    path = model_file(row)
    assert path == local and path.read_bytes() == data
    # The API answers 404 for a model whose file is gone: the user's job cannot run.
    other = _model_row(database_url, testmodels.mlp(seed=8).SerializeToString(), "gone-mlp")
    with pytest.raises(JobError, match="missing from the farm"):
        model_file(other)
    # No API at all: the farm's failure, retried by the tasks.
    monkeypatch.setenv("EDGEFARM_API_URL", f"http://127.0.0.1:{_free_port()}")
    get_settings.cache_clear()
    with pytest.raises(InfrastructureError, match="did not answer"):
        model_file(other)
