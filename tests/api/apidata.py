"""Rows the API tests insert directly, and shared constants."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import onnx
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from harness.db import Device, Job, JobStatus, Model, Result, Run, RunStatus
from harness.measure.document import DeviceRef, Provenance, ResultDocument, ResultError
from harness.measure.stats import LatencyStats
from harness.modelio import ModelDescription

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "test"
DATABASE_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


BROKER_DB = 3
BROKER_URL = f"redis://127.0.0.1:6379/{BROKER_DB}"
CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1

ClientFactory = Callable[..., TestClient]


def uid() -> str:
    return uuid.uuid4().hex[:10]


def add_model(session: Session, name: str | None = None) -> Model:
    data = uuid.uuid4().bytes
    model = Model(
        sha256=hashlib.sha256(data).hexdigest(),
        name=name or f"model-{uid()}",
        format="onnx",
        size_bytes=len(data),
        input_spec=[{"name": "x", "shape": [1, 64], "dtype": "float32"}],
    )
    session.add(model)
    session.flush()
    return model


def add_result(
    session: Session,
    *,
    model: Model,
    device: Device,
    backend: str = "tvm-cpu",
    status: str = "ok",
    created_at: datetime | None = None,
    median_ms: float = 1.0,
) -> Result:
    """A job, its run (done or failed) and the run's result, inserted directly."""
    job = Job(submitted_by="tests", model_id=model.id, status=JobStatus.done)
    session.add(job)
    session.flush()
    run = Run(
        job_id=job.id,
        device_id=device.id,
        backend=backend,
        status=RunStatus.done if status == "ok" else RunStatus.failed,
    )
    session.add(run)
    session.flush()
    m = median_ms
    document = ResultDocument(
        model=ModelDescription(
            name=model.name, sha256=model.sha256, format=model.format, inputs=[]
        ),
        device=DeviceRef(id=device.address),
        backend=backend,
        status="ok" if status == "ok" else "failed",
        error=None if status == "ok" else ResultError(stage="run", message="it failed"),
        latency_ms=LatencyStats(m, m, m, 0.0, m, m, 0.0, (m, m), 1),
        samples_ms=[m],
        provenance=Provenance(edgefarm_version="0", tvm_version="0"),
    ).dump()
    result = Result(
        run_id=run.id,
        job_id=job.id,
        model_id=model.id,
        device_id=device.id,
        backend=backend,
        status=status,
        median_ms=median_ms,
        document=document,
        created_at=created_at or datetime.now(UTC),
    )
    session.add(result)
    session.commit()
    return result


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def upload_model(
    client: TestClient, auth: dict[str, str], model: onnx.ModelProto, filename: str
) -> dict[str, Any]:
    """POST /api/v1/models: the stored model's JSON."""
    data = model.SerializeToString()
    response = client.post("/api/v1/models", files={"file": (filename, data)}, headers=auth)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def post_json(
    client: TestClient, auth: dict[str, str], url: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``url``: the status code and the JSON answer."""
    response = client.post(url, json=body, headers=auth)
    return response.status_code, response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def edgefarm(farm: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """``edgefarm ARGS --url ... --token ...`` (the farm's options after the command's)."""
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args,
         "--url", farm["url"], "--token", farm["token"]],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EDGEFARM_HOME": str(farm["home"]), "COLUMNS": "200"},
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


@contextlib.contextmanager
def served_api(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The API served by uvicorn (``api.main:create_app``) on a free port with ``env``, once it
    answers: (its URL, the process). Stopped on exit."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
