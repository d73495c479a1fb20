"""Webhooks end to end against real HTTP receivers (threads on free ports) and the real
PostgreSQL (a database of this module's own: deliveries commit from several threads).

A receiver that is down and then comes up gets the delivery once; one that answers 500 is
retried with backoff, every attempt logged, and given up after the last; the signature
verifies with the secret; a receiver that hangs delays nobody else; two delivery rounds at
once never send the same delivery twice. Time is passed in (``now``) where backoff matters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from harness.config import Settings
from harness.db import Delivery, DeliveryStatus, Suite, Webhook, make_engine, make_session_factory
from harness.farm.suites import create_suite
from harness.farm.webhooks import create_webhook
from harness.regression.suites import SuiteFields, SuiteSpec
from harness.regression.webhooks import deliver_due, notify

from apidata import BROKER_URL, PG_ADMIN, alembic_config, uid

# Later than any delivery queued here (they are due at once): the rounds' clock.
T0 = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
SETTINGS = Settings(
    webhook_timeout_s=2.0, webhook_max_attempts=3, webhook_backoff_s=10.0, api_token=None
)
TOKEN = "webhook-test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Receiver:
    """An HTTP server in a thread that records every request and answers ``status`` after
    ``delay_s``."""

    def __init__(self, port: int | None = None, *, status: int = 200, delay_s: float = 0.0):
        self.port = port or free_port()
        self.status = status
        self.delay_s = delay_s
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body, time.monotonic()))
                time.sleep(receiver.delay_s)
                try:
                    self.send_response(receiver.status)
                    self.end_headers()
                    self.wfile.write(b"boom" if receiver.status >= 400 else b"ok")
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    name = f"edgefarm_webhooks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()


def new_suite(session: Session) -> Suite:
    fields = SuiteFields(name=f"hooks-{uid()}", spec=SuiteSpec(models=["m"], backends=["tvm-cpu"]))
    return create_suite(session, fields, created_by="tests")


def queue(
    factory: sessionmaker[Session], urls: list[str], *, events: int = 1, secret: str | None = None
) -> tuple[int, list[Webhook]]:
    """A suite with a webhook per URL and ``events`` notifications queued for each."""
    with factory() as session:
        suite = new_suite(session)
        hooks = [create_webhook(session, suite, url=url, secret=secret) for url in urls]
        for i in range(events):
            notify(
                session,
                suite,
                event_key=f"alerts:{i}",
                payload={"event": "alerts", "suite": suite.name, "n": i, "text": "größer"},
            )
        session.commit()
        for hook in hooks:
            session.expunge(hook)
        return suite.id, hooks


def deliveries(factory: sessionmaker[Session], webhook_id: int) -> list[Delivery]:
    with factory() as session:
        rows = list(
            session.scalars(
                select(Delivery).where(Delivery.webhook_id == webhook_id).order_by(Delivery.id)
            )
        )
        session.expunge_all()
        return rows


def test_the_signature_verifies_and_a_repeated_event_is_sent_once(
    factory: sessionmaker[Session], receivers: list[Receiver]
) -> None:
    receiver = Receiver().start()
    receivers.append(receiver)
    secret = "s3cret-of-the-receiver-" + uid()
    _, [hook] = queue(factory, [receiver.url], secret=secret)

    [attempt] = deliver_due(factory, now=T0, settings=SETTINGS)
    assert attempt.status == DeliveryStatus.delivered and attempt.error is None
    [(headers, body, _)] = receiver.requests
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Edgefarm-Signature"], expected)
    assert headers["X-Edgefarm-Event"] == "alerts"
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["n"] == 0 and payload["text"] == "größer"
    [row] = deliveries(factory, hook.id)
    assert headers["X-Edgefarm-Delivery"] == str(row.id)
    assert (row.status, row.attempts, row.response_status, row.error) == (
        DeliveryStatus.delivered, 1, 200, None,
    )  # fmt: skip
    assert row.delivered_at == T0

    # The same event again queues nothing; nothing is sent twice.
    with factory() as session:
        suite = session.get_one(Suite, session.get_one(Webhook, hook.id).suite_id)
        again = notify(session, suite, event_key="alerts:0", payload={"event": "alerts"})
        session.commit()
    assert again == []
    assert deliver_due(factory, now=T0 + timedelta(days=1), settings=SETTINGS) == []
    assert len(receiver.requests) == 1


def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_up(
    factory: sessionmaker[Session], receivers: list[Receiver]
) -> None:
    port = free_port()  # nothing listens there yet
    _, [hook] = queue(factory, [f"http://127.0.0.1:{port}/hook"])

    [attempt] = deliver_due(factory, now=T0, settings=SETTINGS)
    assert attempt.status == DeliveryStatus.pending and attempt.response_status is None
    assert attempt.error is not None and "Connect" in attempt.error
    [row] = deliveries(factory, hook.id)
    assert row.attempts == 1 and row.next_attempt_at == T0 + timedelta(seconds=10)
    assert deliver_due(factory, now=T0 + timedelta(seconds=5), settings=SETTINGS) == []

    receiver = Receiver(port).start()
    receivers.append(receiver)
    [attempt] = deliver_due(factory, now=T0 + timedelta(seconds=11), settings=SETTINGS)
    assert attempt.status == DeliveryStatus.delivered
    assert deliver_due(factory, now=T0 + timedelta(hours=5), settings=SETTINGS) == []
    assert len(receiver.requests) == 1
    [row] = deliveries(factory, hook.id)
    assert (row.status, row.attempts, row.response_status) == (DeliveryStatus.delivered, 2, 200)
    assert row.error is None


def test_a_500_is_retried_with_backoff_logged_and_failed_after_the_last_attempt(
    factory: sessionmaker[Session], receivers: list[Receiver], database_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(status=500).start()
    receivers.append(receiver)
    _, [hook] = queue(factory, [receiver.url])

    clock = T0
    waits = []
    for attempt_number in (1, 2, 3):
        [attempt] = deliver_due(factory, now=clock, settings=SETTINGS)
        assert attempt.attempts == attempt_number
        assert attempt.response_status == 500 and attempt.error == "HTTP 500: boom"
        [row] = deliveries(factory, hook.id)
        if attempt_number < 3:
            assert row.status == DeliveryStatus.pending
            assert row.next_attempt_at is not None
            waits.append((row.next_attempt_at - clock).total_seconds())
            # Not before its time.
            early = row.next_attempt_at - timedelta(seconds=1)
            assert deliver_due(factory, now=early, settings=SETTINGS) == []
            clock = row.next_attempt_at
    assert waits == [10.0, 20.0]  # 10 s, then twice that
    assert (row.status, row.attempts, row.next_attempt_at) == (DeliveryStatus.failed, 3, None)
    assert deliver_due(factory, now=clock + timedelta(days=1), settings=SETTINGS) == []
    assert len(receiver.requests) == 3

    # The delivery log, as the API shows it.
    settings = SETTINGS.model_copy(
        update={
            "database_url": database_url,
            "broker_url": BROKER_URL,
            "home": tmp_path,
            "api_token": TOKEN,
        }
    )
    with TestClient(create_app(settings)) as client:
        deliveries_url = f"/api/v1/webhooks/{hook.id}/deliveries"
        assert client.get(deliveries_url).status_code == 401  # a token, even for reading
        log = client.get(deliveries_url, headers={"Authorization": f"Bearer {TOKEN}"}).json()
        [entry] = log["data"]
        assert entry["status"] == "failed" and entry["attempts"] == 3
        assert entry["response_status"] == 500 and entry["error"] == "HTTP 500: boom"
        assert entry["event_key"] == "alerts:0" and entry["payload"]["n"] == 0
        failed = client.get(
            deliveries_url,
            params={"status": "failed"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert failed.json()["count"] == 1
        hooks = client.get(
            f"/api/v1/suites/{hook.suite_id}/webhooks",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        assert [h["url"] for h in hooks["data"]] == [receiver.url]
        assert "secret" not in hooks["data"][0]


def test_a_receiver_that_hangs_does_not_hold_up_another(
    factory: sessionmaker[Session], receivers: list[Receiver]
) -> None:
    slow = Receiver(delay_s=6.0).start()  # beyond the 2 s timeout
    fast = Receiver().start()
    receivers += [slow, fast]
    _, [slow_hook, fast_hook] = queue(factory, [slow.url, fast.url])

    started = time.monotonic()
    done: list[Any] = []
    round_ = threading.Thread(
        target=lambda: done.append(deliver_due(factory, now=T0, settings=SETTINGS))
    )
    round_.start()
    # The fast receiver's delivery is recorded while the slow one is still waited for.
    while deliveries(factory, fast_hook.id)[0].status != DeliveryStatus.delivered:
        assert time.monotonic() - started < 1.5, "the fast receiver waited for the slow one"
        time.sleep(0.05)
    assert round_.is_alive()
    round_.join(timeout=30)
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 5.0  # the slow one's timeout, not its 6 s
    [slow_row] = deliveries(factory, slow_hook.id)
    assert slow_row.status == DeliveryStatus.pending and slow_row.attempts == 1
    assert slow_row.error is not None and slow_row.error.startswith("timed out")
    assert len(fast.requests) == 1 and fast.requests[0][2] - started < 1.0


def test_two_rounds_at_once_never_send_a_delivery_twice(
    factory: sessionmaker[Session], receivers: list[Receiver]
) -> None:
    receiver = Receiver(delay_s=0.2).start()
    receivers.append(receiver)
    _, [hook] = queue(factory, [receiver.url], events=12)

    results: list[Any] = []
    rounds = [
        threading.Thread(
            target=lambda: results.extend(deliver_due(factory, now=T0, settings=SETTINGS))
        )
        for _ in range(3)
    ]
    for r in rounds:
        r.start()
    for r in rounds:
        r.join(timeout=60)
    sent = [headers["X-Edgefarm-Delivery"] for headers, _, _ in receiver.requests]
    assert len(sent) == len(set(sent)) == 12
    assert sorted(a.delivery_id for a in results) == sorted(int(s) for s in sent)
    assert all(row.status == DeliveryStatus.delivered for row in deliveries(factory, hook.id))


# The API's side: adding, listing, removing webhooks (in the tests' rolled-back transaction).


def test_add_list_remove_through_the_api(
    client: TestClient, auth: dict[str, str], session: Session
) -> None:
    suite = new_suite(session)
    session.commit()
    url = f"/api/v1/suites/{suite.name}/webhooks"
    made = client.post(url, json={"url": "https://hooks.example.org/edgefarm"}, headers=auth)
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    assert len(secret) == 64  # made for it, shown this once
    given = client.post(
        url, json={"url": "http://10.0.0.5:8080/h", "secret": "x" * 16}, headers=auth
    ).json()
    assert given["secret"] == "x" * 16
    assert client.get(url).status_code == 401  # webhook URLs may be credentials
    listed = client.get(url, headers=auth).json()
    assert [h["url"] for h in listed["data"]] == [
        "https://hooks.example.org/edgefarm",
        "http://10.0.0.5:8080/h",
    ]
    assert listed["count"] == 2 and all("secret" not in h for h in listed["data"])
    assert secret not in json.dumps(listed)

    assert client.delete(f"/api/v1/webhooks/{given['id']}").status_code == 401
    assert client.delete(f"/api/v1/webhooks/{given['id']}", headers=auth).status_code == 204
    assert [h["id"] for h in client.get(url, headers=auth).json()["data"]] == [made.json()["id"]]
    assert client.delete(f"/api/v1/webhooks/{given['id']}", headers=auth).status_code == 404
    gone = client.get(f"/api/v1/webhooks/{given['id']}/deliveries", headers=auth)
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.org/h"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "example.org/hook"}, "url"),
        ({"url": "http://exa mple.org/"}, "url"),
        ({"url": "http://example.org:99999/"}, "url"),
        ({"url": "http://example.org/\x00"}, "url"),
        ({"url": "https://example.org/" + "a" * 2100}, "url"),
        ({"url": "http://example.org/", "secret": "short"}, "secret"),
        ({"url": "http://example.org/", "secret": "with spaces in the secret"}, "secret"),
        ({"url": "http://example.org/", "events": ["all"]}, "events"),
    ],
)
def test_bad_webhooks_are_422_naming_the_field(
    client: TestClient, auth: dict[str, str], session: Session, body: dict[str, Any], field: str
) -> None:
    suite = new_suite(session)
    session.commit()
    url = f"/api/v1/suites/{suite.name}/webhooks"
    response = client.post(url, json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert client.get(url, headers=auth).json()["count"] == 0
