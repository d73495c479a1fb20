"""An accepted upload is streamed to disk, never held in memory: the API, run as a real
uvicorn process, takes a 200 MiB model while its peak memory (VmHWM) grows by a small part of
that."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tflite_builder
from apidata import BROKER_URL, served_api

TOKEN = "memory-test-token-0123456789abcdef"
UPLOAD_MB = 200
# The API's peak may grow by this much at most while it takes the upload: buffers, the
# multipart parser, the parsed flatbuffer's tables. The upload itself would be 200 MiB.
ALLOWED_GROWTH_MB = 40


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture
def api_process(
    tmp_path: Path, fresh_database: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "EDGEFARM_HOME": str(tmp_path / "home"),
        "EDGEFARM_DATABASE_URL": fresh_database,
        "EDGEFARM_BROKER_URL": BROKER_URL,
        "EDGEFARM_API_TOKEN": TOKEN,
        "EDGEFARM_MAX_UPLOAD_MB": str(UPLOAD_MB + 10),
    }
    with served_api(env) as served:
        yield served


def test_a_large_upload_is_not_held_in_memory(
    tmp_path: Path, api_process: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = api_process
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # Warm up: the first upload imports the model readers; their memory is not the upload's.
    small = tflite_builder.mlp_tflite(seed=31)
    warm = httpx.post(
        f"{url}/api/v1/models", files={"file": ("s.tflite", small)}, headers=auth, timeout=120
    )
    assert warm.status_code == 201, warm.text

    # A valid TFLite model padded to 200 MiB: flatbuffers ignore what follows their tables.
    big = tmp_path / "big.tflite"
    digest = hashlib.sha256()
    with big.open("wb") as handle:
        head = tflite_builder.mlp_tflite(seed=32)
        handle.write(head)
        digest.update(head)
        chunk = b"\0" * 2**20
        for _ in range(UPLOAD_MB):
            handle.write(chunk)
            digest.update(chunk)
    size = big.stat().st_size

    before = memory_kb(process.pid, "VmHWM")
    with big.open("rb") as handle:
        response = httpx.post(
            f"{url}/api/v1/models",
            files={"file": ("big.tflite", handle)},
            headers=auth,
            timeout=300,
        )
    after = memory_kb(process.pid, "VmHWM")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["size_bytes"] == size and body["sha256"] == digest.hexdigest()
    stored = tmp_path / "home" / "models" / f"{body['sha256']}.tflite"
    assert stored.stat().st_size == size
    assert not [p.name for p in stored.parent.iterdir() if p.name.startswith(".")]  # staging
    growth_mb = (after - before) / 1024
    assert growth_mb < ALLOWED_GROWTH_MB, (
        f"the API's peak memory grew by {growth_mb:.0f} MiB for a {size / 2**20:.0f} MiB upload"
    )
