"""The nightly regression loop's tables: suites, their nights, series, alerts, webhooks.

A *suite* names what to measure every night and when; each scheduled time it comes due is one
*night*, unique on (suite, scheduled_for): two beats, a restarted beat or a redelivered tick
that all try to start the same night insert the same key and only one wins. A night's jobs are
ordinary jobs (``jobs.night_id``). A *series* is (suite, model name, device, backend, variant):
the unit that change detection watches from night to night, whatever else changes.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from harness.db.models import Base, _enum, utcnow


class NightStatus(enum.StrEnum):
    running = "running"  # its jobs are queued or running
    done = "done"  # every run ended; analysed
    failed = "failed"  # it could not start (a model or every device gone): ``problems``


class NightTrigger(enum.StrEnum):
    schedule = "schedule"
    manual = "manual"


class AlertKind(enum.StrEnum):
    regression = "regression"  # a metric got worse
    improvement = "improvement"  # a metric got better (recorded, not notified by default)
    accuracy = "accuracy"  # outputs moved beyond tolerance, or compare failed
    failure = "failure"  # a series that ran fails tonight


class AlertState(enum.StrEnum):
    untriaged = "untriaged"
    acknowledged = "acknowledged"
    invalid = "invalid"  # a false alarm: counted for the measured false-alarm rate
    fixed = "fixed"


class ConfirmationStatus(enum.StrEnum):
    """Where an alert's A/B confirmation stands (None: the alert needs none — a failure, an
    accuracy alert, or confirmation switched off)."""

    pending = "pending"  # its A/B job is queued or running
    confirmed = "confirmed"  # the A/B found the difference: the alert stands, notified
    rejected = "rejected"  # the A/B did not: recorded, never notified
    unavailable = "unavailable"  # the A/B could not run: the alert stands, notified, says so


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # waiting for its next attempt
    delivered = "delivered"
    failed = "failed"  # gave up after the last retry


class Suite(Base):
    __tablename__ = "suites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # Bumped by every change of what is measured; each night records the version it ran.
    version: Mapped[int] = mapped_column(Integer, default=1)
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # harness.regression.SuiteSpec
    schedule: Mapped[str] = mapped_column(String(128), default="0 2 * * *")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Night(Base):
    __tablename__ = "nights"
    __table_args__ = (UniqueConstraint("suite_id", "scheduled_for", name="uq_night"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("suites.id", ondelete="CASCADE"), index=True)
    scheduled_for: Mapped[datetime] = mapped_column()  # UTC; a manual night: when asked
    suite_version: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[NightTrigger] = mapped_column(_enum(NightTrigger, "night_trigger"))
    status: Mapped[NightStatus] = mapped_column(
        _enum(NightStatus, "night_status"), default=NightStatus.running, index=True
    )
    toolchain: Mapped[dict[str, Any]] = mapped_column(default=dict)
    problems: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    analysed_at: Mapped[datetime | None] = mapped_column(default=None)
    # When its alerts' notifications were queued: once no alert of the night awaits its
    # A/B confirmation.
    notified_at: Mapped[datetime | None] = mapped_column(default=None)

    suite: Mapped[Suite] = relationship()


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (
        UniqueConstraint(
            "suite_id", "model_name", "device_id", "backend", "variant", name="uq_series"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("suites.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(255))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    variant: Mapped[str] = mapped_column(String(255), default="")  # "" or "opt_level=2"
    # The artifact of the last night that was good (the A/B control): kept while referenced.
    last_good_night_id: Mapped[int | None] = mapped_column(
        ForeignKey("nights.id", ondelete="SET NULL"), default=None
    )
    last_good_artifact_id: Mapped[int | None] = mapped_column(
        ForeignKey("artifacts.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    night_id: Mapped[int] = mapped_column(ForeignKey("nights.id", ondelete="CASCADE"), index=True)
    kind: Mapped[AlertKind] = mapped_column(_enum(AlertKind, "alert_kind"), index=True)
    metric: Mapped[str] = mapped_column(String(32))  # median_ms | peak_rss_kb | load_ms | ...
    direction: Mapped[str] = mapped_column(String(8))  # up | down
    ratio: Mapped[float | None] = mapped_column(Float, default=None)
    ratio_low: Mapped[float | None] = mapped_column(Float, default=None)
    ratio_high: Mapped[float | None] = mapped_column(Float, default=None)
    before: Mapped[float | None] = mapped_column(Float, default=None)
    after: Mapped[float | None] = mapped_column(Float, default=None)
    pvalue: Mapped[float | None] = mapped_column(Float, default=None)
    # The night the change starts, and the last good night before it (what changed between).
    first_bad_night_id: Mapped[int | None] = mapped_column(
        ForeignKey("nights.id", ondelete="SET NULL"), default=None
    )
    last_good_night_id: Mapped[int | None] = mapped_column(
        ForeignKey("nights.id", ondelete="SET NULL"), default=None
    )
    changes: Mapped[list[Any]] = mapped_column(default=list)  # the toolchain diff
    group_key: Mapped[str] = mapped_column(String(64), index=True)
    confirmation: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the A/B experiment
    confirmation_status: Mapped[ConfirmationStatus | None] = mapped_column(
        _enum(ConfirmationStatus, "confirmation_status"), default=None, index=True
    )
    confirmation_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    message: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[AlertState] = mapped_column(
        _enum(AlertState, "alert_state"), default=AlertState.untriaged, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    series: Mapped[Series] = relationship()
    events: Mapped[list[AlertEvent]] = relationship(order_by="AlertEvent.id")


class AlertEvent(Base):
    """A change of an alert's state: who, when, why."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    state: Mapped[AlertState] = mapped_column(_enum(AlertState, "alert_state"))
    actor: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("suites.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))  # HMAC-SHA256 key of the signature header
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One notification to one webhook, and what became of it (the delivery log)."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "event_key", name="uq_delivery"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event_key: Mapped[str] = mapped_column(String(128))  # what it announces, once per webhook
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.pending, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
