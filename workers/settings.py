"""Values the workers derive from :class:`harness.config.Settings`."""

from __future__ import annotations

import math

from harness.config import Settings, get_settings


def heartbeat_interval_s(settings: Settings | None = None) -> float:
    settings = settings or get_settings()
    # Several beats fit in the lease timeout: one or two lost beats (a busy database) never
    # make a live run look dead.
    return settings.heartbeat_s or min(5.0, settings.lease_timeout_s / 6.0)


def busy_max_retries(settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    return max(1, math.ceil(settings.busy_max_wait_s / settings.busy_retry_s))


def visibility_timeout(settings: Settings | None = None) -> float:
    """Above the longest task: a job's compiles (several artifacts of up to
    ``compile_timeout_s`` each) or a run (cool-down, protocol, run timeout)."""
    settings = settings or get_settings()
    if settings.visibility_timeout_s:
        return settings.visibility_timeout_s
    longest_run = settings.cooldown_max_wait_s + settings.max_seconds + settings.run_timeout_s
    return max(4 * 3600.0, 4 * settings.compile_timeout_s, 4 * longest_run)
