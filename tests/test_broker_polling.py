"""The embedded farm's broker (kombu's SQL transport) is polled often enough that a job's
hops do not each wait a second; a farm on Redis (which pushes, never polls) is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import json\n"
    "from kombu.transport import sqlalchemy\n"
    "from workers.celery_app import SQL_POLLING_INTERVAL_S, app\n"
    "print(json.dumps([app.conf.broker_url, sqlalchemy.Transport.polling_interval,"
    " SQL_POLLING_INTERVAL_S]))\n"
)


@pytest.mark.parametrize("broker", ["embedded", "redis://127.0.0.1:6379/9"])
def test_the_sql_broker_is_polled_every_quarter_second(tmp_path: Path, broker: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFARM_")}
    env.update({"EDGEFARM_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    if broker != "embedded":
        env["EDGEFARM_BROKER_URL"] = broker
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    url, interval, wanted = json.loads(proc.stdout.strip().splitlines()[-1])
    if broker == "embedded":
        assert url.startswith("sqla+sqlite:///") and url.endswith("broker.db")
        assert interval == wanted <= 0.25
    else:
        assert url == broker and interval == 1.0  # kombu's default, untouched
