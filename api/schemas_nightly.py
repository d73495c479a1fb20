"""The bodies of the nightly regression loop's routes: suites, nights, alerts, webhooks
(``XCreate`` / ``XUpdate`` in, ``XPublic`` / ``XsPublic`` out)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from api.schemas import Listing, Public, StrictBody, Text
from harness.db import (
    Alert,
    AlertKind,
    AlertState,
    ConfirmationStatus,
    Delivery,
    DeliveryStatus,
    Job,
    JobStatus,
    Night,
    NightStatus,
    NightTrigger,
    Series,
    Suite,
    Webhook,
)
from harness.farm.webhooks import SECRET_MAX, SECRET_MIN, check_secret
from harness.regression.suites import SuiteChanges, SuiteFields, SuiteSpec, next_time
from harness.regression.webhooks import MAX_URL_LENGTH, check_url

# Suites.


class SuiteCreate(SuiteFields):
    """A new suite: its name, what it measures every night (``spec``) and when (``schedule``,
    read in ``timezone``)."""


class SuiteUpdate(SuiteChanges):
    """What is given replaces what was; a changed ``spec`` makes the suite's next version."""


class NightRef(Public):
    id: int
    scheduled_for: datetime
    trigger: NightTrigger
    status: NightStatus
    created_at: datetime
    finished_at: datetime | None


class SuitePublic(Public):
    id: int
    name: str
    version: int = Field(description="bumped by every change of the spec")
    description: str
    spec: SuiteSpec
    schedule: str = Field(description="cron: minute hour day-of-month month day-of-week")
    timezone: str
    enabled: bool = Field(description="false: paused (no scheduled nights; runs on demand)")
    created_by: str
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None = Field(description="the next scheduled night; none if paused")
    last_night: NightRef | None

    @classmethod
    def of(
        cls, suite: Suite, last_night: Night | None, *, now: datetime | None = None
    ) -> SuitePublic:
        upcoming = (
            next_time(suite.schedule, suite.timezone, now=now or datetime.now(UTC))
            if suite.enabled
            else None
        )
        return cls(
            id=suite.id,
            name=suite.name,
            version=suite.version,
            description=suite.description,
            spec=SuiteSpec.model_validate(suite.spec),
            schedule=suite.schedule,
            timezone=suite.timezone,
            enabled=suite.enabled,
            created_by=suite.created_by,
            created_at=suite.created_at,
            updated_at=suite.updated_at,
            next_run_at=upcoming,
            last_night=NightRef.model_validate(last_night) if last_night else None,
        )


class SuitesPublic(Listing):
    data: list[SuitePublic]


# Nights.


class NightJobPublic(Public):
    id: int
    model_id: int
    variant: str = Field(description='the option combination: "" or "opt_level=2"')
    status: JobStatus
    runs: dict[str, int] = Field(description="how many runs are in each status")
    backends: list[str]
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> NightJobPublic:
        counts: dict[str, int] = {}
        for run in job.runs:
            counts[str(run.status)] = counts.get(str(run.status), 0) + 1
        return cls(
            id=job.id,
            model_id=job.model_id,
            variant=job.variant,
            status=job.status,
            runs=counts,
            backends=sorted({run.backend for run in job.runs}),
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


class NightSummaryPublic(Public):
    id: int
    suite_id: int
    suite_version: int = Field(description="the suite's version this night ran")
    scheduled_for: datetime = Field(description="the scheduled time; a manual night: when asked")
    trigger: NightTrigger
    status: NightStatus
    problems: list[Any] = Field(description="what could not run (a model or devices gone)")
    created_at: datetime
    finished_at: datetime | None
    analysed_at: datetime | None


class NightPublic(NightSummaryPublic):
    suite: str
    toolchain: dict[str, Any] = Field(description="what each series ran with (per series id)")
    jobs: list[NightJobPublic]

    @classmethod
    def of(cls, night: Night, suite: Suite, jobs: list[Job]) -> NightPublic:
        return cls(
            **NightSummaryPublic.model_validate(night).model_dump(),
            suite=suite.name,
            toolchain=night.toolchain,
            jobs=[NightJobPublic.of(job) for job in jobs],
        )


class NightStarted(NightPublic):
    enqueued: bool = Field(
        description="false: the broker was unreachable; the jobs stay queued and are "
        "enqueued again by the workers' reaper"
    )


class NightsPublic(Listing):
    data: list[NightSummaryPublic]


# Alerts.


class SeriesPublic(Public):
    id: int
    suite: str
    model_name: str
    device_id: int
    backend: str
    variant: str

    @classmethod
    def of(cls, series: Series, suite_name: str) -> SeriesPublic:
        return cls(
            id=series.id,
            suite=suite_name,
            model_name=series.model_name,
            device_id=series.device_id,
            backend=series.backend,
            variant=series.variant,
        )


class AlertEventPublic(Public):
    state: AlertState
    actor: str = Field(description="who: the API token's name")
    note: str
    at: datetime


class AlertSummaryPublic(Public):
    id: int
    series: SeriesPublic
    night_id: int
    kind: AlertKind
    metric: str = Field(description="median_ms, peak_rss_kb, load_ms, accuracy, status")
    direction: str = Field(description="up or down")
    ratio: float | None = Field(description="after / before")
    ratio_low: float | None = Field(description="95% confidence interval of the ratio")
    ratio_high: float | None
    before: float | None
    after: float | None
    pvalue: float | None
    first_bad_night_id: int | None
    last_good_night_id: int | None
    changes: list[Any] = Field(description="what changed between the two nights (toolchain)")
    group_key: str = Field(description="alerts of one night with the same changes share it")
    confirmation_status: ConfirmationStatus | None = Field(
        description="its A/B confirmation: pending, confirmed, rejected (a false alarm the A/B "
        "caught: never notified), unavailable (could not run: notified); null: none needed"
    )
    confirmation_job_id: int | None = Field(description="the A/B job (an ordinary job)")
    confirmation: dict[str, Any] = Field(
        description="the A/B re-measurement: control and treatment, each phone's paired "
        "difference (ratio, 95% CI, p-value, verdict), which phone decided"
    )
    message: str
    state: AlertState
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, alert: Alert, suite_name: str) -> AlertSummaryPublic:
        fields = {name: getattr(alert, name) for name in cls.model_fields if name != "series"}
        return cls(**fields, series=SeriesPublic.of(alert.series, suite_name))


class AlertPublic(AlertSummaryPublic):
    events: list[AlertEventPublic] = Field(description="its triage history, oldest first")

    @classmethod
    def with_events(cls, alert: Alert, suite_name: str) -> AlertPublic:
        return cls(
            **AlertSummaryPublic.of(alert, suite_name).model_dump(),
            events=[AlertEventPublic.model_validate(e) for e in alert.events],
        )


class AlertsPublic(Listing):
    data: list[AlertSummaryPublic]


class AlertUpdate(StrictBody):
    state: AlertState = Field(description="acknowledged, invalid (a false alarm), fixed, ...")
    note: Text = Field(default="", max_length=4000, description="why; kept in the history")


# Webhooks.


class WebhookCreate(StrictBody):
    url: str = Field(max_length=MAX_URL_LENGTH, description="http:// or https://")
    secret: str | None = Field(
        default=None,
        min_length=SECRET_MIN,
        max_length=SECRET_MAX,
        description="keys the X-Edgefarm-Signature HMAC; made for you when left out",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)


class WebhookPublic(Public):
    id: int
    suite_id: int
    url: str
    enabled: bool
    created_at: datetime

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookPublic:
        return cls.model_validate(webhook)


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="shown this once: verify X-Edgefarm-Signature with it")


class WebhooksPublic(Listing):
    data: list[WebhookPublic]


class DeliveryPublic(Public):
    id: int
    webhook_id: int
    event_key: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    response_status: int | None = Field(description="the receiver's last HTTP status")
    error: str | None = Field(description="what went wrong at the last attempt")
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryPublic:
        return cls.model_validate(delivery)


class DeliveriesPublic(Listing):
    data: list[DeliveryPublic]
