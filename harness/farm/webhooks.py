"""A suite's webhooks and their delivery logs. Functions take ``session`` and never commit.

A webhook's secret keys the HMAC signature of every request to it; when none is given one is
made here, and only the answer to its creation shows it. Sending is
:mod:`harness.regression.webhooks`.
"""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.db import Delivery, DeliveryStatus, Suite, Webhook
from harness.farm import InvalidRequest, NotFound
from harness.farm.queries import DEFAULT_LIMIT, Page, paginate
from harness.regression.webhooks import check_url

MAX_WEBHOOKS = 20  # per suite
SECRET_MIN = 16
SECRET_MAX = 128  # webhooks.secret


def check_secret(secret: str) -> str:
    """``secret`` if it can key signatures (16 to 128 printable ASCII characters, no spaces);
    ValueError otherwise."""
    if not SECRET_MIN <= len(secret) <= SECRET_MAX:
        raise ValueError(f"a secret is {SECRET_MIN} to {SECRET_MAX} characters")
    if not all(33 <= ord(c) <= 126 for c in secret):
        raise ValueError("a secret is printable ASCII without spaces")
    return secret


def create_webhook(
    session: Session, suite: Suite, *, url: str, secret: str | None = None
) -> Webhook:
    """A new webhook of ``suite`` (its secret made here when none is given); InvalidRequest
    naming ``url`` or ``secret``, or when the suite has :data:`MAX_WEBHOOKS` already."""
    try:
        check_url(url)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field=("url",)) from None
    if secret is None:
        secret = secrets.token_hex(32)
    try:
        check_secret(secret)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field=("secret",)) from None
    count = session.scalar(select(func.count()).where(Webhook.suite_id == suite.id)) or 0
    if count >= MAX_WEBHOOKS:
        raise InvalidRequest(
            f"suite {suite.name} has {count} webhooks, the most it may have", field=("url",)
        )
    webhook = Webhook(suite_id=suite.id, url=url, secret=secret, enabled=True)
    session.add(webhook)
    session.flush()
    return webhook


def list_webhooks(session: Session, suite: Suite) -> list[Webhook]:
    return list(
        session.scalars(select(Webhook).where(Webhook.suite_id == suite.id).order_by(Webhook.id))
    )


def get_webhook(session: Session, webhook_id: int) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFound("webhook", "id", webhook_id)
    return webhook


def delete_webhook(session: Session, webhook: Webhook) -> None:
    """The webhook goes, and its delivery log with it (pending deliveries are not sent)."""
    session.delete(webhook)
    session.flush()


def list_deliveries(
    session: Session,
    webhook: Webhook,
    *,
    status: DeliveryStatus | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Page[Delivery]:
    """``webhook``'s deliveries, newest first."""
    query = (
        select(Delivery)
        .where(Delivery.webhook_id == webhook.id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
    )
    if status is not None:
        query = query.where(Delivery.status == status)
    return paginate(session, query, limit=limit, offset=offset)
