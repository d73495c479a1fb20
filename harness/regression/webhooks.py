"""Webhooks: a suite's notifications, signed, delivered at least once, retried with backoff.

:func:`notify` queues one :class:`~harness.db.Delivery` per enabled webhook of a suite, in the
caller's transaction; a delivery is unique on (webhook, event key), so announcing the same
event twice (a redelivered task, a second analysis) queues nothing the second time.

:func:`deliver_due` sends what is due. Each delivery is first *claimed* by a conditional UPDATE
that counts the attempt and pushes its next attempt past the time a POST can take, committed
before anything is sent: two workers never send the same delivery at once, and one that dies
mid-send leaves a claim that simply expires (the delivery is sent again: at least once; the
``X-Edgefarm-Delivery`` header lets a receiver drop a repeat). The POSTs run in parallel, each
recording its own outcome, so a receiver that hangs until the timeout delays nobody else, and
one that is down keeps its deliveries pending until it comes back or they run out of attempts.

A request carries the JSON body, ``X-Edgefarm-Signature: sha256=<hex HMAC-SHA256 of the exact
body bytes keyed by the webhook's secret>``, ``X-Edgefarm-Event`` (the payload's ``event``, or
the event key) and ``X-Edgefarm-Delivery`` (the delivery id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from harness import __version__
from harness.config import Settings, get_settings
from harness.db import Delivery, DeliveryStatus, Suite, Webhook, utcnow
from harness.errors import HarnessBug, one_line

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Edgefarm-Signature"
EVENT_HEADER = "X-Edgefarm-Event"
DELIVERY_HEADER = "X-Edgefarm-Delivery"
MAX_URL_LENGTH = 2048
MAX_EVENT_KEY = 128  # deliveries.event_key
MAX_PARALLEL = 16  # POSTs in flight at once, per call of deliver_due
DEFAULT_BATCH = 100


def check_url(url: str) -> str:
    """``url`` if it can be POSTed to (http or https, a host, at most :data:`MAX_URL_LENGTH`
    characters); ValueError saying what is wrong otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the URL must be http:// or https://, not {parts.scheme or 'none'}")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    return url


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for ``payload``."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Edgefarm-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notify(
    session: Session, suite: Suite, *, event_key: str, payload: dict[str, Any]
) -> list[Delivery]:
    """Queue ``payload`` for every enabled webhook of ``suite``; the deliveries created (none
    for a webhook that already has ``event_key``). Flushed, never committed."""
    if not 1 <= len(event_key) <= MAX_EVENT_KEY:
        raise HarnessBug(f"a webhook event key is 1 to {MAX_EVENT_KEY} characters: {event_key!r}")
    try:
        body_of(payload)
    except (TypeError, ValueError) as exc:
        raise HarnessBug(f"webhook payload of {event_key} is not JSON: {exc}") from None
    hooks = list(
        session.scalars(
            select(Webhook)
            .where(Webhook.suite_id == suite.id, Webhook.enabled.is_(True))
            .order_by(Webhook.id)
        )
    )
    if not hooks:
        return []
    existing = set(
        session.scalars(
            select(Delivery.webhook_id).where(
                Delivery.event_key == event_key,
                Delivery.webhook_id.in_([hook.id for hook in hooks]),
            )
        )
    )
    created = []
    for hook in hooks:
        if hook.id in existing:
            continue
        delivery = Delivery(
            webhook_id=hook.id,
            event_key=event_key,
            payload=payload,
            status=DeliveryStatus.pending,
            attempts=0,
            next_attempt_at=utcnow(),
        )
        try:
            # Another transaction may queue the same event at the same time: the unique
            # (webhook, event key) decides, and the loser queues nothing.
            with session.begin_nested():
                session.add(delivery)
                session.flush()
        except IntegrityError:
            continue
        created.append(delivery)
    return created


def backoff_s(attempts: int, settings: Settings) -> float:
    """How long after its ``attempts``-th failed attempt a delivery is tried again."""
    exponent = min(max(attempts - 1, 0), 62)
    return float(min(settings.webhook_backoff_s * 2.0**exponent, settings.webhook_backoff_max_s))


@dataclass(frozen=True)
class Attempt:
    """One POST of one delivery, and what became of the delivery."""

    delivery_id: int
    webhook_id: int
    status: DeliveryStatus
    attempts: int
    response_status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    webhook_id: int
    attempts: int  # counting this one
    url: str
    secret: str
    event: str
    body: bytes


def claim_s(settings: Settings) -> float:
    """How long a claim holds a delivery: well past the longest POST."""
    return 4.0 * settings.webhook_timeout_s + 30.0


def _claim(
    factory: Callable[[], Session], clock: datetime, limit: int, settings: Settings
) -> list[_Claimed]:
    hold = clock + timedelta(seconds=claim_s(settings))
    claimed: list[_Claimed] = []
    with factory() as session:
        due = session.execute(
            select(Delivery.id, Delivery.attempts)
            .join(Webhook, Delivery.webhook_id == Webhook.id)
            .where(
                Delivery.status == DeliveryStatus.pending,
                Delivery.next_attempt_at <= clock,
                Webhook.enabled.is_(True),
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        ).all()
        won: list[tuple[int, int]] = []
        for delivery_id, attempts in due:
            # Whoever changes the row first has it; the others find it changed.
            taken = session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.status == DeliveryStatus.pending,
                    Delivery.attempts == attempts,
                    Delivery.next_attempt_at <= clock,
                )
                .values(attempts=attempts + 1, next_attempt_at=hold)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                won.append((delivery_id, attempts + 1))
        session.commit()
        for delivery_id, attempts in won:
            delivery = session.get(Delivery, delivery_id)
            hook = session.get(Webhook, delivery.webhook_id) if delivery is not None else None
            if delivery is None or hook is None:
                continue  # deleted with its webhook meanwhile
            event = delivery.payload.get("event")
            claimed.append(
                _Claimed(
                    delivery_id=delivery_id,
                    webhook_id=hook.id,
                    attempts=attempts,
                    url=hook.url,
                    secret=hook.secret,
                    event=event if isinstance(event, str) else delivery.event_key,
                    body=body_of(delivery.payload),
                )
            )
    return claimed


def _post(client: httpx.Client, claim: _Claimed) -> tuple[int | None, str | None]:
    """The receiver's status (None when there was no answer) and what went wrong (None for
    a 2xx)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"edgefarm/{__version__}",
        SIGNATURE_HEADER: signature(claim.secret, claim.body),
        EVENT_HEADER: claim.event,
        DELIVERY_HEADER: str(claim.delivery_id),
    }
    try:
        response = client.post(claim.url, content=claim.body, headers=headers)
    except httpx.TimeoutException as exc:
        return None, f"timed out: {type(exc).__name__}"
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return None, one_line(f"{type(exc).__name__}: {exc}", 500)
    if 200 <= response.status_code < 300:
        return response.status_code, None
    text = one_line(response.text, 200) if response.text else response.reason_phrase
    return response.status_code, f"HTTP {response.status_code}: {text}"


def _record(
    factory: Callable[[], Session],
    claim: _Claimed,
    at: datetime,
    status_code: int | None,
    error: str | None,
    settings: Settings,
) -> Attempt:
    if error is None:
        status = DeliveryStatus.delivered
        values: dict[str, Any] = {"delivered_at": at, "next_attempt_at": None}
    elif claim.attempts >= settings.webhook_max_attempts:
        status = DeliveryStatus.failed
        values = {"next_attempt_at": None}
    else:
        status = DeliveryStatus.pending
        values = {"next_attempt_at": at + timedelta(seconds=backoff_s(claim.attempts, settings))}
    with factory() as session:
        # Only the claim that is still current records (an expired one was taken over).
        session.execute(
            update(Delivery)
            .where(
                Delivery.id == claim.delivery_id,
                Delivery.status == DeliveryStatus.pending,
                Delivery.attempts == claim.attempts,
            )
            .values(status=status, response_status=status_code, error=error, **values)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    if error is not None:
        log.warning(
            "webhook %s, delivery %s, attempt %d: %s (%s)",
            claim.webhook_id, claim.delivery_id, claim.attempts, error, status,
        )  # fmt: skip
    return Attempt(
        delivery_id=claim.delivery_id,
        webhook_id=claim.webhook_id,
        status=status,
        attempts=claim.attempts,
        response_status=status_code,
        error=error,
    )


def deliver_due(
    session_factory: Callable[[], Session],
    *,
    now: datetime | None = None,
    limit: int = DEFAULT_BATCH,
    settings: Settings | None = None,
) -> list[Attempt]:
    """Send up to ``limit`` pending deliveries whose time has come (at ``now``, default the
    present), in parallel; each is marked delivered (a 2xx answer), or tried again after
    :func:`backoff_s`, or failed after ``webhook_max_attempts``. Commits through its own
    sessions from ``session_factory``; returns what each attempt did."""
    settings = settings or get_settings()
    clock = now or utcnow()
    claimed = _claim(session_factory, clock, limit, settings)
    if not claimed:
        return []
    timeout = httpx.Timeout(settings.webhook_timeout_s)

    def send(claim: _Claimed) -> Attempt:
        status_code, error = _post(client, claim)
        # The next attempt counts from when this one ended (a slow receiver took its time).
        return _record(session_factory, claim, now or utcnow(), status_code, error, settings)

    with (
        httpx.Client(timeout=timeout, follow_redirects=False) as client,
        ThreadPoolExecutor(max_workers=min(len(claimed), MAX_PARALLEL)) as pool,
    ):
        return list(pool.map(send, claimed))
