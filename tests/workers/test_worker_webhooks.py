"""Webhook deliveries on a real farm: beat sends ``edgefarm.deliver_webhooks`` to the
maintenance worker every ``EDGEFARM_WEBHOOK_INTERVAL_S``; a receiver that first answers 500
gets the notification again after the backoff, once it answers 200, and then no more."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from harness.db import Delivery, DeliveryStatus
from harness.farm.suites import create_suite
from harness.farm.webhooks import create_webhook
from harness.regression.suites import SuiteFields, SuiteSpec
from harness.regression.webhooks import notify

from workerfarm import Farm, WorkerProcess, wait_for

SECRET = "worker-test-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """An HTTP receiver that answers 500 to the first request and 200 after."""
    state: dict[str, Any] = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"].append((dict(self.headers), body))
            self.send_response(500 if len(state["requests"]) == 1 else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def test_beat_delivers_through_the_maintenance_worker(
    farm: Farm, start_worker: Callable[..., WorkerProcess], receiver: dict[str, Any]
) -> None:
    with farm.sessions() as session:
        fields = SuiteFields(
            name=f"hooks-{uuid.uuid4().hex[:8]}",
            spec=SuiteSpec(models=["m"], backends=["tvm-cpu"]),
        )
        suite = create_suite(session, fields, created_by="tests")
        hook = create_webhook(session, suite, url=receiver["url"], secret=SECRET)
        notify(session, suite, event_key="alerts:1", payload={"event": "alerts", "n": 1})
        session.commit()
        hook_id = hook.id

    start_worker(
        farm,
        "--no-compile",
        "--beat",
        EDGEFARM_WEBHOOK_INTERVAL_S="1",
        EDGEFARM_WEBHOOK_BACKOFF_S="1",
    )

    def delivered() -> Delivery | None:
        with farm.sessions() as session:
            row = session.scalar(select(Delivery).where(Delivery.webhook_id == hook_id))
            return row if row is not None and row.status == DeliveryStatus.delivered else None

    row = wait_for("the delivery", delivered, timeout_s=60)
    assert row.attempts == 2 and row.response_status == 200
    time.sleep(3)  # a few more rounds: nothing is sent again
    assert len(receiver["requests"]) == 2
    for headers, body in receiver["requests"]:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Edgefarm-Signature"] == expected
        assert headers["X-Edgefarm-Delivery"] == str(row.id)
