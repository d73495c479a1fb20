"""A client of a running farm's REST API (``edgefarm submit``): upload, submit, wait.

Where the farm is: ``--url``, else ``EDGEFARM_API_URL``, else the embedded farm started by
``edgefarm up`` under the same ``EDGEFARM_HOME`` (it writes ``farm.json``). The token likewise:
``--token``, ``EDGEFARM_API_TOKEN``, or the one ``edgefarm up`` wrote.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from harness.config import get_settings
from harness.errors import EdgefarmError, InfrastructureError, JobError
from harness.measure.protocol import MeasurementRequest, MeasurementSettings


class FarmError(EdgefarmError):
    """The farm answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def farm_file() -> Path:
    return get_settings().home / "farm.json"


def token_file() -> Path:
    return get_settings().config_path / "api-token"


def default_url() -> str:
    settings = get_settings()
    explicit = settings.model_fields_set & {"api_url"}
    if not explicit and farm_file().exists():
        try:
            return str(json.loads(farm_file().read_text())["api_url"])
        except (OSError, ValueError, KeyError):
            pass
    return settings.api_url


def default_token() -> str | None:
    settings = get_settings()
    if settings.api_token:
        return settings.api_token
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


def parse_selector(text: str) -> dict[str, Any]:
    """``all`` | ``pool=NAME`` | ``soc=NAME`` | ``model=TEXT`` | ``ids=1,2``; comma-free terms
    may be joined with ``;`` (e.g. ``pool=lab;soc=MT6985``)."""
    if text.strip() == "all":
        return {"all": True}
    selector: dict[str, Any] = {}
    for term in text.split(";"):
        key, sep, value = term.partition("=")
        key = key.strip()
        if not sep or key not in ("pool", "soc", "model", "ids") or not value.strip():
            raise JobError(
                "prepare",
                f"device selector {text!r}: write all, pool=NAME, soc=NAME, model=TEXT or ids=1,2",
            )
        if key == "ids":
            try:
                selector["ids"] = [int(v) for v in value.split(",")]
            except ValueError:
                raise JobError("prepare", f"ids={value!r}: write ids=1,2,3") from None
        else:
            selector[key] = value.strip()
    return selector


class FarmClient:
    """Talks to ``/api/v1`` of a farm."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout_s: float = 60.0
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.token = token or default_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InfrastructureError(
                f"cannot reach the farm at {self.url}: {exc} (is it up? `edgefarm up`)"
            ) from None
        if response.status_code >= 400:
            raise FarmError(response.status_code, _error_text(response))
        return response.json()

    def upload_model(self, path: Path) -> dict[str, Any]:
        with open(path, "rb") as handle:
            result: dict[str, Any] = self._request(
                "POST", "/api/v1/models", files={"file": (path.name, handle)}
            )
        return result

    def submit(
        self,
        *,
        model_id: int,
        devices: dict[str, Any],
        backends: list[str],
        settings: MeasurementRequest | MeasurementSettings,
    ) -> dict[str, Any]:
        body = {
            "model_id": model_id,
            "devices": devices,
            "backends": backends,
            "settings": settings.model_dump(mode="json", exclude_none=True),
        }
        result: dict[str, Any] = self._request("POST", "/api/v1/benchmarks", json=body)
        return result

    def job(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{job_id}")
        return result

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: its status code (200 or 503, both answers) and its body."""
        try:
            response = self._http.get("/healthz")
        except httpx.HTTPError as exc:
            raise InfrastructureError(
                f"cannot reach the farm at {self.url}: {exc} (is it up? `edgefarm up`)"
            ) from None
        if response.status_code not in (200, 503):
            raise FarmError(response.status_code, _error_text(response))
        body: dict[str, Any] = response.json()
        return response.status_code, body

    def devices(self) -> list[dict[str, Any]]:
        result = self._request("GET", "/api/v1/devices")
        return list(result["data"] if isinstance(result, dict) else result)

    def wait(
        self,
        job_id: int,
        *,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float = 3600.0,
    ) -> dict[str, Any]:
        """Poll the job until it is done; returns the final job."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] == "done":
                return job
            if time.monotonic() > deadline:
                raise InfrastructureError(f"job {job_id} did not finish within {timeout_s:.0f} s")
            time.sleep(poll_s)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}" for item in detail
        )
    elif isinstance(detail, dict):
        detail = detail.get("message") or json.dumps(detail)
    return f"HTTP {response.status_code}: {detail}"


def job_documents(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The result documents of a finished job's runs, in run order (a run that ended with no
    result recorded gets a ``failed`` document saying so)."""
    documents = []
    for run in job.get("runs", []):
        result = run.get("result")
        if result is not None:
            documents.append(result["document"])
            continue
        error = run.get("error") or {}
        documents.append(
            {
                "model": {"name": f"model {job.get('model_id')}"},
                "device": {"id": f"device {run.get('device_id')}"},
                "backend": run.get("backend"),
                "status": "failed",
                "error": {
                    "stage": error.get("stage") or "run",
                    "message": error.get("message") or f"run ended {run.get('status')}",
                },
            }
        )
    return documents
