"""The farm's nightly regression API as a client sees it: suites, nights, alerts, webhooks
(``edgefarm suite`` and ``edgefarm alerts``). :class:`NightlyClient` is a
:class:`~harness.client.FarmClient` with these routes; the answers are typed below as the API
writes them (api/schemas_nightly.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypedDict
from urllib.parse import quote

import httpx

from harness.client import FarmClient, FarmError, _error_text
from harness.errors import InfrastructureError


class NightRefJson(TypedDict):
    id: int
    scheduled_for: str
    trigger: str
    status: str
    created_at: str
    finished_at: str | None


class SuiteJson(TypedDict):
    id: int
    name: str
    version: int
    description: str
    spec: dict[str, Any]  # harness.regression.suites.SuiteSpec, edited and sent back as is
    schedule: str
    timezone: str
    enabled: bool
    created_by: str
    created_at: str
    updated_at: str
    next_run_at: str | None
    last_night: NightRefJson | None


class NightJobJson(TypedDict):
    id: int
    model_id: int
    variant: str
    status: str
    runs: dict[str, int]
    backends: list[str]
    created_at: str
    finished_at: str | None


class NightJson(TypedDict):
    id: int
    suite_id: int
    suite: str
    suite_version: int
    scheduled_for: str
    trigger: str
    status: str
    problems: list[dict[str, str]]
    created_at: str
    finished_at: str | None
    analysed_at: str | None
    toolchain: dict[str, Any]
    jobs: list[NightJobJson]


class SeriesJson(TypedDict):
    id: int
    suite: str
    model_name: str
    device_id: int
    backend: str
    variant: str


class AlertEventJson(TypedDict):
    state: str
    actor: str
    note: str
    at: str


class AlertJson(TypedDict, total=False):
    id: int
    series: SeriesJson
    night_id: int
    kind: str
    metric: str
    direction: str
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    before: float | None
    after: float | None
    pvalue: float | None
    first_bad_night_id: int | None
    last_good_night_id: int | None
    changes: list[Any]
    group_key: str
    confirmation_status: str | None
    confirmation_job_id: int | None
    confirmation: dict[str, Any]
    message: str
    state: str
    created_at: str
    updated_at: str
    events: list[AlertEventJson]  # one alert shown; not in a listing


class WebhookJson(TypedDict, total=False):
    id: int
    suite_id: int
    url: str
    enabled: bool
    created_at: str
    secret: str  # in the answer to its creation only


class DeliveryJson(TypedDict):
    id: int
    webhook_id: int
    event_key: str
    status: str
    attempts: int
    next_attempt_at: str | None
    response_status: int | None
    error: str | None
    created_at: str
    delivered_at: str | None
    payload: dict[str, Any]


def _name(name: str) -> str:
    return quote(name, safe="")


class NightlyClient(FarmClient):
    """Suites, nights, alerts and webhooks of ``/api/v1``."""

    def _delete(self, path: str) -> None:
        """DELETE ``path``; its answer (204) has no body."""
        try:
            response = self._http.delete(path)
        except httpx.HTTPError as exc:
            raise InfrastructureError(
                f"cannot reach the farm at {self.url}: {exc} (is it up? `edgefarm up`)"
            ) from None
        if response.status_code >= 400:
            raise FarmError(response.status_code, _error_text(response))

    # Suites.

    def create_suite(self, body: dict[str, Any]) -> SuiteJson:
        suite: SuiteJson = self._request("POST", "/api/v1/suites", json=body)
        return suite

    def suites(self) -> list[SuiteJson]:
        found: list[SuiteJson] = []
        path: str | None = "/api/v1/suites?limit=1000"
        while path is not None:
            page = self._request("GET", path)
            found += page["data"]
            path = page["next"]
        return found

    def suite(self, name: str) -> SuiteJson:
        suite: SuiteJson = self._request("GET", f"/api/v1/suites/{_name(name)}")
        return suite

    def update_suite(self, name: str, changes: dict[str, Any]) -> SuiteJson:
        suite: SuiteJson = self._request("PATCH", f"/api/v1/suites/{_name(name)}", json=changes)
        return suite

    def pause_suite(self, name: str) -> SuiteJson:
        suite: SuiteJson = self._request("POST", f"/api/v1/suites/{_name(name)}/pause")
        return suite

    def resume_suite(self, name: str) -> SuiteJson:
        suite: SuiteJson = self._request("POST", f"/api/v1/suites/{_name(name)}/resume")
        return suite

    def delete_suite(self, name: str) -> None:
        self._delete(f"/api/v1/suites/{_name(name)}")

    def run_suite(self, name: str) -> NightJson:
        """Start a night of the suite now."""
        night: NightJson = self._request("POST", f"/api/v1/suites/{_name(name)}/runs")
        return night

    def nights(self, name: str, *, limit: int = 10) -> list[NightJson]:
        page = self._request("GET", f"/api/v1/suites/{_name(name)}/nights", params={"limit": limit})
        nights: list[NightJson] = page["data"]
        return nights

    def night(self, night_id: int) -> NightJson:
        night: NightJson = self._request("GET", f"/api/v1/nights/{night_id}")
        return night

    def job_json(self, job_id: int) -> dict[str, Any]:
        """A job as the API writes it (runs, results and their documents as JSON)."""
        job: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{job_id}")
        return job

    def wait_night(
        self,
        night_id: int,
        *,
        on_update: Callable[[NightJson], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float = 6 * 3600.0,
    ) -> NightJson:
        """Poll the night until every one of its jobs is done (or it failed to start)."""
        deadline = time.monotonic() + timeout_s
        while True:
            night = self.night(night_id)
            if on_update is not None:
                on_update(night)
            if night["status"] != "running" or all(j["status"] == "done" for j in night["jobs"]):
                return night
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"night {night_id} did not finish within {timeout_s:.0f} s"
                )
            time.sleep(poll_s)

    # Webhooks.

    def add_webhook(self, suite: str, url: str, secret: str | None = None) -> WebhookJson:
        body = {"url": url} if secret is None else {"url": url, "secret": secret}
        hook: WebhookJson = self._request(
            "POST", f"/api/v1/suites/{_name(suite)}/webhooks", json=body
        )
        return hook

    def webhooks(self, suite: str) -> list[WebhookJson]:
        hooks: list[WebhookJson] = self._request("GET", f"/api/v1/suites/{_name(suite)}/webhooks")[
            "data"
        ]
        return hooks

    def remove_webhook(self, webhook_id: int) -> None:
        self._delete(f"/api/v1/webhooks/{webhook_id}")

    def deliveries(self, webhook_id: int, *, limit: int = 20) -> list[DeliveryJson]:
        page = self._request(
            "GET", f"/api/v1/webhooks/{webhook_id}/deliveries", params={"limit": limit}
        )
        found: list[DeliveryJson] = page["data"]
        return found

    # Alerts.

    def alerts(
        self,
        *,
        state: str | None = None,
        suite: str | None = None,
        series: int | None = None,
        kind: str | None = None,
        confirmation: str | None = None,
        limit: int = 50,
    ) -> tuple[list[AlertJson], int]:
        """The newest ``limit`` alerts that match, and how many match in all."""
        given = {
            "state": state,
            "suite": suite,
            "series": series,
            "kind": kind,
            "confirmation": confirmation,
            "limit": limit,
        }
        params = {key: value for key, value in given.items() if value is not None}
        page = self._request("GET", "/api/v1/alerts", params=params)
        found: list[AlertJson] = page["data"]
        return found, int(page["count"])

    def alert(self, alert_id: int) -> AlertJson:
        alert: AlertJson = self._request("GET", f"/api/v1/alerts/{alert_id}")
        return alert

    def set_alert_state(self, alert_id: int, state: str, note: str = "") -> AlertJson:
        alert: AlertJson = self._request(
            "PATCH", f"/api/v1/alerts/{alert_id}", json={"state": state, "note": note}
        )
        return alert
