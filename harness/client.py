"""A client of a running farm's REST API (``edgefarm submit``): upload, submit, wait.

Where the farm is: ``--url``, else ``EDGEFARM_API_URL``, else the embedded farm started by
``edgefarm up`` under the same ``EDGEFARM_HOME`` (it writes ``farm.json``). The token likewise:
``--token``, ``EDGEFARM_API_TOKEN``, or the one ``edgefarm up`` wrote.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired

import httpx
from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness import __version__
from harness.config import get_settings
from harness.errors import EdgefarmError, InfrastructureError, JobError, Stage
from harness.jsontypes import JsonObject
from harness.measure.document import DeviceRef, Provenance, ResultDocument, ResultError
from harness.measure.protocol import MeasurementRequest, MeasurementSettings
from harness.modelio import ModelDescription
from harness.modelio.specs import TensorJson

if TYPE_CHECKING:  # the farm's queries (SQLAlchemy) are not the client's
    from harness.farm.liveness import ProcessJson
    from harness.farm.selection import SelectorJson

# What the client reads of the API's answers (api/schemas.py writes them): JSON, typed. A
# job's result documents and settings are read into their harness types.


class ModelJson(TypedDict):
    id: int
    sha256: str
    name: str
    format: str
    size_bytes: int
    inputs: list[TensorJson]
    created_at: str


class RunErrorJson(TypedDict):
    stage: Stage | None
    message: str


class ResultJson(TypedDict):
    id: int
    run_id: int
    job_id: int
    model_id: int
    device_id: int
    backend: str
    status: str
    created_at: str
    document: ResultDocument


class RunJson(TypedDict):
    id: int
    device_id: int
    backend: str
    status: str
    attempts: int
    artifact_id: int | None
    error: RunErrorJson | None
    created_at: str
    enqueued_at: str | None
    started_at: str | None
    finished_at: str | None
    result: ResultJson | None


class JobJson(TypedDict):
    id: int
    status: Literal["queued", "running", "done"]
    model_id: int
    submitted_by: str
    nightly: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    settings: MeasurementSettings
    runs: list[RunJson]
    enqueued: NotRequired[bool]  # an answer to a submission


class TuningJson(TypedDict):
    """A farm tuning as ``/api/v1/tunings`` answers it."""

    id: int
    model_id: int
    backend: str
    device_class: str
    target: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    trials: int | None
    minutes: float | None
    batch: int
    threads: int
    population: int
    attempts: int
    report: dict[str, Any]
    error_message: str | None


class LivenessJson(TypedDict):
    worker: str | None
    alive: bool
    heartbeat_at: str | None
    reason: str | None
    offered: bool


class DeviceJson(TypedDict):
    id: int
    serial: str | None
    address: str
    pool: str
    soc: str
    model_name: str
    target: str
    facts: JsonObject  # DeviceFacts.from_dict reads it
    state: str
    health: str
    health_reason: str | None
    worker: str | None
    liveness: LivenessJson
    current_run: JsonObject | None
    lease_expires_at: str | None
    last_seen_at: str | None
    created_at: str


class BeatJson(TypedDict):
    alive: bool
    last_tick_at: str | None
    age_s: float | None


class HealthJson(TypedDict, total=False):
    """``/healthz``; a farm that is down may leave out all but ``status``."""

    status: str
    database: str
    broker: str
    detail: str | None
    problems: list[str]
    beat: BeatJson | None
    workers: list[ProcessJson]
    live_queues: list[str]
    starved_queues: list[JsonObject]
    runs_in_flight: int


_JOB: TypeAdapter[JobJson] = TypeAdapter(JobJson)
_TUNING: TypeAdapter[TuningJson] = TypeAdapter(TuningJson)
TUNING_ENDED = ("done", "failed", "cancelled")


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


def parse_selector(text: str) -> SelectorJson:
    """``all`` | ``pool=NAME`` | ``soc=NAME`` | ``model=TEXT`` | ``ids=1,2``; comma-free terms
    may be joined with ``;`` (e.g. ``pool=lab;soc=MT6985``)."""
    if text.strip() == "all":
        return {"all": True}
    selector: SelectorJson = {}
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
        elif key == "pool":
            selector["pool"] = value.strip()
        elif key == "soc":
            selector["soc"] = value.strip()
        else:
            selector["model"] = value.strip()
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

    def upload_model(self, path: Path) -> ModelJson:
        with open(path, "rb") as handle:
            result: ModelJson = self._request(
                "POST", "/api/v1/models", files={"file": (path.name, handle)}
            )
        return result

    def submit(
        self,
        *,
        model_id: int,
        devices: SelectorJson,
        backends: list[str],
        settings: MeasurementRequest | MeasurementSettings,
    ) -> JobJson:
        body = {
            "model_id": model_id,
            "devices": devices,
            "backends": backends,
            "settings": settings.model_dump(mode="json", exclude_none=True),
        }
        return _JOB.validate_python(self._request("POST", "/api/v1/benchmarks", json=body))

    def submit_tuning(
        self,
        *,
        model_id: int,
        devices: SelectorJson,
        trials: int | None = None,
        minutes: float | None = None,
        inputs: list[str] | None = None,
        batch: int = 16,
        backend: str = "tvm-cpu",
        threads: int = 0,
        population: int | None = None,
    ) -> list[TuningJson]:
        """``POST /api/v1/tunings``: one tuning per device class of the selected devices."""
        body: dict[str, Any] = {
            "model_id": model_id,
            "devices": devices,
            "batch": batch,
            "backend": backend,
        }
        if threads:
            body["threads"] = threads
        if population is not None:
            body["population"] = population
        if trials is not None:
            body["trials"] = trials
        if minutes is not None:
            body["minutes"] = minutes
        if inputs:
            body["inputs"] = inputs
        answer = self._request("POST", "/api/v1/tunings", json=body)
        return [_TUNING.validate_python(t) for t in answer["data"]]

    def tuning(self, tuning_id: int) -> TuningJson:
        return _TUNING.validate_python(self._request("GET", f"/api/v1/tunings/{tuning_id}"))

    def cancel_tuning(self, tuning_id: int) -> TuningJson:
        """Stop a tuning after its current batch (its records stay); an ended one as it is."""
        return _TUNING.validate_python(self._request("POST", f"/api/v1/tunings/{tuning_id}/cancel"))

    def wait_tunings(
        self,
        ids: list[int],
        *,
        on_update: Callable[[list[TuningJson]], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float = 24 * 3600.0,
        stop: threading.Event | None = None,
    ) -> list[TuningJson]:
        """Poll the tunings until every one has ended, or ``stop`` is set; returns them as
        last read."""
        deadline = time.monotonic() + timeout_s
        stop = stop or threading.Event()
        while True:
            tunings = [self.tuning(i) for i in ids]
            if on_update is not None:
                on_update(tunings)
            if all(t["status"] in TUNING_ENDED for t in tunings) or stop.is_set():
                return tunings
            if time.monotonic() > deadline:
                raise InfrastructureError(f"tunings {ids} did not end within {timeout_s:.0f} s")
            stop.wait(poll_s)

    def job(self, job_id: int) -> JobJson:
        return _JOB.validate_python(self._request("GET", f"/api/v1/jobs/{job_id}"))

    def health(self) -> tuple[int, HealthJson]:
        """``/healthz``: its status code (200 or 503, both answers) and its body."""
        try:
            response = self._http.get("/healthz")
        except httpx.HTTPError as exc:
            raise InfrastructureError(
                f"cannot reach the farm at {self.url}: {exc} (is it up? `edgefarm up`)"
            ) from None
        if response.status_code not in (200, 503):
            raise FarmError(response.status_code, _error_text(response))
        body: HealthJson = response.json()
        return response.status_code, body

    def devices(self) -> list[DeviceJson]:
        result = self._request("GET", "/api/v1/devices")
        devices: list[DeviceJson] = result["data"] if isinstance(result, dict) else result
        return list(devices)

    def wait(
        self,
        job_id: int,
        *,
        on_update: Callable[[JobJson], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float = 3600.0,
    ) -> JobJson:
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


def job_documents(job: JobJson) -> list[ResultDocument]:
    """The result documents of a finished job's runs, in run order (a run that ended with no
    result recorded gets a ``failed`` document saying so)."""
    documents = []
    for run in job["runs"]:
        result = run["result"]
        if result is not None:
            documents.append(result["document"])
            continue
        error = run["error"]
        documents.append(
            ResultDocument(
                model=ModelDescription(
                    name=f"model {job['model_id']}", sha256=None, format=None, inputs=[]
                ),
                device=DeviceRef(id=f"device {run['device_id']}"),
                backend=run["backend"],
                error=ResultError(
                    stage=(error and error["stage"]) or "run",
                    message=(error and error["message"]) or f"run ended {run['status']}",
                ),
                # The farm's versions are not known here: the client's own, and no TVM's.
                provenance=Provenance(edgefarm_version=__version__, tvm_version=""),
            )
        )
    return documents
