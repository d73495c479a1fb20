"""The workers' own knobs, from ``EDGEFARM_*`` variables like the harness's Settings.

Kept here rather than in ``harness/config.py`` because only the Celery side reads them; the
farm-wide ones (``lease_timeout_s``, ``max_run_attempts``, timeouts of a measurement) stay in
:class:`harness.config.Settings`.
"""

from __future__ import annotations

import math
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from harness.config import Settings, get_settings


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFARM_", extra="ignore")

    reap_interval_s: float = Field(default=30.0, gt=0, description="how often beat sends reap")
    queued_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="a queued run nobody has touched for this long, on an idle device, is "
        "taken to have lost its message and is sent again",
    )
    busy_retry_s: float = Field(default=5.0, gt=0, description="wait when the device is leased")
    busy_max_wait_s: float = Field(
        default=6 * 3600.0, gt=0, description="give a run's message back to the reaper after"
    )
    retry_backoff_max_s: float = Field(default=120.0, gt=0)
    heartbeat_s: float | None = Field(
        default=None, gt=0, description="default: a quarter of the lease timeout, at most 10 s"
    )
    visibility_timeout_s: float | None = Field(
        default=None, gt=0, description="Redis redelivery; default: well above the longest task"
    )

    def heartbeat_interval_s(self, settings: Settings | None = None) -> float:
        settings = settings or get_settings()
        return self.heartbeat_s or min(10.0, settings.lease_timeout_s / 4.0)

    def busy_max_retries(self) -> int:
        return max(1, math.ceil(self.busy_max_wait_s / self.busy_retry_s))

    def visibility_timeout(self, settings: Settings | None = None) -> float:
        """Above the longest task: a job's compiles (several artifacts of up to
        ``compile_timeout_s`` each) or a run (cool-down, protocol, run timeout)."""
        if self.visibility_timeout_s:
            return self.visibility_timeout_s
        settings = settings or get_settings()
        longest_run = settings.cooldown_max_wait_s + settings.max_seconds + settings.run_timeout_s
        return max(4 * 3600.0, 4 * settings.compile_timeout_s, 4 * longest_run)


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
