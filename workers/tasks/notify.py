"""Webhook deliveries (``edgefarm.deliver_webhooks``, sent by beat every
``webhook_interval_s``): whatever is due is sent, from the database's state alone
(:func:`harness.regression.webhooks.deliver_due`). Deliveries are claimed one by one, so two
of these running at once (a slow round and the next tick) never send the same one twice.
"""

from __future__ import annotations

import logging

from harness.config import get_settings
from harness.regression.webhooks import deliver_due
from workers.celery_app import task
from workers.db import session_factory

log = logging.getLogger(__name__)


@task(name="edgefarm.deliver_webhooks", acks_late=True)
def deliver_webhooks() -> None:
    """Send the due webhook deliveries. Periodic: a round that fails is not retried, the next
    one sends what is left."""
    attempts = deliver_due(session_factory(), settings=get_settings())
    if attempts:
        delivered = sum(1 for a in attempts if a.error is None)
        log.info("webhooks: %d of %d delivery attempt(s) succeeded", delivered, len(attempts))
