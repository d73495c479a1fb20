"""The farm's Celery tasks, by area: jobs (start, finish), runs, maintenance (the reaper)."""

from typing import TypedDict

from harness.config import get_settings
from harness.errors import InfrastructureError


class RetryOptions(TypedDict):
    """Celery task options (``@task(**retry_on_infrastructure())``)."""

    acks_late: bool
    autoretry_for: tuple[type[Exception], ...]
    retry_backoff: bool
    retry_backoff_max: int


def retry_on_infrastructure() -> RetryOptions:
    """The task options every farm task shares: acknowledged late (a killed worker's message
    is redelivered), retried with backoff on InfrastructureError only — never on JobError."""
    return {
        "acks_late": True,
        "autoretry_for": (InfrastructureError,),
        "retry_backoff": True,
        "retry_backoff_max": int(get_settings().retry_backoff_max_s),
    }
