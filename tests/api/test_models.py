"""POST/GET /api/v1/models: upload, dedupe, size limit, refusal of what is not a model."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.config import Settings
from harness.db import Model

import testmodels
import tflite_builder

URL = "/api/v1/models"


def onnx_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def upload(
    client: TestClient, data: bytes, auth: dict[str, str], filename: str = "m.onnx"
) -> tuple[int, dict[str, object]]:
    response = client.post(URL, files={"file": (filename, data)}, headers=auth)
    return response.status_code, response.json()


def stored_files(settings: Settings) -> list[Path]:
    directory = settings.models_path
    return sorted(directory.iterdir()) if directory.exists() else []


def count_sha(session: Session, data: bytes) -> int:
    sha = hashlib.sha256(data).hexdigest()
    return session.scalar(select(func.count()).where(Model.sha256 == sha)) or 0


def test_upload_onnx_then_duplicate(
    client: TestClient, auth: dict[str, str], settings: Settings, session: Session
) -> None:
    data = onnx_bytes(testmodels.mlp(seed=11))
    status, body = upload(client, data, auth, "dir/my-mlp.onnx")
    assert status == 201, body
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["name"] == "my-mlp"
    assert body["format"] == "onnx"
    assert body["size_bytes"] == len(data)
    assert body["inputs"] == [{"name": "x", "shape": [1, 64], "dtype": "float32"}]
    assert set(body) == {"id", "sha256", "name", "format", "size_bytes", "inputs", "created_at"}
    path = settings.models_path / f"{body['sha256']}.onnx"
    assert path.read_bytes() == data
    assert [p.name for p in stored_files(settings)] == [path.name]  # no temporary left

    status2, again = upload(client, data, auth, "other-name.onnx")
    assert status2 == 200
    assert again["id"] == body["id"] and again["name"] == "my-mlp"
    assert count_sha(session, data) == 1

    got = client.get(f"{URL}/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    listing = client.get(URL, params={"name": "my-mlp"}).json()
    assert body["id"] in [m["id"] for m in listing["data"]]


def test_upload_tflite(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    data = tflite_builder.mlp_tflite(seed=5)
    status, body = upload(client, data, auth, "tiny.tflite")
    assert status == 201, body
    assert body["format"] == "tflite"
    assert body["inputs"] and all(isinstance(d, int) for d in body["inputs"][0]["shape"])
    assert (settings.models_path / f"{body['sha256']}.tflite").is_file()


def test_dynamic_dims_are_accepted(client: TestClient, auth: dict[str, str]) -> None:
    status, body = upload(client, onnx_bytes(testmodels.dynamic_batch(seed=3)), auth, "dyn.onnx")
    assert status == 201, body
    assert body["inputs"] == [{"name": "images", "shape": ["batch", 3, 8, 8], "dtype": "float32"}]


def test_over_the_limit_is_413_and_stores_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings, session: Session
) -> None:
    limit = settings.max_upload_mb * 2**20
    # Just over: refused while streaming. Far over: refused from Content-Length alone.
    for size in (limit + 1, limit + 200_000):
        data = os.urandom(size)
        status, body = upload(client, data, auth, "big.onnx")
        assert status == 413, body
        assert str(limit) in str(body["detail"])
        assert count_sha(session, data) == 0
    assert stored_files(settings) == []


def test_not_a_model_is_400_with_the_reason(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    status, body = upload(client, os.urandom(3000), auth, "junk.onnx")
    assert status == 400
    assert "junk" in body["detail"] and "ONNX" in body["detail"]
    status, body = upload(client, b"", auth, "empty.onnx")
    assert status == 400 and "empty" in body["detail"]
    status, body = upload(client, b"PK\x03\x04not really a zip", auth, "x.pt2")
    assert status == 400 and "zip" in body["detail"]
    assert stored_files(settings) == []


def test_upload_needs_the_file_field(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(URL, data={"note": "no file"}, headers=auth)
    assert response.status_code == 422
    response = client.post(URL, content=b"raw", headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_download_returns_the_stored_bytes(client: TestClient, auth: dict[str, str]) -> None:
    data = onnx_bytes(testmodels.mlp(seed=11))
    _status, uploaded = upload(client, data, auth, "mlp.onnx")
    url = f"/api/v1/models/{uploaded['id']}/file"
    # Models are often private: their bytes need a token even while reads are open.
    refused = client.get(url)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.get(f"/api/v1/models/{uploaded['id']}").status_code == 200
    response = client.get(url, headers=auth)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["x-edgefarm-sha256"] == hashlib.sha256(data).hexdigest()
