"""The farm's Celery tasks, by area: jobs (start, finish), runs, maintenance (the reaper)."""

from typing import Any

from harness.config import get_settings
from harness.errors import InfrastructureError


def retry_on_infrastructure(**extra: Any) -> dict[str, Any]:
    """The task options every farm task shares: acknowledged late (a killed worker's message
    is redelivered), retried with backoff on InfrastructureError only — never on JobError."""
    return {
        "acks_late": True,
        "autoretry_for": (InfrastructureError,),
        "retry_backoff": True,
        "retry_backoff_max": int(get_settings().retry_backoff_max_s),
        **extra,
    }
