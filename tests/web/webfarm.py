"""What the web tests share: the farm they read, and the names in it."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.config import Settings
from tests.workers.workerfarm import Farm

ROOT = Path(__file__).resolve().parents[2]
XSS = "<script>alert(1)</script>"
BACKENDS = ("tvm-cpu", "tvm-nnapi")
JOBS = 3
COST_MODEL = "web-cost-mlp"
CANARY_RUNS = 2  # device canary jobs on the first phone
CHROMIUM = "/usr/bin/chromium"
# Screenshots of every page: a test artifact (CI keeps the directory).
ARTIFACTS = Path(os.environ.get("EDGEFARM_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "web"
# The README's picture of the history page, made by the tests when asked to (a test run
# leaves the checkout as it found it): EDGEFARM_UPDATE_README_IMAGES=1.
README_SCREENSHOT = ROOT / "docs" / "img" / "history.png"
UPDATE_README_IMAGES = os.environ.get("EDGEFARM_UPDATE_README_IMAGES") == "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebFarm:
    url: str
    farm: Farm
    settings: Settings
    model_id: int
    devices: list[int]
    jobs: list[int]
    cost_job: int  # tvm-nnapi with partition "cost" on the first phone (its own model)
    canary_jobs: list[int]  # the device canary on the first phone
    alert_id: int
    suite: str
    token: str
    token_name: str

    def api(self, path: str) -> Any:
        """A GET of the farm's JSON API, as its JSON."""
        response = httpx.get(f"{self.url}/api/v1{path}", timeout=30)
        response.raise_for_status()
        return response.json()
